"""``medic sweep``: many trainings from one notebook, as papermill batch runs, with Optuna.

    medic sweep --grid lr=0.001,0.003 --grid batch_size=2,4 --slots 2 --epochs 20
    medic sweep --trials 12 --space "lr=loguniform(1e-4,1e-2)" --space "batch_size=choice(2,4,8)"
    medic sweep --resume SWEEP_ID
    medic sweep --grid lr=0.001,0.003 --slots 2 --launcher slurm --gpus_per_node 1 --time 2:00:00
"""

from __future__ import annotations

from dataclasses import fields

from medic.cli import ArgParser
from medic.errors import MedicError

EPILOG = ("Every other flag is a 'medic train' option fixed for all trials (e.g. --epochs 20 "
          "--val_fraction 0.2 --monitor Val_Dice). With --launcher slurm each trial is a SLURM job that "
          "runs its notebook on a compute node; --slots caps the trial jobs queued or running. Kept in "
          "analysis/sweeps/SWEEP_ID/: the executed notebook of each trial, summary.csv, summary.png and "
          "the study (study.db, or study.journal on a cluster's shared file system).")


def build_parser() -> ArgParser:
    p = ArgParser(prog="medic sweep", allow_abbrev=False, epilog=EPILOG,
                  description="Run many trainings of notebooks/01_train.ipynb with papermill: a grid "
                              "or an Optuna search, on several slots, resumable, with pruning.")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a grid axis (repeat for more); every combination is one trial")
    p.add_argument("--space", action="append", default=[], metavar="NAME=DIST",
                   help="a distribution: uniform(a,b), loguniform(a,b), int(a,b), logint(a,b), choice(v1,v2)")
    p.add_argument("--trials", type=int, default=0, help="trials of the whole sweep (with --space)")
    p.add_argument("--slots", type=int, default=1,
                   help="trials at once on this machine; with --launcher slurm: trial jobs queued or running (default: 1)")
    p.add_argument("--prune", default="none", help="none, median, percentile, hyperband or successivehalving")
    p.add_argument("--prune_startup", "--prune-startup", type=int, default=2,
                   help="trials that finish before pruning starts (default: 2)")
    p.add_argument("--sampler", default="tpe", help="tpe (default) or random, for --space")
    p.add_argument("--sampler_seed", "--sampler-seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--notebook", default="", metavar="PATH",
                   help="the training notebook (default: the project's notebooks/01_train.ipynb)")
    p.add_argument("--storage", default="", metavar="URL",
                   help="a database URL shared by drivers on several machines, or journal://PATH (Optuna's "
                        "journal file) (default in analysis/sweeps/SWEEP_ID/: study.journal with --launcher "
                        "slurm or on a network file system, else study.db, SQLite)")
    p.add_argument("--driver_on_slurm", "--driver-on-slurm", action="store_true",
                   help="with --launcher slurm: submit the driver itself as a small job (1 CPU, no GPU) and return")
    p.add_argument("--resume", default="", metavar="SWEEP_ID", help="continue (or join) a sweep")
    p.add_argument("--root", default=None, metavar="DIR", help="project root (default: the working directory)")
    from medic.slurm.options import add_slurm_flags
    add_slurm_flags(p)
    return p


def slurm_values(args, argv: list[str]) -> dict | None:
    """The SLURM options typed (checked as ``medic train`` checks them), or None when none was."""
    from medic.slurm.options import SlurmOptions
    names = {f.name for f in fields(SlurmOptions)}
    typed = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")} & names
    if args.dry_run:
        raise MedicError("--dry_run is an option of medic train; a sweep's trial scripts are kept in log/slurm_<run id>.sh")
    if args.resume:  # what was typed changes the stored request (checked once merged with it)
        return {n: getattr(args, n) for n in typed} if typed else None
    options = SlurmOptions(**{n: getattr(args, n) for n in names}).validate(typed)
    return options.to_dict() if typed else None


def fixed_options(rest: list[str]) -> dict:
    """The training flags typed after the sweep's own, as {name: value} (only what differs from
    ``medic train``'s defaults)."""
    from medic.config import TrainConfig, parse_args
    if not rest:
        return {}
    try:
        config, torchrun_flags = parse_args(rest, prog="medic sweep")
    except MedicError as err:  # a mistyped sweep flag lands here too: suggest from both flag sets
        flag = str(err).partition("unrecognized argument '")[2].partition("'")[0]
        if not flag:
            raise
        from medic.config import build_parser as train_parser
        from medic.errors import did_you_mean
        known = {**train_parser("medic sweep")._option_string_actions, **build_parser()._option_string_actions}
        hint = did_you_mean(flag, known)
        raise MedicError(f"unrecognized argument {flag!r}" + (f"; {hint}" if hint else "")) from None
    if torchrun_flags:
        raise MedicError(f"{torchrun_flags[0]} is a multi-node flag; a sweep runs its trials on this machine")
    defaults = TrainConfig()
    return {f.name: getattr(config, f.name) for f in fields(TrainConfig)
            if getattr(config, f.name) != getattr(defaults, f.name)}


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path
    from medic.sweeps.run import new_spec, start
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    root = Path(args.root or ".").resolve()
    if not root.is_dir():
        raise MedicError(f"project root {root} is not a folder")
    slurm = slurm_values(args, argv)
    if args.driver_on_slurm and (slurm or {}).get("launcher") != "slurm":
        raise MedicError("--driver_on_slurm submits the driver of a --launcher slurm sweep; add --launcher slurm")
    if args.resume:
        given = [f"--{n}" for n in ("grid", "space", "trials") if getattr(args, n)] + (["training flags"] if rest else [])
        if given:
            raise MedicError(f"--resume continues a sweep as planned; leave out {', '.join(given)}")
        if args.driver_on_slurm:
            raise MedicError("--driver_on_slurm starts a new sweep's driver; a resumed one runs here")
        return start(root, None, args.slots, resume=args.resume, storage=args.storage, slurm=slurm)
    spec = new_spec(root, grid=args.grid, space=args.space, trials=args.trials, fixed=fixed_options(rest),
                    prune=args.prune, prune_startup=args.prune_startup, sampler=args.sampler,
                    seed=args.sampler_seed, notebook=args.notebook, storage=args.storage, slurm=slurm)
    if args.driver_on_slurm:
        return driver_on_slurm(root, spec, args.slots, args.storage)
    return start(root, spec, args.slots, storage=args.storage)


def driver_on_slurm(root, spec, slots: int, storage: str) -> int:
    """Make the sweep here, submit its driver as a job, print how to follow it."""
    import shutil
    from medic.sweeps.run import create, slurm_options
    from medic.sweeps.slurm_trial import submit_driver
    from medic.sweeps.spec import sweep_dir
    url = create(root, spec, slots, storage)
    try:
        job_id = submit_driver(root, spec.sweep_id, slots, storage, slurm_options(spec))
    except MedicError:
        shutil.rmtree(sweep_dir(root, spec.sweep_id), ignore_errors=True)  # nothing submitted: nothing kept
        raise
    log = sweep_dir(root, spec.sweep_id) / "driver.log"
    print(f"sweep {spec.sweep_id}: {spec.trials} trial(s), up to {slots} SLURM job(s) at once, storage {url}")
    print(f"its driver is SLURM job {job_id} (1 CPU). Follow it: tail -f {log}, or in a notebook "
          f"medic.attach_sweep({spec.sweep_id!r}).follow(); stop it: medic stop {spec.sweep_id}")
    return 0
