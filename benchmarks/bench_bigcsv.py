"""Benchmark: ``medic analyze --batch_metrics`` on a 10M-row batch CSV as whole processes, cold
and again after the file grew, against the naive way (``pd.read_csv`` + matplotlib, every point).

    python benchmarks/bench_bigcsv.py                  # 10M rows, 2 rounds
    python benchmarks/bench_bigcsv.py --rows 200000 --rounds 1

Each measurement is one fresh process, timed from its start to its exit (interpreter start-up
and imports included), with its own peak RSS (``wait4``). A round:

1. **cold**: ``medic analyze --batch_metrics`` with no cache (the first analysis of the file);
2. the file grows by 50,000 rows (a live run, two and a half hours later at the guide's pace);
3. **after growth**: the same command again (the cache covers all but the new rows);
4. **naive**, on the grown file: ``pd.read_csv`` with defaults and every point drawn with
   matplotlib (the same script as ``bench_analysis.py``'s, imports inside the clock).

The file is then cut back to its first size for the next round, and the cache removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_analysis import BATCHES_PER_EPOCH, NAIVE_PLOT, write_batch_csv  # noqa: E402
from common import REPO, Section, table  # noqa: E402

GROWTH = 50_000
COLD_GOAL, GROWTH_GOAL = 4.0, 10.0

NAIVE = """
import sys
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt, pandas as pd
""" + NAIVE_PLOT


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {proc.returncode}:\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def grow(path: Path, rows: int, first_row: int) -> None:
    """Append ``rows`` rows that continue the file (its last epoch, then new ones)."""
    extra = path.with_suffix(".grow")
    write_batch_csv(extra, rows, seed=1, spikes=0)
    with open(extra, "rb") as src:
        lines = src.read().split(b"\n")[1:rows + 1]
    extra.unlink()
    out = []
    for i, line in enumerate(lines):
        k = first_row + i
        rest = line.split(b",", 2)[2]
        out.append(b"%d,%d,%s\n" % (k // BATCHES_PER_EPOCH + 1, k % BATCHES_PER_EPOCH, rest))
    with open(path, "ab") as dst:
        dst.write(b"".join(out))


def measure(rows: int, rounds: int, work: Path) -> dict:
    project = work / "project"
    (project / "metrics").mkdir(parents=True)
    csv = project / "metrics" / "batch_metrics_20250101_000000.csv"
    write_batch_csv(csv, rows, nonfinite=3)
    size = csv.stat().st_size
    medic = [sys.executable, "-m", "medic.cli", "analyze", "--batch_metrics", "--metrics_file", str(csv),
             "--root", str(project), "--lang", "en"]
    naive = [sys.executable, "-c", NAIVE, str(csv), str(work)]
    runs: dict[str, list[tuple[float, float]]] = {"cold": [], "grown": [], "naive": []}
    for _ in range(rounds):
        shutil.rmtree(project / "analysis" / ".cache", ignore_errors=True)
        runs["cold"].append(timed(medic, project))
        grow(csv, GROWTH, rows)
        runs["grown"].append(timed(medic, project))
        runs["naive"].append(timed(naive, project))
        with open(csv, "r+b") as f:
            f.truncate(size)
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    return {"rows": rows, "csv_mb": size / 1e6, "growth": GROWTH, "runs": runs, "median_s": med,
            "peak_mb": {k: max(m for _, m in v) for k, v in runs.items()},
            "cold_ratio": med["naive"] / med["cold"], "grown_ratio": med["naive"] / med["grown"]}


def to_markdown(r: dict) -> str:
    rows = [["medic analyze --batch_metrics, cold (no cache)", f"{r['median_s']['cold']:.2f} s",
             f"{r['peak_mb']['cold']:.0f} MB", f"**{r['cold_ratio']:.1f}x**"],
            [f"medic analyze --batch_metrics, after {r['growth']:,} more rows (cache)",
             f"{r['median_s']['grown']:.2f} s", f"{r['peak_mb']['grown']:.0f} MB", f"**{r['grown_ratio']:.1f}x**"],
            ["naive: pd.read_csv + matplotlib, every point", f"{r['median_s']['naive']:.2f} s",
             f"{r['peak_mb']['naive']:.0f} MB", "1x"]]
    rounds = "; ".join(f"{k}: " + ", ".join(f"{s:.2f}" for s, _ in v) for k, v in r["runs"].items())
    return (f"{r['rows']:,} batch rows ({r['csv_mb']:.0f} MB), whole processes (start-up and imports "
            f"included), median of {len(r['runs']['cold'])} rounds ({rounds} s):\n\n"
            + table(["process", "wall", "peak RSS", "speed-up vs naive"], rows))


def run(mode: str, work: Path) -> Section:
    rows, rounds = {"smoke": (20_000, 1), "quick": (10_000_000, 2), "full": (10_000_000, 3)}[mode]
    tmp = Path(tempfile.mkdtemp(prefix="bench-bigcsv-", dir=work))
    try:
        r = measure(rows, rounds, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = [[f"`medic analyze --batch_metrics`, {rows:,} rows, cold, whole process vs naive",
                f"{r['median_s']['cold']:.2f} s vs {r['median_s']['naive']:.2f} s: {r['cold_ratio']:.1f}x",
                f"≥ {COLD_GOAL:.0f}x", "met" if r["cold_ratio"] >= COLD_GOAL else "not met"],
               [f"the same after the file grew by {GROWTH:,} rows",
                f"{r['median_s']['grown']:.2f} s: {r['grown_ratio']:.1f}x",
                f"≥ {GROWTH_GOAL:.0f}x", "met" if r["grown_ratio"] >= GROWTH_GOAL else "not met"]]
    return Section("Big batch CSV: cold and after growth", to_markdown(r), summary, r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-bigcsv-"))
    try:
        print(to_markdown(measure(args.rows, args.rounds, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
