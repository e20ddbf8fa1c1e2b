"""``medic export``: runs copied into TensorBoard event files and MLflow runs, from the CSVs.

``source`` reads a run for export (rows, digests, options); ``tensorboard`` and ``mlflow`` write
the targets. Each target imports its own package, so medic itself needs neither.
"""
