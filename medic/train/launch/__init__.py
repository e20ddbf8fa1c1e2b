"""Starting a run, without torch: the roles, the checks before any worker starts, torchrun and SLURM."""
