"""``medic runs``: every run of the project, one line each (``--csv`` for the full table,
``--json`` for scripts), narrowed by status, sweep or start date, or the best N by a metric."""

from __future__ import annotations

import json
import sys
from dataclasses import fields

import pandas as pd

from medic.cli import ArgParser, add_root_option
from medic.config import PATH_OPTIONS, TrainConfig
from medic.store import columns as C
from medic.store.catalog import all_run_ids, catalog, differing_options, is_missing, no_runs_error
from medic.store.files import shown_path
from medic.store.runlist import SUMMARY_COLUMNS, added_summaries
from medic.store.runfilter import KNOWN_STATUSES, RANKED
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar
from medic.store.status import shown_status

INT_OPTIONS = {f.name: int for f in fields(TrainConfig) if f.type in (int, "int")}


def _duration(seconds: float) -> str:
    return "-" if seconds != seconds or seconds <= 0 else C.format_duration(seconds)


def render(out: pd.DataFrame) -> str:
    """``out.to_string(index=False)``, without its cost per cell (a table of thousands of runs): a
    text column is right-aligned to its widest cell, as pandas aligns it; any other column is
    formatted by pandas from its distinct values (how pandas formats a cell depends on the set
    of values in its column, not on how often each appears), each cell then taking its value's."""
    columns = []
    for c in out.columns:
        values = out[c].tolist()
        if all(type(v) is str for v in values):
            width = max([len(str(c))] + [len(v) for v in values])
            columns.append([str(c).rjust(width)] + [v.rjust(width) for v in values])
            continue
        keys = [(type(v), repr(v)) for v in values]
        first: dict = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        lines = out[[c]].iloc[list(first.values())].to_string(index=False).split("\n")
        cell = dict(zip(first, lines[1:]))
        columns.append([lines[0]] + [cell[key] for key in keys])
    return "\n".join(" ".join(cells) for cells in zip(*columns))


def as_recorded(column: pd.Series) -> pd.Series:
    """An option's values as the runs recorded them: a run without the option (a MetricsLogger
    run, an older run) turns the column into floats, so whole numbers of an int option (or of a
    column whose every value is whole) are shown as ints again; a missing value is ``-``."""
    if column.name in PATH_OPTIONS:  # recorded absolute; shown as typed where that is shorter
        return column.map(lambda v: "-" if is_missing(v) or v == "" else shown_path(v))
    kind = INT_OPTIONS.get(column.name)
    present = [v for v in column if not is_missing(v)]
    whole = all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                for v in present)
    ints = kind is int or (kind is None and whole and len(present) < len(column))
    return column.map(lambda v: "-" if is_missing(v) else int(v) if ints and isinstance(v, float)
                      and v.is_integer() else v)


def format_table(frame: pd.DataFrame, all_columns: bool = False, by: str | None = None) -> str:
    """The readable table ``medic runs`` prints (``by``: the epoch metric the runs were ranked by,
    shown as a column)."""
    options = [c for c in frame.columns if c not in SUMMARY_COLUMNS + added_summaries()]
    if all_columns:
        return frame.assign(**{c: as_recorded(frame[c]) for c in options}).to_string(index=False)
    shown = differing_options([{k: v for k, v in r.items() if not is_missing(v)}
                               for r in frame[options].to_dict("records")]) if len(frame) > 1 else []
    out = pd.DataFrame({
        "run": frame["run_id"],
        "status": frame["status"],
        "start": frame["start"].dt.strftime("%Y-%m-%d %H:%M").fillna("-"),
        "epochs": [f"{d}/{p}" if pd.notna(p) else f"{d}" for d, p in zip(frame["epochs_done"],
                                                                        frame["epochs_planned"])],
        "best": [f"{b:.6g} @{e}" if pd.notna(e) else "-" for b, e in zip(frame["best"], frame["best_epoch"])],
        "monitor": frame["monitor"],
        "time": frame["total_time_s"].map(_duration),
        **{col.runs[1]: frame[col.runs[0]].map(lambda v: f"{v:.1f}" if v == v else "-")
           for col in C.runs_summaries() if col.runs[0] in frame},
        "files": frame["files"],
    })
    if "sweep" in frame and frame["sweep"].fillna("").astype(bool).any():  # runs a sweep started
        out["sweep"] = frame["sweep"].map(lambda v: v if isinstance(v, str) and v else "-")
    if by and by in frame and by not in SUMMARY_COLUMNS:  # the metric the runs were ranked by
        out[by] = frame[by].map(lambda v: f"{v:.6g}")
    for c in [c for c in shown if c not in ("epochs", "monitor", by)][:6]:  # shown already
        out[c] = as_recorded(frame[c])
    text = render(out)
    problems = [f"  {run_id}: {problem}" for run_id, problem in zip(frame["run_id"], frame["problem"]) if problem]
    return text + ("\n\nproblems:\n" + "\n".join(problems) if problems else "")


def to_json(frame: pd.DataFrame) -> str:
    """A JSON array, one object per run on its own line: times as text, missing values as null."""
    lines = []
    for row in frame.to_dict("records"):
        lines.append(json.dumps({k: _plain(v) for k, v in row.items()}, default=str))
    return "[\n" + ",\n".join(lines) + "\n]" if lines else "[]"


def _plain(value):
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if is_missing(value) or value is pd.NaT or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic runs", description="List every run of the project.")
    add_root_option(parser)
    parser.add_argument("--csv", action="store_true", help="print the full table as CSV")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run (for scripts)")
    parser.add_argument("--all", action="store_true", help="show every column (all options)")
    parser.add_argument("--status", metavar="STATUS", help="only runs in this status (several: comma-separated): "
                        + ", ".join(KNOWN_STATUSES))
    parser.add_argument("--sweep", metavar="ID", help="only the runs of this sweep")
    parser.add_argument("--since", metavar="DATE", help="only runs started on or after DATE (YYYY-MM-DD)")
    parser.add_argument("--top", metavar="N", type=int, help="only the N best runs, best first (see --by)")
    parser.add_argument("--by", metavar="METRIC", help="what ranks the runs: best (default: each run's "
                        "monitored best), an epoch column such as Val_Dice, or " + ", ".join(RANKED))
    args = parser.parse_args(argv)
    project = Project.at(args.root)
    if not project.metrics.is_dir() and not all_run_ids(project):
        raise no_runs_error(project)
    filters = {k: getattr(args, k) for k in ("status", "sweep", "since", "top", "by") if getattr(args, k) is not None}
    frame = catalog(project.root, **filters)
    if args.json:
        print(to_json(frame))
        return 0
    if args.csv:
        frame.to_csv(sys.stdout, index=False)
        return 0
    if frame.empty:
        print(f"no runs in {project.metrics}" if not filters else "no run matches " +
              " ".join(f"--{k} {v}" for k, v in filters.items()))
        return 0
    queued = frame["status"] == "queued"  # a SLURM run's: why its job waits, from squeue now
    if queued.any():
        frame.loc[queued, "status"] = [shown_status("queued", read_sidecar(project.sidecar(run_id)))
                                       for run_id in frame.loc[queued, "run_id"]]
    print(format_table(frame, args.all, args.by))
    return 0
