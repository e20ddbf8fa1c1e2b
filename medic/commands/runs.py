"""``medic runs``: every run of the project, one line each (``--csv`` for the full table)."""

from __future__ import annotations

import sys
from dataclasses import fields

import pandas as pd

from medic.cli import ArgParser, add_root_option
from medic.config import PATH_OPTIONS, TrainConfig
from medic.store.catalog import SUMMARY_COLUMNS, is_missing, no_runs_error, all_run_ids, differing_options, runs
from medic.store.files import shown_path
from medic.store.paths import Project

INT_OPTIONS = {f.name: int for f in fields(TrainConfig) if f.type in (int, "int")}


def _hms(seconds: float) -> str:
    if seconds != seconds or seconds <= 0:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


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


def format_table(frame: pd.DataFrame, all_columns: bool = False) -> str:
    """The readable table ``medic runs`` prints."""
    options = [c for c in frame.columns if c not in SUMMARY_COLUMNS]
    if all_columns:
        return frame.assign(**{c: as_recorded(frame[c]) for c in options}).to_string(index=False)
    shown = differing_options([{k: r[k] for k in options if not is_missing(r[k])}
                               for _, r in frame.iterrows()]) if len(frame) > 1 else []
    out = pd.DataFrame({
        "run": frame["run_id"],
        "status": frame["status"],
        "start": frame["start"].map(lambda t: t.strftime("%Y-%m-%d %H:%M") if pd.notna(t) else "-"),
        "epochs": [f"{d}/{p}" if pd.notna(p) else f"{d}" for d, p in zip(frame["epochs_done"],
                                                                        frame["epochs_planned"])],
        "best": [f"{b:.6g} @{e}" if pd.notna(e) else "-" for b, e in zip(frame["best"], frame["best_epoch"])],
        "monitor": frame["monitor"],
        "time": frame["total_time_s"].map(_hms),
        "samples/s": frame["samples_per_s"].map(lambda v: f"{v:.1f}" if v == v else "-"),
        "files": frame["files"],
    })
    if "sweep" in frame and frame["sweep"].fillna("").astype(bool).any():  # runs a sweep started
        out["sweep"] = frame["sweep"].map(lambda v: v if isinstance(v, str) and v else "-")
    for c in [c for c in shown if c not in ("epochs", "monitor")][:6]:  # both shown already
        out[c] = as_recorded(frame[c])
    text = out.to_string(index=False)
    problems = [f"  {r.run_id}: {r.problem}" for r in frame.itertuples() if r.problem]
    return text + ("\n\nproblems:\n" + "\n".join(problems) if problems else "")


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic runs", description="List every run of the project.")
    add_root_option(parser)
    parser.add_argument("--csv", action="store_true", help="print the full table as CSV")
    parser.add_argument("--all", action="store_true", help="show every column (all options)")
    args = parser.parse_args(argv)
    project = Project.at(args.root)
    if not project.metrics.is_dir() and not all_run_ids(project):
        raise no_runs_error(project)
    frame = runs(project.root)
    if args.csv:
        frame.to_csv(sys.stdout, index=False)
        return 0
    if frame.empty:
        print(f"no runs in {project.metrics}")
        return 0
    print(format_table(frame, args.all))
    return 0
