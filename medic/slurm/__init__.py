"""Training on a SLURM cluster: ``medic train --launcher slurm`` submits a batch job that runs
the same trainer on the allocated nodes (``options`` the request, ``script`` the batch script,
``submit`` the claim and ``sbatch``, ``batch`` what the script asks of medic as the job starts,
is warned and ends). No torch here: submitting and following a job happen on a login node."""
