"""Benchmark: what a sweep costs per trial against a bare ``medic train`` of the same trial.

    python benchmarks/bench_sweep.py                 # 3 rounds, 2 epochs of 16 images 32x32
    python benchmarks/bench_sweep.py --rounds 5 --epochs 5 --num_samples 64
    SLURM_CONF=... python benchmarks/bench_sweep.py --slurm  # and the same trial as a SLURM job

Each round runs, one after the other (the order alternates between rounds): ``medic train`` with
the trial's options, and ``medic sweep --grid lr=<the same lr>`` with the same options (one trial:
the driver, papermill, a kernel, ``01_train.ipynb``, then the same ``medic train`` inside it).
Reported: wall time of each (median over rounds) and the difference, the per-trial overhead of a
sweep; and the trial's own time as the sweep records it (``summary.csv`` ``time_s``: from the
trial's start to its end, papermill and the kernel included, the driver's start-up excluded).
With ``--slurm``, a third variant: ``medic sweep --launcher slurm`` (the trial a batch job that
runs the same notebook on a node), and the job's wait from submission to its start on the node.
"""

from __future__ import annotations

import argparse
import csv
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
    p.add_argument("--slurm", action="store_true", help="also the trial as a SLURM job (--launcher slurm)")
    p.add_argument("--out", default="", help="JSON file for the results")
    args = p.parse_args()
    flags = ["--epochs", str(args.epochs), "--num_samples", str(args.num_samples), "--image_size",
             str(args.image_size), "--threads", str(args.threads), "--log_interval", "5"]
    env = child_env(args.threads)
    bare, swept, trial, queued = [], [], [], []
    slurm_swept: list[float] = []
    slurm_trial: list[float] = []
    load_before = load_average()
    variants = ["train", "sweep"] + (["slurm"] if args.slurm else [])
    with tempfile.TemporaryDirectory(prefix="medic-bench-sweep-") as tmp:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for variant in order:
                work = Path(tmp) / f"{variant}_{r}"
                work.mkdir()
                if variant == "train":
                    bare.append(run_cmd([sys.executable, "-m", "medic.cli", "train", "--lr", "0.001", *flags],
                                        env, work / "out.log", 900))
                    continue
                extra = ["--launcher", "slurm"] if variant == "slurm" else []
                wall = run_cmd([sys.executable, "-m", "medic.cli", "sweep", "--grid", "lr=0.001", *extra, *flags],
                               env, work / "out.log", 900)
                with open(next((work / "analysis" / "sweeps").glob("sweep_*/summary.csv")), newline="") as f:
                    seconds = float(next(csv.DictReader(f))["time_s"])
                (slurm_swept if variant == "slurm" else swept).append(wall)
                (slurm_trial if variant == "slurm" else trial).append(seconds)
                if variant == "slurm":
                    queued.append(job_wait(next((work / "metrics").glob("run_*.json"))))
    b, s, t = (statistics.median(v) for v in (bare, swept, trial))
    rows = [["bare medic train", fmt(b), "-"], ["medic sweep, 1 trial (driver included)", fmt(s), fmt(s - b)],
            ["  the trial alone (papermill + kernel + training)", fmt(t), fmt(t - b)]]
    if args.slurm:
        ss, st, q = (statistics.median(v) for v in (slurm_swept, slurm_trial, queued))
        rows += [["medic sweep --launcher slurm, 1 trial (driver included)", fmt(ss), fmt(ss - b)],
                 ["  the trial alone (sbatch + queue + papermill + kernel + training)", fmt(st), fmt(st - b)],
                 ["  of which: submitted -> started on the node", fmt(q), "-"]]
    print(f"{args.rounds} rounds, {args.epochs} epochs of {args.num_samples} images {args.image_size}x"
          f"{args.image_size}, {args.threads} thread(s); load average before {load_before}, after {load_average()}")
    print(table(["variant", "wall s (median)", "overhead s"], rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"bare": bare, "sweep": swept, "trial": trial, "slurm_sweep": slurm_swept,
                                              "slurm_trial": slurm_trial, "slurm_queued": queued}, indent=1))
    return 0


def job_wait(sidecar: Path) -> float:
    """Seconds from the trial job's submission to its start on the node (the run's record)."""
    import time
    info = json.loads(sidecar.read_text())["slurm"]
    stamp = "%Y-%m-%d %H:%M:%S"
    return time.mktime(time.strptime(info["started"], stamp)) - time.mktime(time.strptime(info["submitted"], stamp))


if __name__ == "__main__":
    sys.exit(main())
