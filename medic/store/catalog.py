"""The run catalog: find a project's runs, load one, list them all.

    import medic
    medic.runs()                      # one row per run: status, progress, best, time, options
    medic.catalog(status="completed", since="2025-11-01", top=5, by="Val_Dice")   # the same, filtered
    run = medic.load_run("20251106_103015")       # or "latest", or a path to an epoch CSV
    run.epochs.plot(x="Epoch", y="Avg_Loss")      # typed DataFrame
    run.batches                       # the batch CSV as a DataFrame (read on first use), or None

Runs are found by their files; any of them may be missing (the usual clean-up commands delete
old CSVs and leave logs and checkpoints behind) and the newest may still be being written.
A listing reads only the runs that changed since the last one (``medic.store.catalogcache``: one
cached summary row per run in ``analysis/.cache/catalog.json``); each run's status is decided
afresh every time.
pandas is imported only by the functions that return DataFrames, so ``medic watch`` stays light.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medic.errors import MedicError, RunNotFoundError
from medic.store import columns as C
from medic.store.paths import BATCH_CSV_RE, EPOCH_CSV_RE, RUN_ID_RE, Project
from medic.store.runlist import SUMMARY_COLUMNS, base_row, frame, listing, problem_of, registry_summaries
from medic.store.sidecar import read_sidecar
from medic.store.control import read_beat
from medic.store.status import effective_status

if TYPE_CHECKING:
    import pandas as pd

# config keys that differ between runs without saying anything about the training
NOISE_OPTIONS = ("output_dir", "resume", "lang", "threads", "num_workers")


# --- finding runs -----------------------------------------------------------------------------

def all_run_ids(project: Project) -> list[str]:
    """Every run id with any file left in the project (metrics, log, checkpoints, results),
    oldest first."""
    return listing(project)[0]


def run_files(project: Project, run_id: str) -> dict[str, Path]:
    """The files of a run that exist: epoch_csv, batch_csv, sidecar, log, checkpoints, results."""
    candidates = {"epoch_csv": project.epoch_csv(run_id), "batch_csv": project.batch_csv(run_id),
                  "sidecar": project.sidecar(run_id), "log": project.log_file(run_id),
                  "checkpoints": project.checkpoint_dir(run_id), "results": project.results_dir(run_id),
                  "heartbeat": project.heartbeat(run_id), "stop_request": project.stop_request(run_id)}
    return {k: p for k, p in candidates.items() if p.exists()}


def analysis_files(project: Project, run_id: str) -> list[Path]:
    """Files in analysis/ (and its cache of parsed batch CSVs, ``analysis/.cache``) whose name
    contains the run id (not a longer id that starts with it)."""
    if not project.analysis.is_dir():
        return []
    pattern = re.compile(rf"(?<!\d){re.escape(run_id)}(?!\d|_\d)")
    cache = project.analysis / ".cache"
    found = [project.analysis / n for n in os.listdir(project.analysis) if pattern.search(n)]
    found += [cache / n for n in (os.listdir(cache) if cache.is_dir() else []) if pattern.search(n)]
    return sorted(found)


def no_runs_error(project: Project) -> MedicError:
    if not project.metrics.is_dir():
        return RunNotFoundError(f"no metrics/ folder in {project.root}: not a medic project "
                                "(run this in the project folder or pass --root DIR)")
    return RunNotFoundError(f"no runs in {project.metrics} (start one with medic train)")


def newest_run_id(project: Project, need: str = "epoch_csv") -> str:
    """The newest run that has the file ``need`` ("epoch_csv" or "batch_csv"; "any": a run that
    is starting has only its sidecar)."""
    ids = [i for i in project.run_ids() if need != "batch_csv" or project.batch_csv(i).exists()]
    if need == "epoch_csv":
        ids = [i for i in ids if project.epoch_csv(i).exists()]
    if not ids:
        if need == "batch_csv" and project.run_ids():
            raise RunNotFoundError(f"no batch CSV in {project.metrics} (train with "
                                   "--log_batch_metrics to record every batch)")
        raise no_runs_error(project)
    return ids[-1]


def check_run_id(project: Project, run_id: str) -> None:
    if run_id in all_run_ids(project) and (project.epoch_csv(run_id).exists()
                                           or project.sidecar(run_id).exists()):
        return
    known = project.run_ids()
    shown = ", ".join(known[-3:]) if known else "none"
    what = "not a run id (YYYYmmdd_HHMMSS)" if not RUN_ID_RE.fullmatch(run_id) else "no such run"
    raise RunNotFoundError(f"{run_id!r}: {what} in {project.metrics} (newest runs: {shown})")


def resolve_csv(project: Project, *, run: str | None = None, metrics_file: str | None = None,
                kind: str = "epoch") -> tuple[Path, str | None]:
    """The CSV the user means, and its run id: ``metrics_file``, else the run ``run`` (or
    "latest"), else the newest run. ``kind`` "batch" picks the run's batch CSV."""
    if metrics_file:
        path = Path(metrics_file).expanduser()
        if not path.is_absolute() and not path.exists() and (project.root / path).exists():
            path = project.root / path
        m = EPOCH_CSV_RE.match(path.name) or BATCH_CSV_RE.match(path.name)
        run_id = m.group("id") if m else None
        if kind == "batch" and EPOCH_CSV_RE.match(path.name):
            batch = path.with_name(f"batch_metrics_{run_id}.csv")
            if not batch.exists():
                raise RunNotFoundError(f"run {run_id} has no batch CSV ({batch.name} not found; "
                                       "train with --log_batch_metrics)")
            return batch, run_id
        return path, run_id
    need = "batch_csv" if kind == "batch" else "epoch_csv"
    if run and run not in ("latest", "newest"):
        check_run_id(project, run)
        run_id = run
    else:
        run_id = newest_run_id(project, need)
    path = project.batch_csv(run_id) if kind == "batch" else project.epoch_csv(run_id)
    if not path.exists():
        what = ("no batch CSV (trained without --log_batch_metrics, or the file was deleted)"
                if kind == "batch" else "no epoch CSV (deleted?)")
        raise RunNotFoundError(f"run {run_id} has {what}")
    return path, run_id


