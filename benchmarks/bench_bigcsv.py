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

Two more measurements show what bounds the whole-process times:

5. **notebook**: one long-lived process, as a notebook re-running its cell on a live run:
   libraries imported once, the cell run once (cold), the file grown by 50,000 rows, then the
   cell timed again — medic's ``analyze_batches`` against the naive cell body, alternating;
6. **floor**: a process that imports numpy, pandas and matplotlib and draws and saves medic's
   three-panel figure of an already analysed file (no CSV read, no analysis): the fixed cost of
   any whole process that shows the figure.

Peak memory is each process's own high-water mark (``VmHWM``, read as it exits): Linux counts a
parent's size at the fork into a child's ``ru_maxrss``, which would make every process here look
as big as the benchmark that started it.
"""

from __future__ import annotations

import argparse
import json
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


# each measured process reports its own peak (VmHWM: its address space's high-water mark, which,
# unlike ru_maxrss, starts from nothing at exec) into the file named by BENCH_HWM as it exits
PEAK = """import atexit, os
def _peak():
    with open("/proc/self/status") as f:
        kb = [line.split()[1] for line in f if line.startswith("VmHWM")]
    with open(os.environ["BENCH_HWM"], "w") as out:
        out.write(kb[0] if kb else "")
atexit.register(_peak)
"""
AS_MAIN = "import runpy, sys\nsys.argv[0] = 'medic'\nrunpy.run_module('medic.cli', run_name='__main__', alter_sys=True)\n"


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process (``cmd``: ``[python, "-c", code, ...]``
    or ``[python, "-m", "medic.cli", ...]``)."""
    if cmd[1] == "-m":
        cmd = [cmd[0], "-c", PEAK + AS_MAIN, *cmd[3:]]
    else:
        cmd = [cmd[0], "-c", PEAK + cmd[2], *cmd[3:]]
    hwm = cwd / ".bench-hwm"
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg", BENCH_HWM=str(hwm))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {proc.returncode}:\n{err[-2000:]}")
    try:
        peak_mb = int(hwm.read_text()) / 1024
        hwm.unlink()
    except (OSError, ValueError):
        peak_mb = usage.ru_maxrss / 1024  # may include the parent's size at the fork
    return seconds, peak_mb


NOTEBOOK = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt, pandas as pd
from bench_bigcsv import GROWTH, grow
from medic.analysis.outputs import analyze_batches
from pathlib import Path
csv, root, rows, work = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[5]
analyze_batches(csv, root=root, lang="en")  # the cell's first run
grow(csv, GROWTH, rows)
t = time.perf_counter(); analyze_batches(csv, root=root, lang="en"); medic_s = time.perf_counter() - t
sys.argv[1:3] = [str(csv), work]
t = time.perf_counter()
""" + NAIVE_PLOT + """
naive_s = time.perf_counter() - t
print(json.dumps({"medic": medic_s, "naive": naive_s}))
"""

FLOOR = """
import pickle, sys
from medic.analysis.figures import batch_figure, save_figure
result = pickle.load(open(sys.argv[1], "rb"))
save_figure(batch_figure(result), sys.argv[2] + "/floor.png")
"""


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
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from bench_analysis import "
                    "write_batch_csv; write_batch_csv(sys.argv[2], int(sys.argv[3]), nonfinite=3)",
                    str(HERE), str(csv), str(rows)], check=True)
    size = csv.stat().st_size
    # the analysed file, pickled for the floor process (made by a child too)
    result = work / "result.pkl"
    subprocess.run([sys.executable, "-c", "import pickle, sys; from medic.analysis.batches import analyze_batch_file; "
                    "pickle.dump(analyze_batch_file(sys.argv[1]), open(sys.argv[2], 'wb'))", str(csv), str(result)],
                   check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    medic = [sys.executable, "-m", "medic.cli", "analyze", "--batch_metrics", "--metrics_file", str(csv),
             "--root", str(project), "--lang", "en"]
    naive = [sys.executable, "-c", NAIVE, str(csv), str(work)]
    floor = [sys.executable, "-c", FLOOR, str(result), str(work)]
    notebook = [sys.executable, "-c", NOTEBOOK, str(csv), str(project), str(rows), str(HERE), str(work)]
    runs: dict[str, list[tuple[float, float]]] = {"cold": [], "grown": [], "naive": [], "floor": []}
    cells: list[dict] = []
    for _ in range(rounds):
        shutil.rmtree(project / "analysis" / ".cache", ignore_errors=True)
        runs["cold"].append(timed(medic, project))
        grow(csv, GROWTH, rows)
        runs["grown"].append(timed(medic, project))
        runs["naive"].append(timed(naive, project))
        runs["floor"].append(timed(floor, project))
        with open(csv, "r+b") as f:
            f.truncate(size)
        shutil.rmtree(project / "analysis" / ".cache", ignore_errors=True)
        cells.append(json.loads(run_child(notebook, project)))
        with open(csv, "r+b") as f:
            f.truncate(size)
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    cell = {k: statistics.median(c[k] for c in cells) for k in ("medic", "naive")}
    return {"rows": rows, "csv_mb": size / 1e6, "growth": GROWTH, "runs": runs, "median_s": med,
            "peak_mb": {k: max(m for _, m in v) for k, v in runs.items()},
            "cold_ratio": med["naive"] / med["cold"], "grown_ratio": med["naive"] / med["grown"],
            "cells": cells, "cell_s": cell, "cell_ratio": cell["naive"] / cell["medic"],
            "floor_ratio": med["naive"] / med["floor"]}


def run_child(cmd: list[str], cwd: Path) -> str:
    """A child's stdout (it must succeed)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def to_markdown(r: dict) -> str:
    rows = [["medic analyze --batch_metrics, cold (no cache)", f"{r['median_s']['cold']:.2f} s",
             f"{r['peak_mb']['cold']:.0f} MB", f"**{r['cold_ratio']:.1f}x**"],
            [f"medic analyze --batch_metrics, after {r['growth']:,} more rows (cache)",
             f"{r['median_s']['grown']:.2f} s", f"{r['peak_mb']['grown']:.0f} MB", f"**{r['grown_ratio']:.1f}x**"],
            ["naive: pd.read_csv + matplotlib, every point", f"{r['median_s']['naive']:.2f} s",
             f"{r['peak_mb']['naive']:.0f} MB", "1x"],
            ["floor: a process that imports numpy, pandas, matplotlib and only draws and saves the figure",
             f"{r['median_s']['floor']:.2f} s", f"{r['peak_mb']['floor']:.0f} MB", f"({r['floor_ratio']:.1f}x: the most "
             "any whole process can reach)"],
            [f"notebook cell run again after {r['growth']:,} more rows (one process, libraries imported): medic "
             "`analyze_batches` vs the naive cell", f"{r['cell_s']['medic']:.2f} s vs {r['cell_s']['naive']:.2f} s",
             "", f"**{r['cell_ratio']:.1f}x**"]]
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
                f"≥ {GROWTH_GOAL:.0f}x", "met" if r["grown_ratio"] >= GROWTH_GOAL else
                f"not met (a process that only draws the figure: {r['floor_ratio']:.1f}x)"],
               ["the same in a notebook re-running its cell (libraries imported once)",
                f"{r['cell_s']['medic']:.2f} s vs {r['cell_s']['naive']:.2f} s: {r['cell_ratio']:.1f}x",
                f"≥ {GROWTH_GOAL:.0f}x", "met" if r["cell_ratio"] >= GROWTH_GOAL else "not met"]]
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
