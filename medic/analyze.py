"""``medic analyze``: figures and a text report for a run's epoch CSV, or with
``--batch_metrics`` its batch CSV, written to ``analysis/`` (names of SPEC §4).

    medic analyze                                   # the newest run's epoch CSV
    medic analyze --metrics_file metrics/epoch_metrics_20251106_103015.csv
    medic analyze --batch_metrics [--run 20251106_103015]
"""

from __future__ import annotations

import os
import sys

from medic.catalog import ArgParser, add_root_option, resolve_csv
from medic.errors import MedicError
from medic.paths import Project

SAVED = {
    "en": {"figure": "Analysis figure", "stats": "Statistics figure", "report": "Report"},
    "zh": {"figure": "分析图表已保存", "stats": "统计图表已保存", "report": "分析报告已保存"},
}


def build_parser() -> ArgParser:
    parser = ArgParser(prog="medic analyze", description="Figures and a text report for a metrics CSV.")
    parser.add_argument("--metrics_file", "--metrics-file", metavar="PATH",
                        help="the CSV to analyse (default: the newest run's in metrics/)")
    parser.add_argument("--batch_metrics", "--batch-metrics", action="store_true",
                        help="analyse the batch-level CSV (of the chosen or newest run)")
    parser.add_argument("--run", metavar="ID", help="the run to analyse (YYYYmmdd_HHMMSS, or latest)")
    add_root_option(parser)
    parser.add_argument("--lang", choices=("en", "zh"), default=None,
                        help="report language (default: from the locale, zh* -> Chinese)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only where the files are")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.metrics_file and args.run:
        raise MedicError("give either --metrics_file or --run, not both")
    from medic import report
    lang = report.pick_lang(args.lang)
    project = Project.at(args.root)
    kind = "batch" if args.batch_metrics else "epoch"
    path, _ = resolve_csv(project, run=args.run, metrics_file=args.metrics_file, kind=kind)
    from medic.readers import sniff_kind
    if kind == "epoch" and sniff_kind(path) == "batch":
        kind = "batch"  # a batch CSV named explicitly: analyse it as what it is

    # files only: never open a window, whatever the environment says (set before matplotlib is
    # imported, which happens only once the data has been read and checked)
    if "matplotlib" not in sys.modules:
        os.environ["MPLBACKEND"] = "Agg"
    from medic import analysis
    run = analysis.analyze_batches if kind == "batch" else analysis.analyze_epochs
    paths, text = run(path, project.root, lang)
    if not args.quiet:
        print(text)
    for key, written in paths.items():
        print(f"{SAVED[lang][key]}: {report.shown_path(written)}")
    return 0


if __name__ == "__main__":
    from medic.cli import run_main
    sys.exit(run_main(main))
