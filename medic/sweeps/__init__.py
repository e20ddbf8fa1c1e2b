"""Sweeps: many trainings of the training notebook, each a papermill batch run, driven by an
Optuna study (grid or search, pruning, durable storage), on several slots, resumable.

    medic sweep --grid lr=0.001,0.003 --slots 2 --epochs 20      # from a shell
    s = medic.sweep(grid={"lr": [0.001, 0.003]}, fixed={"epochs": 20}, slots=2)   # from a notebook
    medic.attach_sweep(s.sweep_id).summary()                      # from another kernel
    medic.sweep_summary(s.sweep_id)                               # one row per trial

Parts: ``spec`` (what a sweep is, checked), ``study`` (Optuna), ``trial`` (one trial's processes),
``driver`` (the loop), ``run`` (start or resume a driver), ``results`` (table and figure),
``handle`` (a sweep seen from a notebook: start, attach, follow, stop), ``slurm_trial`` (a trial
as a SLURM job, ``--launcher slurm``, and the driver as one, ``--driver_on_slurm``).
"""
