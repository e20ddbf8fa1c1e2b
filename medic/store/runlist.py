"""The table of every run (``medic.runs()``, ``medic runs``), built from what the catalog cache
(``medic.store.catalogcache``) keeps, so that a listing of thousands of runs reads only the runs
that changed. Each run's status is decided at each listing (``effective_status``): a sidecar that
does not record a finished run is read again whole, and its files' times looked at, every time.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from medic.store import columns as C
from medic.store.catalogcache import Entry, Reads, refresh
from medic.store.control import read_beat
from medic.store.paths import BATCH_CSV_RE, EPOCH_CSV_RE, RUN_ID_RE, SIDECAR_RE, Project, run_id_sort_key
from medic.store.sidecar import read_sidecar, written_at
from medic.store.status import FINISHED, effective_status

if TYPE_CHECKING:
    import pandas as pd

LOG_RE = re.compile(r"^training_(?P<id>\d{8}_\d{6}(?:_\d+)?)\.log$")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
FILE_TAGS = (("epoch_csv", "epoch"), ("batch_csv", "batch"), ("sidecar", "json"), ("log", "log"),
             ("checkpoints", "ckpt"), ("results", "results"))
SUMMARY_COLUMNS = ("run_id", "status", "start", "end", "epochs_done", "epochs_planned", "best",
                   "best_epoch", "monitor", "last_loss", "total_time_s", "time_per_epoch_s",
                   "samples_per_s",  # mean Samples_Per_Second of the run's epochs
                   "world_size", "files", "problem", "sweep")
# runs that have not begun an epoch yet: no epoch CSV is no problem for them
NOT_BEGUN = ("starting", "queued")


def listing(project: Project) -> tuple[list[str], dict[str, set[str]]]:
    """Every run id with any file left (oldest first), and the names in metrics/, log/, and the
    run folders in checkpoints/ and results/ (one listing of each folder, no check per file)."""
    names: dict[str, set[str]] = {}
    for key in ("metrics", "log", "checkpoints", "results"):
        try:
            with os.scandir(getattr(project, key)) as entries:
                names[key] = {e.name for e in entries} if key in ("metrics", "log") else \
                    {e.name for e in entries if RUN_ID_RE.fullmatch(e.name) and e.is_dir()}
        except OSError:
            names[key] = set()
    ids = names["checkpoints"] | names["results"]
    for name in names["metrics"]:
        m = EPOCH_CSV_RE.match(name) or SIDECAR_RE.match(name) or BATCH_CSV_RE.match(name)
        if m:
            ids.add(m.group("id"))
    ids.update(m.group("id") for m in map(LOG_RE.match, names["log"]) if m)
    return sorted(ids, key=run_id_sort_key), names


def file_keys(run_id: str, names: dict[str, set[str]]) -> list[str]:
    """Which of a run's files exist (keys of ``catalog.run_files``), from ``listing``'s names."""
    found = {"epoch_csv": f"epoch_metrics_{run_id}.csv" in names["metrics"],
             "batch_csv": f"batch_metrics_{run_id}.csv" in names["metrics"],
             "sidecar": f"run_{run_id}.json" in names["metrics"],
             "log": f"training_{run_id}.log" in names["log"],
             "checkpoints": run_id in names["checkpoints"], "results": run_id in names["results"]}
    return [k for k, there in found.items() if there]


def stamp(text: Any, fmt: str = TIME_FORMAT):
    """``text`` as a datetime (NaT when it is not one), the value ``pd.to_datetime(text,
    format=fmt, errors="coerce")`` gives, without its cost per call (thousands of runs are listed)."""
    try:
        if fmt == TIME_FORMAT and len(text) == 19 and text[4] == text[7] == "-" and text[10] == " ":
            return datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                            int(text[17:19]))
        return datetime.strptime(text, fmt)
    except (TypeError, ValueError):
        import pandas as pd
        return pd.NaT


def _id_time(run_id: str):
    try:
        return datetime(int(run_id[:4]), int(run_id[4:6]), int(run_id[6:8]), int(run_id[9:11]),
                        int(run_id[11:13]), int(run_id[13:15]))
    except ValueError:
        import pandas as pd
        return pd.NaT


def start_of(run_id: str, sidecar: dict[str, Any] | None):
    """When a run started: its sidecar's word, else the time in its id."""
    text = (sidecar or {}).get("start_time")
    value = stamp(text) if text else None
    return _id_time(run_id) if value is None or value != value else value


def base_row(run_id: str, status: str, sidecar: dict[str, Any] | None, files: list[str],
             problem: str) -> dict[str, Any]:
    """A row of the table before the epoch figures: what the sidecar and the file names say."""
    import pandas as pd
    side = sidecar or {}
    config = side.get("config") if isinstance(side.get("config"), dict) else {}
    return {
        "run_id": run_id, "status": status, "start": start_of(run_id, sidecar),
        "end": stamp(side.get("end_time")) if side.get("end_time") else pd.NaT,
        "epochs_done": 0, "epochs_planned": side.get("epochs") or config.get("epochs"),
        "best": float("nan"), "best_epoch": None,
        "monitor": side.get("monitor") or config.get("monitor") or C.AVG_LOSS,
        "last_loss": float("nan"), "total_time_s": 0.0, "time_per_epoch_s": float("nan"),
        "samples_per_s": float("nan"), **{k: float("nan") for k in added_summaries()},
        "world_size": side.get("world_size"),
        "files": ",".join(tag for key, tag in FILE_TAGS if key in files), "problem": problem,
        "sweep": side.get("sweep") or "",
    }


