"""``medic runs``: every run of the project, one line each (``--csv`` for the full table)."""

from __future__ import annotations

import sys

import pandas as pd

from medic.cli import ArgParser, add_root_option
from medic.store import columns as C
from medic.store.catalog import is_missing, no_runs_error, all_run_ids, differing_options, runs, summary_columns
from medic.store.paths import Project


def _duration(seconds: float) -> str:
    return "-" if seconds != seconds or seconds <= 0 else C.format_duration(seconds)


def format_table(frame: pd.DataFrame, all_columns: bool = False) -> str:
    """The readable table ``medic runs`` prints."""
    if all_columns:
        return frame.to_string(index=False)
    options = [c for c in frame.columns if c not in summary_columns()]
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
        "time": frame["total_time_s"].map(_duration),
        **{col.runs[1]: frame[col.runs[0]].map(lambda v: f"{v:.1f}" if v == v else "-")
           for col in C.runs_summaries() if col.runs[0] in frame},
        "files": frame["files"],
    })
    if "sweep" in frame and frame["sweep"].fillna("").astype(bool).any():  # runs a sweep started
        out["sweep"] = frame["sweep"].map(lambda v: v if isinstance(v, str) and v else "-")
    for c in [c for c in shown if c not in ("epochs", "monitor")][:6]:  # both shown already
        out[c] = frame[c].map(lambda v: "-" if is_missing(v) else v)
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
