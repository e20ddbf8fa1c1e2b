"""Benchmark: what a sweep costs per trial against a bare ``medic train`` of the same trial.

    python benchmarks/bench_sweep.py                 # 3 rounds, 2 epochs of 16 images 32x32
    python benchmarks/bench_sweep.py --rounds 5 --epochs 5 --num_samples 64

Each round runs, one after the other (the order alternates between rounds): ``medic train`` with
the trial's options, and ``medic sweep --grid lr=<the same lr>`` with the same options (one trial:
the driver, papermill, a kernel, ``01_train.ipynb``, then the same ``medic train`` inside it).
Reported: wall time of each (median over rounds) and the difference, the per-trial overhead of a
sweep; and the trial's own time as the sweep records it (``summary.csv`` ``time_s``: from the
trial's start to its end, papermill and the kernel included, the driver's start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_env, fmt, load_average, run_cmd, table  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--num_samples", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="", help="JSON file for the results")
    args = p.parse_args()
    flags = ["--epochs", str(args.epochs), "--num_samples", str(args.num_samples), "--image_size",
             str(args.image_size), "--threads", str(args.threads), "--log_interval", "5"]
    env = child_env(args.threads)
    bare, swept, trial = [], [], []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="medic-bench-sweep-") as tmp:
        for r in range(args.rounds):
            order = ("train", "sweep") if r % 2 == 0 else ("sweep", "train")
            for variant in order:
                work = Path(tmp) / f"{variant}_{r}"
                work.mkdir()
                if variant == "train":
                    bare.append(run_cmd([sys.executable, "-m", "medic.cli", "train", "--lr", "0.001", *flags],
                                        env, work / "out.log", 900))
                else:
                    swept.append(run_cmd([sys.executable, "-m", "medic.cli", "sweep", "--grid", "lr=0.001", *flags],
                                         env, work / "out.log", 900))
                    summary = next((work / "analysis" / "sweeps").glob("sweep_*/summary.csv")).read_text()
                    trial.append(float(summary.splitlines()[1].split(",")[-3]))
    b, s, t = (statistics.median(v) for v in (bare, swept, trial))
    rows = [["bare medic train", fmt(b), "-"], ["medic sweep, 1 trial (driver included)", fmt(s), fmt(s - b)],
            ["  the trial alone (papermill + kernel + training)", fmt(t), fmt(t - b)]]
    print(f"{args.rounds} rounds, {args.epochs} epochs of {args.num_samples} images {args.image_size}x"
          f"{args.image_size}, {args.threads} thread(s); load average before {load_before}, after {load_average()}")
    print(table(["variant", "wall s (median)", "overhead s"], rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"bare": bare, "sweep": swept, "trial": trial}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
