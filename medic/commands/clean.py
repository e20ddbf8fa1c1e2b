"""``medic clean``: remove whole runs — CSVs, sidecar, log, checkpoints/<id>/, results/<id>/ and
the analysis files named after the run — after showing what would go.

    medic clean --keep 3                 # all but the 3 newest runs (shows the list only)
    medic clean --older-than 7 --yes     # runs last touched more than 7 days ago: removed
    medic clean 20251106_103015 --yes    # these runs

Nothing is removed without ``--yes``. A run that is still active (status ``starting``,
``queued`` or ``running``) is never removed. With both ``--keep`` and ``--older-than`` a run
goes only if both select it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from medic.cli import ArgParser, add_root_option
from medic.store.catalog import all_run_ids, analysis_files, run_files, runs
from medic.errors import MedicError, RunNotFoundError
from medic.store.paths import RUN_ID_RE, Project
from medic.store.sidecar import read_sidecar
from medic.store.status import ACTIVE, run_status

# removal order: derived files first, the sidecar and epoch CSV (which make a run a run) last,
# so an interrupted clean leaves a run that is still listed and can be cleaned again
_ORDER = ("analysis", "results", "checkpoints", "log", "batch_csv", "heartbeat", "stop_request", "epoch_csv",
          "sidecar")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def run_plan(project: Project, run_id: str) -> tuple[list[Path], str, float]:
    """A run's files in removal order, its status, and when any of them last changed."""
    files = run_files(project, run_id)
    paths = [p for p in analysis_files(project, run_id)]
    paths += [files[k] for k in _ORDER[1:] if k in files]
    sidecar = read_sidecar(files["sidecar"]) if "sidecar" in files else None
    mtimes = []
    for p in paths:
        try:
            mtimes.append(p.stat().st_mtime)
        except OSError:
            pass
    status = run_status(project, run_id, sidecar, last_update=max(mtimes, default=None))
    return paths, status, max(mtimes, default=0.0)


def select(ids: list[str], last_change: dict[str, float], keep: int | None, older_than: float | None,
           now: float | None = None) -> list[str]:
    """The runs chosen by ``--keep`` (all but the newest N) and/or ``--older-than`` (days)."""
    now = time.time() if now is None else now
    chosen = set(ids)
    if keep is not None:
        chosen &= set(ids[:max(0, len(ids) - keep)])
    if older_than is not None:
        chosen &= {i for i in ids if now - last_change[i] > older_than * 86400}
    return [i for i in ids if i in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic clean", description="Remove whole runs (shows them first; --yes removes).")
    parser.add_argument("runs", nargs="*", metavar="ID", help="run ids to remove")
    parser.add_argument("--keep", type=int, metavar="N", help="keep the N newest runs, remove the others")
    parser.add_argument("--older-than", "--older_than", type=float, metavar="DAYS", dest="older_than",
                        help="remove runs whose files all last changed more than DAYS days ago")
    parser.add_argument("--yes", "-y", action="store_true", help="really remove (default: only show)")
    add_root_option(parser)
    args = parser.parse_args(argv)
    if not args.runs and args.keep is None and args.older_than is None:
        raise MedicError("say which runs to remove: --keep N, --older-than DAYS, or run ids")
    if args.keep is not None and args.keep < 0:
        raise MedicError(f"--keep must be >= 0, got {args.keep}")
    if args.older_than is not None and not args.older_than >= 0:
        raise MedicError(f"--older-than must be >= 0 days, got {args.older_than}")
    project = Project.at(args.root)
    ids = all_run_ids(project)
    if not ids and not project.metrics.is_dir():
        raise RunNotFoundError(f"no metrics/ folder in {project.root}: not a medic project "
                               "(run this in the project folder or pass --root DIR)")
    for run_id in args.runs:
        if not RUN_ID_RE.fullmatch(run_id) or run_id not in ids:
            raise RunNotFoundError(f"{run_id!r}: no such run in {project.root}")
    plans = {i: run_plan(project, i) for i in ids}
    pool = [i for i in ids if not args.runs or i in args.runs]
    chosen = select(pool, {i: plans[i][2] for i in pool},
                    args.keep if args.keep is not None else None, args.older_than)
    if args.runs and args.keep is None and args.older_than is None:
        chosen = pool
    live = [i for i in chosen if plans[i][1] in ACTIVE]
    doomed = [i for i in chosen if i not in live]
    for i in live:
        print(f"keeping {i}: it is still {plans[i][1]} (stop it first: medic stop {i})")
    if not doomed:
        print("nothing to remove")
        return 0
    total = 0
    for i in doomed:
        paths, status, _ = plans[i]
        size = sum(_size(p) for p in paths)
        total += size
        print(f"{i}  [{status}]  {len(paths)} file(s)/folder(s), {_human(size)}")
        for p in paths:
            print(f"    {os.path.relpath(p, project.root)}{'/' if p.is_dir() else ''}")
    verb = "removed" if args.yes else "would remove"
    if not args.yes:
        print(f"{verb} {len(doomed)} run(s), {_human(total)}. Nothing removed: add --yes to remove them.")
        return 0
    for i in doomed:
        for p in plans[i][0]:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
    runs(project.root)  # the catalog's cache forgets the removed runs now, not at the next listing
    print(f"{verb} {len(doomed)} run(s), {_human(total)}.")
    return 0
