"""``medic predict --run ID|latest [--checkpoint best|last|PATH] --input FOLDER_OR_FILE --output FOLDER``:
segment new volumes with a trained run's model (``medic.train.predict``)."""

from __future__ import annotations

from pathlib import Path

from medic.cli import ArgParser, add_root_option
from medic.errors import MedicError


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(prog="medic predict", description="Segment new volumes with a run's model: one mask "
                       "per input, of the input's shape and affine and under its file name.")
    parser.add_argument("--run", default="latest", metavar="ID", help="the run (YYYYmmdd_HHMMSS, or latest)")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                        help="which weights: best_model.pth, last.pth, or a checkpoint file (default: best)")
    parser.add_argument("--input", required=True, metavar="FOLDER_OR_FILE",
                        help="a NIfTI volume, or a folder of them (nnU-Net channel files case_0000, "
                             "case_0001, ... make one case)")
    parser.add_argument("--output", required=True, metavar="FOLDER", help="where the masks go (created)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto = CUDA when available")
    parser.add_argument("--evaluate", metavar="LABELS", help="then score the masks against this folder of labels "
                        "(medic evaluate; classes from a dataset.json beside it)")
    add_root_option(parser)
    args = parser.parse_args(argv)
    if args.evaluate and not Path(args.evaluate).is_dir():
        raise MedicError(f"--evaluate {args.evaluate} is not a folder of labels")
    from medic.train.predict import predict  # torch loads here, after the arguments are good
    predict(args.input, args.output, run=args.run, checkpoint=args.checkpoint, root=args.root,
            device=args.device, log=lambda line: print(line, flush=True))
    if args.evaluate:
        from medic.train.evaluate import evaluate
        meta = Path(args.evaluate).parent / "dataset.json"
        evaluate(args.output, args.evaluate, labels=meta if meta.is_file() else None, root=args.root,
                 log=lambda line: print(line, flush=True))
    return 0