# --- one run ----------------------------------------------------------------------------------

@dataclass
class Run:
    """One run: its typed epoch rows, its sidecar and its files. ``batches`` is read on first use."""

    run_id: str
    epochs: pd.DataFrame = field(repr=False)
    sidecar: dict[str, Any] | None = field(repr=False)
    paths: dict[str, Path] = field(repr=False)
    _batches: Any = field(default=None, repr=False, compare=False)

    @property
    def batches(self) -> pd.DataFrame | None:
        if self._batches is None and "batch_csv" in self.paths:
            from medic.store.readers import read_batch_csv
            self._batches = read_batch_csv(self.paths["batch_csv"])
        return self._batches

    @property
    def config(self) -> dict[str, Any]:
        config = (self.sidecar or {}).get("config")
        return dict(config) if isinstance(config, dict) else {}

    @property
    def status(self) -> str:
        return effective_status(self.sidecar, **_activity(self.paths, self.epochs))

    @property
    def planned_epochs(self) -> int | None:
        value = (self.sidecar or {}).get("epochs") or self.config.get("epochs")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def __repr__(self) -> str:
        planned = self.planned_epochs
        return (f"Run({self.run_id!r}, status={self.status!r}, epochs={len(self.epochs)}"
                f"{'/' + str(planned) if planned else ''}, batches={'yes' if 'batch_csv' in self.paths else 'no'})")


def _activity(paths: dict[str, Path], epochs: pd.DataFrame | None = None) -> dict[str, float | None]:
    """The signs of life ``effective_status`` weighs: the sidecar's and the files' last change,
    and the heartbeat."""
    mtimes = {}
    for key in ("epoch_csv", "batch_csv", "sidecar", "log"):
        try:
            mtimes[key] = paths[key].stat().st_mtime
        except (KeyError, OSError):
            pass
    return {"sidecar_mtime": mtimes.get("sidecar"), "last_update": max(mtimes.values(), default=None),
            "last_beat": read_beat(paths["heartbeat"]) if "heartbeat" in paths else None}


