"""medic's recording inside other trainers: ``medic.integrations.lightning.MedicLogger`` (a
Lightning logger) and ``medic.integrations.monai.MedicHandler`` (a MONAI/Ignite handler). Each
writes the same epoch CSV, batch CSV and sidecar as ``medic train``; they need the optional extras
``medic[lightning]`` and ``medic[monai-ignite]``. Importing this package imports neither."""
