"""``medic sweep``: many trainings from one notebook, as papermill batch runs, with Optuna.

    medic sweep --grid lr=0.001,0.003 --grid batch_size=2,4 --slots 2 --epochs 20
    medic sweep --trials 12 --space "lr=loguniform(1e-4,1e-2)" --space "batch_size=choice(2,4,8)"
    medic sweep --resume SWEEP_ID
"""

from __future__ import annotations

from dataclasses import fields

from medic.cli import ArgParser
from medic.errors import MedicError

EPILOG = ("Every other flag is a 'medic train' option fixed for all trials (e.g. --epochs 20 "
          "--val_fraction 0.2 --monitor Val_Dice). Kept in analysis/sweeps/SWEEP_ID/: the executed "
          "notebook of each trial, summary.csv, summary.png and the study (study.db).")


def build_parser() -> ArgParser:
    p = ArgParser(prog="medic sweep", allow_abbrev=False, epilog=EPILOG,
                  description="Run many trainings of notebooks/01_train.ipynb with papermill: a grid "
                              "or an Optuna search, on several slots, resumable, with pruning.")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a grid axis (repeat for more); every combination is one trial")
    p.add_argument("--space", action="append", default=[], metavar="NAME=DIST",
                   help="a distribution: uniform(a,b), loguniform(a,b), int(a,b), logint(a,b), choice(v1,v2)")
    p.add_argument("--trials", type=int, default=0, help="trials of the whole sweep (with --space)")
    p.add_argument("--slots", type=int, default=1, help="trials at once on this machine (default: 1)")
    p.add_argument("--prune", default="none", help="none, median, percentile, hyperband or successivehalving")
    p.add_argument("--prune_startup", "--prune-startup", type=int, default=2,
                   help="trials that finish before pruning starts (default: 2)")
    p.add_argument("--sampler", default="tpe", help="tpe (default) or random, for --space")
    p.add_argument("--sampler_seed", "--sampler-seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--notebook", default="", metavar="PATH",
                   help="the training notebook (default: the project's notebooks/01_train.ipynb)")
    p.add_argument("--storage", default="", metavar="URL",
                   help="a database URL shared by drivers on several machines "
                        "(default: SQLite in analysis/sweeps/SWEEP_ID/)")
    p.add_argument("--resume", default="", metavar="SWEEP_ID", help="continue (or join) a sweep")
    p.add_argument("--root", default=None, metavar="DIR", help="project root (default: the working directory)")
    return p


def fixed_options(rest: list[str]) -> dict:
    """The training flags typed after the sweep's own, as {name: value} (only what differs from
    ``medic train``'s defaults)."""
    from medic.config import TrainConfig, parse_args
    if not rest:
        return {}
    config, torchrun_flags = parse_args(rest, prog="medic sweep")
    if torchrun_flags:
        raise MedicError(f"{torchrun_flags[0]} is a multi-node flag; a sweep runs its trials on this machine")
    defaults = TrainConfig()
    return {f.name: getattr(config, f.name) for f in fields(TrainConfig)
            if getattr(config, f.name) != getattr(defaults, f.name)}


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path
    from medic.sweeps.run import new_spec, start
    args, rest = build_parser().parse_known_args(argv)
    root = Path(args.root or ".").resolve()
    if not root.is_dir():
        raise MedicError(f"project root {root} is not a folder")
    if args.resume:
        given = [f"--{n}" for n in ("grid", "space", "trials") if getattr(args, n)] + (["training flags"] if rest else [])
        if given:
            raise MedicError(f"--resume continues a sweep as planned; leave out {', '.join(given)}")
        return start(root, None, args.slots, resume=args.resume, storage=args.storage)
    spec = new_spec(root, grid=args.grid, space=args.space, trials=args.trials, fixed=fixed_options(rest),
                    prune=args.prune, prune_startup=args.prune_startup, sampler=args.sampler,
                    seed=args.sampler_seed, notebook=args.notebook, storage=args.storage)
    return start(root, spec, args.slots, storage=args.storage)
