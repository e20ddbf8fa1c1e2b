"""``medic evaluate --pred DIR --truth DIR [--labels dataset.json] [--metrics dice,hd95,nsd]``:
score masks against labels with validation's metrics (``medic.train.evaluate``)."""

from __future__ import annotations

from medic.cli import ArgParser, add_root_option


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic evaluate", description="Score predicted masks against labels, matched by case "
                       "name, with validation's metrics and empty-class rule; writes a per-case table and a summary.")
    parser.add_argument("--pred", required=True, metavar="DIR", help="the predicted masks")
    parser.add_argument("--truth", required=True, metavar="DIR", help="the labels (e.g. a data set's labelsTr/)")
    parser.add_argument("--labels", metavar="PATH", help="dataset.json (or its folder) naming the classes")
    parser.add_argument("--metrics", default="dice", metavar="LIST", help="dice, hd95, nsd (default: dice)")
    parser.add_argument("--nsd_tolerance", "--nsd-tolerance", type=float, default=1.0, metavar="MM",
                        help="NSD tolerance in mm (default: 1.0)")
    parser.add_argument("--output", metavar="DIR",
                        help="a new or empty folder for the tables (default: analysis/evaluations/eval_<timestamp>/)")
    add_root_option(parser)
    args = parser.parse_args(argv)
    from medic.train.evaluate import evaluate  # torch loads here, after the arguments are good
    evaluate(args.pred, args.truth, labels=args.labels, metrics=args.metrics, output=args.output,
             root=args.root, nsd_tolerance=args.nsd_tolerance, log=lambda line: print(line, flush=True))
    return 0
