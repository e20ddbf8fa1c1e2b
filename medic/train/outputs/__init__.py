"""What a run leaves: checkpoints, top-k, case tables, pictures, best masks."""