def load_run(id_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Run:
    """Load a run by id (``"latest"`` for the newest) or by the path of its epoch or batch CSV.

    A header-only epoch CSV (a run before its first epoch ends) gives an empty ``epochs``.
    """
    from medic.store.readers import read_epoch_csv

    project = Project.at(root)
    spec = os.fspath(id_or_path)
    if spec in ("latest", "newest") or RUN_ID_RE.fullmatch(spec):
        epoch_csv, run_id = resolve_csv(project, run=spec)
        files = run_files(project, run_id)
    else:
        path, run_id = resolve_csv(project, metrics_file=spec)
        if BATCH_CSV_RE.match(path.name):
            path = path.with_name(f"epoch_metrics_{run_id}.csv")
        epoch_csv = path
        run_id = run_id or path.stem
        in_project = path.parent.name == "metrics"
        files = run_files(Project(path.parent.parent.resolve()), run_id) if in_project else {}
        files["epoch_csv"] = path
        for key, name in (("batch_csv", f"batch_metrics_{run_id}.csv"), ("sidecar", f"run_{run_id}.json")):
            if key not in files and (path.parent / name).exists():
                files[key] = path.parent / name
    epochs = read_epoch_csv(epoch_csv, allow_empty=True)
    sidecar = read_sidecar(files["sidecar"]) if "sidecar" in files else None
    return Run(run_id, epochs, sidecar, files)


# --- every run --------------------------------------------------------------------------------

def summarize(project: Project, run_id: str) -> dict[str, Any]:
    """One row of ``runs()`` read from the run's files alone, the whole epoch CSV parsed (what a
    cached listing must equal): never raises for a damaged run, it fills ``problem`` instead."""
    import pandas as pd
    from medic.store.readers import read_epoch_csv

    files = run_files(project, run_id)
    sidecar = read_sidecar(files["sidecar"]) if "sidecar" in files else None
    epochs, problem = None, ""
    if "epoch_csv" in files:
        try:
            epochs = read_epoch_csv(files["epoch_csv"], allow_empty=True)
        except MedicError as err:
            problem = str(err)
    status = effective_status(sidecar, **_activity(files, epochs))
    row = base_row(run_id, status, sidecar, list(files), problem_of(problem, list(files), status, sidecar))
    if epochs is not None and len(epochs):
        best_rows = epochs[epochs[C.IS_BEST]]
        best_row = best_rows.iloc[-1] if len(best_rows) else epochs.loc[epochs[C.AVG_LOSS].idxmin()]
        times = epochs[C.EPOCH_TIME]
        row.update(epochs_done=int(epochs[C.EPOCH].iloc[-1]), best=float(epochs[C.BEST_SO_FAR].iloc[-1]),
                   best_epoch=int(best_row[C.EPOCH]), last_loss=float(epochs[C.AVG_LOSS].iloc[-1]),
                   total_time_s=C.training_seconds(times), time_per_epoch_s=float(times.mean()))
        row.update(registry_summaries(epochs))
    config = (sidecar or {}).get("config")
    for key, value in (config.items() if isinstance(config, dict) else ()):
        row.setdefault(key, value)
    return row


def runs(root: str | os.PathLike | None = None, *, cached: bool = True) -> pd.DataFrame:
    """Every run of the project at ``root`` (default: the working directory), oldest first.

    Columns: ``run_id``, ``status`` (see ``medic.store.status``), ``start``, ``end``,
    ``epochs_done``, ``epochs_planned``, ``best`` (best monitored value) and ``best_epoch``,
    ``monitor``, ``last_loss``, ``total_time_s``, ``time_per_epoch_s``, ``world_size``,
    ``files`` (which of the run's files are left), ``problem`` (why a file could not be read),
    then one column per training option recorded in the sidecar.

    Args:
        root: the project folder.
        cached: False reads every run's files whole, ignoring and keeping nothing in
            ``analysis/.cache/catalog.json`` (the listing is the same, only slower).
    """
    from medic.store.runlist import rows

    project = Project.at(root)
    if cached:
        return frame(rows(project))
    return frame([summarize(project, run_id) for run_id in all_run_ids(project)])


def catalog(root: str | os.PathLike | None = None, **filters: Any) -> pd.DataFrame:
    """``runs()`` narrowed and ordered by ``filters``, the options of ``medic runs``.

    Args:
        root: the project folder (default: the working directory).
        **filters: ``status`` (a status or a list of them), ``sweep`` (a sweep id), ``since``
            (a date, ``"2025-11-01"``, or a datetime: runs started then or later), ``top`` (the
            N best runs, best first) ``by`` (what ranks them: ``best``, the default, each run's
            monitored best; an epoch column such as ``"Val_Dice"``, its best value over the
            epochs, which becomes a column; or ``total_time_s``, ``samples_per_s``, ...).

    Raises:
        MedicError: for an unknown filter or a value that is not one.
    """
    from medic.store.runfilter import select
    from medic.store.runlist import rows

    found = rows(Project.at(root))
    return frame(select(found, **filters))


def differing_options(configs: list[dict[str, Any]]) -> list[str]:
    """The option names whose values are not the same in every config, in a stable order."""
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    return [k for k in keys if k not in NOISE_OPTIONS
            and len({repr(c.get(k)) for c in configs}) > 1]


# --- medic runs -------------------------------------------------------------------------------

def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
