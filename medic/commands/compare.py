"""``medic compare``: overlay several runs' curves and tabulate them.

    medic compare                                   # the two newest runs
    medic compare 20251106_103015 20251107_091200 metrics/epoch_metrics_20251108_120000.csv

Writes ``analysis/comparison_<id1>_vs_<id2>[...].png`` (loss and every shared extra metric
against epoch and against wall time), ``comparison_<ids>.csv`` and ``comparison_<ids>.txt`` (the
summary table).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TYPE_CHECKING, Sequence

from medic.analysis.compare import compare_runs, default_runs, load_comparable, run_labels
from medic.cli import ArgParser, add_root_option
from medic.errors import MedicError
from medic.store.files import shown_path, write_text_atomic
from medic.store.paths import Project

if TYPE_CHECKING:
    import pandas as pd


def comparison_name(ids: Sequence[str]) -> str:
    """``comparison_<id1>_vs_<id2>...``, shortened with a hash when too long for a file name."""
    name = "comparison_" + "_vs_".join(ids)
    if len(name) > 180:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"comparison_{ids[0]}_vs_{len(ids) - 1}_more_{digest}"
    return name


def table_text(table: pd.DataFrame, labels: Sequence[str]) -> str:
    legend = "\n".join(f"  {label}" for label in labels)
    return f"Runs compared:\n{legend}\n\n{table.to_string(index=False)}\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic compare", description="Overlay and tabulate several runs.")
    parser.add_argument("runs", nargs="*", metavar="ID_OR_FILE",
                        help="run ids or epoch CSV paths (default: the two newest runs)")
    add_root_option(parser)
    paired = parser.add_argument_group("paired comparison of two models on the same cases")
    paired.add_argument("--paired", action="store_true", help="B against A case by case: differences, "
                        "bootstrap interval, Wilcoxon test, wins (A, B: runs, cv_... or eval_...)")
    paired.add_argument("--metric", default="dice", choices=("dice", "hd95", "nsd"), help="default: dice")
    paired.add_argument("--epoch", default="last", choices=("last", "best"),
                        help="which kept per-case table of a run (default: last)")
    paired.add_argument("--format", default="table", choices=("table", "csv", "markdown", "latex"),
                        help="how the table is printed (3 decimals, p <0.001)")
    paired.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: 0)")
    args = parser.parse_args(argv)
    if args.paired:
        from medic.commands.paired import run_paired
        return run_paired(args, Project.at(args.root))
    given = [f"--{n}" for n, v in (("metric", "dice"), ("epoch", "last"), ("format", "table"), ("seed", 0))
             if getattr(args, n) != v]
    if given:
        raise MedicError(f"{', '.join(given)} belong(s) to a paired comparison: add --paired")
    if "matplotlib" not in sys.modules:  # files only: never a window (saving uses Agg anyway)
        os.environ["MPLBACKEND"] = "Agg"
    from medic.analysis.figures import save_figure  # after MPLBACKEND is set

    project = Project.at(args.root)
    runs = [load_comparable(s, project.root) for s in (args.runs or default_runs(project))]
    fig, table = compare_runs(runs, project.root)
    name = comparison_name([r.run_id for r in runs])
    project.analysis.mkdir(parents=True, exist_ok=True)
    png, csv, txt = (project.analysis / f"{name}.{ext}" for ext in ("png", "csv", "txt"))
    text = table_text(table, run_labels(runs))
    save_figure(fig, png)
    write_text_atomic(csv, table.to_csv(index=False))
    write_text_atomic(txt, text)
    print(text)
    for path in (png, csv, txt):
        print(f"written: {shown_path(path)}")
    return 0