def _mtimes(*paths: str | os.PathLike | None) -> list[float]:
    """The modification times of those of ``paths`` that exist."""
    found = []
    for path in paths:
        with contextlib.suppress(OSError, TypeError):
            found.append(os.stat(path).st_mtime)
    return found


def problem_of(problem: str, files: list[str], status: str, sidecar: dict[str, Any] | None) -> str:
    """A run's ``problem``: its CSV's, else a missing CSV (not yet one for a run that has not
    begun), else an unreadable sidecar."""
    if "epoch_csv" not in files and status not in NOT_BEGUN:
        problem = "epoch CSV missing"
    return problem or ("sidecar unreadable" if "sidecar" in files and sidecar is None else "")


def live_status(project: Project, run_id: str, entry: Entry, files: list[str]) -> tuple[str, dict[str, Any] | None]:
    """The run's status now, and the sidecar it was decided from. A sidecar that does not record
    a finished run is read again whole, and its heartbeat read: the liveness check never uses a
    cached record."""
    sidecar, side_mtime = entry.sidecar, entry.sidecar_mtime
    mtimes = [m for m in (entry.csv_mtime, side_mtime) if m is not None]
    beat = None
    if sidecar is None or sidecar.get("status") not in FINISHED:  # active, or no record: look again
        beat = read_beat(project.heartbeat(run_id))
        if sidecar is not None or "sidecar" in files:
            sidecar = read_sidecar(project.sidecar(run_id))
            side_mtime = written_at(project.sidecar(run_id))
        mtimes = [m for m in (entry.csv_mtime, side_mtime) if m is not None] + _mtimes(
            project.batch_csv(run_id) if "batch_csv" in files else None,
            project.log_file(run_id) if "log" in files else None)
    status = effective_status(sidecar, sidecar_mtime=side_mtime, last_update=max(mtimes, default=None),
                              last_beat=beat)
    return status, sidecar


_FIGURE_COLUMNS = ("epochs_done", "best", "best_epoch", "last_loss", "total_time_s", "time_per_epoch_s",
                   "samples_per_s")


def rows(project: Project, *, use_cache: bool = True, reads: Reads | None = None) -> list[dict[str, Any]]:
    """One dict per run (``SUMMARY_COLUMNS``, then the run's options), oldest first.

    Args:
        project: the project to list.
        use_cache: False reads every file whole and keeps nothing.
        reads: where to note the files read (``catalogcache.Reads``).
    """
    ids, names = listing(project)
    entries = refresh(project, ids, names["metrics"], use_cache=use_cache, reads=reads)
    out = []
    for run_id in ids:
        entry, files = entries[run_id], file_keys(run_id, names)
        numbers = entry.figures
        status, sidecar = live_status(project, run_id, entry, files)
        row = base_row(run_id, status, sidecar, files, problem_of(entry.problem, files, status, sidecar))
        if numbers and numbers["n"]:
            for k in _FIGURE_COLUMNS:
                row[k] = numbers[k]
        config = (sidecar or {}).get("config")
        for key, value in (config.items() if isinstance(config, dict) else ()):
            row.setdefault(key, value)
        # for the filters (medic.store.runfilter), not columns: the extra columns' extremes, the
        # lowest Avg_Loss, the monitor's rule
        row["_x"] = dict(entry.extremes, Avg_Loss=[numbers["min_loss"], float("nan")]) if numbers else {}
        row["_mode"] = (sidecar or {}).get("monitor_mode")
        out.append(row)
    if added_summaries():
        _add_registered(project, out)
    return out


def added_summaries() -> tuple[str, ...]:
    """The summaries of the columns registered beyond the built-in ones (``columns.register``)."""
    return tuple(c.runs[0] for c in C.runs_summaries() if c.runs[0] not in SUMMARY_COLUMNS)


def registry_summaries(epochs) -> dict[str, float]:
    """Each registry column's summary (``Column.runs``) over a typed epoch frame."""
    import pandas as pd
    out = {}
    for col in C.runs_summaries():
        if col.name in epochs.columns:
            values = pd.to_numeric(epochs[col.name], errors="coerce")
            out[col.runs[0]] = float(values.iloc[-1] if col.runs[2] == "last" else getattr(values, col.runs[2])())
    return out


def _add_registered(project: Project, found: list[dict[str, Any]]) -> None:
    """A column registered in this process (a plug-in's) is not in the cache, whose figures are
    the built-in ones: its summary is read from the CSVs that have its column."""
    from medic.store.readers import read_epoch_csv
    for row in found:
        if row["epochs_done"] and any(k in row["_x"] for k in (c.name for c in C.runs_summaries())):
            with contextlib.suppress(Exception):
                row.update(registry_summaries(read_epoch_csv(project.epoch_csv(row["run_id"]))))


def frame(found: list[dict[str, Any]]) -> pd.DataFrame:
    """The DataFrame of ``medic.runs()`` from rows (typed as it always was)."""
    import pandas as pd
    options: dict[str, None] = {}
    for row in found:
        for k in row:
            if k not in SUMMARY_COLUMNS + added_summaries() and k not in ("_x", "_mode"):
                options.setdefault(k)
    table = pd.DataFrame(found, columns=list(SUMMARY_COLUMNS + added_summaries()) + list(options))
    table["epochs_done"] = table["epochs_done"].astype("int64")
    for c in ("epochs_planned", "best_epoch", "world_size"):
        table[c] = table[c].astype("Int64")
    return table
