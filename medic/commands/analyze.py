"""``medic analyze``: figures and a text report for a run's epoch CSV, or with
``--batch_metrics`` its batch CSV, written to ``analysis/`` (names in docs/reference/files.md).

    medic analyze                                   # the newest run's epoch CSV
    medic analyze --metrics_file metrics/epoch_metrics_20251106_103015.csv
    medic analyze --batch_metrics [--run 20251106_103015]
"""

from __future__ import annotations

import os
import sys

from medic.cli import ArgParser, add_source_options, parse_source_args
from medic.lang import pick_lang
from medic.store.catalog import resolve_csv
from medic.store.files import shown_path
from medic.store.paths import Project
from medic.store.readers import sniff_kind

SAVED = {
    "en": {"figure": "Analysis figure", "stats": "Statistics figure", "report": "Report"},
    "zh": {"figure": "分析图表已保存", "stats": "统计图表已保存", "report": "分析报告已保存"},
}


def build_parser() -> ArgParser:
    parser = ArgParser(prog="medic analyze", description="Figures and a text report for a metrics CSV.")
    add_source_options(parser, "report language")
    parser.add_argument("--batch_metrics", "--batch-metrics", action="store_true",
                        help="analyse the batch-level CSV (of the chosen or newest run)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only where the files are")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_source_args(build_parser(), argv)
    lang = pick_lang(args.lang)
    project = Project.at(args.root)
    kind = "batch" if args.batch_metrics else "epoch"
    path, _ = resolve_csv(project, run=args.run, metrics_file=args.metrics_file, kind=kind)
    if kind == "epoch" and sniff_kind(path) == "batch":
        kind = "batch"  # a batch CSV named explicitly: analyse it as what it is

    # files only: never open a window, whatever the environment says (set before matplotlib is
    # imported, which happens only once the data has been read and checked)
    if "matplotlib" not in sys.modules:
        os.environ["MPLBACKEND"] = "Agg"
    # pandas and matplotlib load here: after the checks, and after MPLBACKEND is set
    from medic.analysis.outputs import analyze_batches, analyze_epochs
    run = analyze_batches if kind == "batch" else analyze_epochs
    paths, text = run(path, project.root, lang)
    if not args.quiet:
        print(text)
    for key, written in paths.items():
        print(f"{SAVED[lang][key]}: {shown_path(written)}")
    return 0
