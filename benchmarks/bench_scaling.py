"""Benchmark: DDP scaling on CPU — one process against two, with the cores split evenly.

    python benchmarks/bench_scaling.py                  # 1x1, 1x2, 2x1 (processes x threads)
    python benchmarks/bench_scaling.py --mode full      # adds 2x2 (oversubscribed), 3 rounds

Every setting is ``medic train`` on the default model with epoch logging; samples/s from its epoch
CSV, the first epoch left out. Settings alternate round by round. The goal is 2 processes at
≥ 1.5x the samples/s of 1 process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Section, Workload, fmt, load_average, median, run_medic, table, with_retry  # noqa: E402

GOAL = 1.5


def settings(mode: str) -> tuple[list[tuple[int, int]], Workload, int]:
    """(processes, threads) pairs, the workload and the number of rounds for a mode."""
    cores = os.cpu_count() or 2
    if mode == "smoke":
        return [(1, 1)], Workload(epochs=2, num_samples=8, image_size=16), 1
    pairs = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    if mode == "full":
        return pairs + [(2, cores)], Workload(epochs=4, num_samples=256), 3
    return pairs, Workload(epochs=3, num_samples=192), 1


def measure(pairs, base: Workload, rounds: int, work: Path, progress=print,
            failures: list | None = None) -> dict:
    runs: dict[tuple[int, int], list[float]] = {p: [] for p in pairs}
    failures = [] if failures is None else failures
    for r in range(rounds):
        order = pairs[r % len(pairs):] + pairs[:r % len(pairs)]
        for nproc, threads in order:
            w = Workload(**{**base.__dict__, "nproc": nproc, "threads": threads})
            res = with_retry(lambda: run_medic(w, work, f"p{nproc}t{threads}_{r}_{len(failures)}", []), failures)
            runs[(nproc, threads)].append(res.samples_per_s)
            progress(f"  round {r + 1}/{rounds} {w.label():<20} {res.samples_per_s:8.1f} samples/s "
                     f"(epochs {', '.join(f'{t:.2f}' for t in res.epoch_times)} s)")
    return runs


def report(runs: dict, base: Workload, failures: list[str] = ()) -> Section:
    med = {p: median(v) for p, v in runs.items()}
    one = {p: v for p, v in med.items() if p[0] == 1}
    two = {p: v for p, v in med.items() if p[0] == 2}
    best1 = max(one, key=one.get)
    ref = med.get((1, 1))
    rows = []
    for p, v in med.items():
        w = Workload(nproc=p[0], threads=p[1])
        rows.append([w.label(), fmt(v), f"{v / ref:.2f}x" if ref else "n/a",
                     f"{v / one[best1]:.2f}x", ", ".join(fmt(x) for x in runs[p])])
    body = (f"medic train, default model, {base.image_size}x{base.image_size}, batch {base.batch_size} per "
            f"process, {base.num_samples} samples/epoch, epoch logging; {os.cpu_count()} cores.\n\n")
    body += table(["processes x threads", "samples/s", "vs 1x1", f"vs best 1-process ({best1[0]}x{best1[1]})",
                   "each run"], rows)
    for failure in failures:
        body += f"\n\n**A run failed and was repeated**: {failure}"
    summary = []
    if two:
        best2 = max(two, key=two.get)
        ratio = two[best2] / one[best1]
        winner = max(med, key=med.get)
        body += (f"\n\nFastest setting: {winner[0]} process(es) x {winner[1]} thread(s). "
                 f"2 processes ({best2[0]}x{best2[1]}) vs the best single process ({best1[0]}x{best1[1]}): "
                 f"{ratio:.2f}x" + (f"; vs one process with one thread: {two[best2] / ref:.2f}x." if ref else ".")
                 + "\n")
        summary.append(["DDP scaling on CPU: 2 processes vs the best 1-process setting",
                        f"{ratio:.2f}x ({fmt(two[best2])} vs {fmt(one[best1])} samples/s; fastest: "
                        f"{winner[0]}x{winner[1]})", f"≥ {GOAL}x", "met" if ratio >= GOAL else "not met"])
    return Section("DDP scaling on CPU", body, summary,
                   {"runs": {f"{p[0]}x{p[1]}": v for p, v in runs.items()}, "load_average": load_average()})


def run(mode: str = "quick", work: Path | None = None, progress=print) -> Section:
    pairs, base, rounds = settings(mode)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=work))
    failures: list[str] = []
    try:
        runs = measure(pairs, base, rounds, tmp, progress, failures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, base, failures)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="quick", choices=("smoke", "quick", "full"))
    args = p.parse_args(argv)
    print(run(args.mode).body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
