"""``medic export``: a run's CSVs into TensorBoard event files and/or an MLflow tracking store.

    medic export --tensorboard runs/tb                    # the newest run, into runs/tb/<run id>/
    medic export --all --mlflow file:./mlruns             # every run, one MLflow run each
    medic export --run 20251106_103015 --mlflow http://mlflow.lab:5000 --checkpoint best
    medic export --follow --tensorboard runs/tb           # keep exporting until the run ends

The CSVs stay the source of truth; an export can be repeated at any time (after a resume too) and
adds only what is new. Needs the ``export`` extra: ``pip install 'medic[export]'``.
"""

from __future__ import annotations

import importlib
import time

from medic.cli import ArgParser, add_root_option
from medic.errors import MedicError
from medic.store.catalog import check_run_id, newest_run_id
from medic.store.paths import Project
from medic.store.status import FINISHED

NEEDS = {"tensorboard": ("tensorboard", "--tensorboard"), "mlflow": ("mlflow", "--mlflow")}


def build_parser() -> ArgParser:
    parser = ArgParser(prog="medic export",
                       description="Export runs to TensorBoard and/or MLflow (repeatable: adds only new epochs).")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", default="latest", help="the run (YYYYmmdd_HHMMSS, or latest)")
    which.add_argument("--all", action="store_true", help="every run of the project")
    add_root_option(parser)
    parser.add_argument("--tensorboard", metavar="DIR", help="write event files under DIR/<run id>/")
    parser.add_argument("--mlflow", metavar="URI",
                        help="an MLflow store: file:PATH, sqlite:///PATH.db or http(s)://server")
    parser.add_argument("--experiment", default="medic", help="the MLflow experiment (default: medic)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default=None,
                        help="also upload this checkpoint to MLflow")
    parser.add_argument("--follow", action="store_true",
                        help="keep exporting as the run writes, until it ends")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls with --follow (default 5)")
    return parser


def check_installed(args) -> None:
    """One line naming what to install when a target's package is missing."""
    for module, flag in NEEDS.values():
        if getattr(args, flag[2:]):
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise MedicError(f"medic export {flag} needs the {module} package ({err}): "
                                 "pip install 'medic[export]'") from err


def run_ids(args, project: Project) -> list[str]:
    if args.all:
        from medic.store.catalog import no_runs_error
        ids = [i for i in project.run_ids() if project.epoch_csv(i).exists()]
        if not ids:
            raise no_runs_error(project)
        return ids
    if args.run in ("latest", "newest"):
        return [newest_run_id(project)]
    check_run_id(project, args.run)
    if not project.epoch_csv(args.run).exists():
        raise MedicError(f"run {args.run} has no epoch CSV ({project.epoch_csv(args.run)}): nothing to export")
    return [args.run]


def targets(args) -> list:
    """MLflow first: a store that cannot be reached is found before any folder is made."""
    found = []
    if args.mlflow:
        from medic.export.mlflow import MlflowTarget
        found.append(MlflowTarget(args.mlflow, args.experiment, args.checkpoint))
    if args.tensorboard:
        from medic.export.tensorboard import TensorBoardTarget
        found.append(TensorBoardTarget(args.tensorboard))
    return found


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.tensorboard or args.mlflow):
        raise MedicError("nothing to export to: give --tensorboard DIR and/or --mlflow URI")
    if args.checkpoint and not args.mlflow:
        raise MedicError("--checkpoint uploads to MLflow: give --mlflow URI too")
    if args.follow and args.all:
        raise MedicError("--follow exports one run: give --run ID (or leave it out for the newest)")
    if not args.interval > 0:
        raise MedicError(f"--interval must be > 0 seconds, got {args.interval}")
    project = Project.at(args.root)
    ids = run_ids(args, project)
    check_installed(args)
    from medic.export.source import RunSource  # after the checks: a bad run id answers at once
    sources = [RunSource(project, i) for i in ids]
    for source in sources:
        source.poll()
        if not source.epochs.header:
            raise MedicError(f"{source.epochs.path} has no header line: not a medic epoch CSV")
        if args.checkpoint:
            from medic.export.mlflow import CHECKPOINTS
            path = project.checkpoint_dir(source.run_id) / CHECKPOINTS[args.checkpoint]
            if not path.is_file():
                raise MedicError(f"run {source.run_id} has no {args.checkpoint} checkpoint ({path} not found)")
    chosen = targets(args)
    for source in sources:
        if args.follow:
            follow(source, chosen, args.interval)
        else:
            export(source, chosen)
    return 0


def export(source, chosen: list) -> None:
    for target in chosen:
        print(f"{target.label}: {target.sync(source)}", flush=True)
        for name in target.finish(source) or []:
            print(f"{target.label}: {source.run_id}: artifact {name}", flush=True)


def follow(source, chosen: list, interval: float) -> None:
    """Export what is there, then every ``interval`` seconds what is new, until the run has ended
    and nothing new came after that (the status is read before the rows, as ``medic watch`` does)."""
    print(f"Following run {source.run_id} (status {source.status}); Ctrl-C to stop.", flush=True)
    for target in chosen:
        print(f"{target.label}: {target.sync(source)}", flush=True)
    try:
        while True:
            time.sleep(interval)
            new = source.poll()
            if new:
                for target in chosen:
                    print(f"{target.label}: {target.sync(source)}", flush=True)
            elif source.status in FINISHED:
                break
    except KeyboardInterrupt:
        print("Stopped following (the run itself goes on); what was exported stays.", flush=True)
    print(f"Run {source.run_id} {source.status}: {len(source.epochs.rows)} epochs exported.", flush=True)
    for target in chosen:
        for name in target.finish(source) or []:
            print(f"{target.label}: {source.run_id}: artifact {name}", flush=True)
