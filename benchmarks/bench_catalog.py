"""Benchmark: ``medic runs`` on a lab's worth of runs — cold, again with nothing changed, and after
a few runs grew by one epoch — against the naive listing (one ``pandas.read_csv`` per file).

    python benchmarks/bench_catalog.py                 # 10,000 runs
    python benchmarks/bench_catalog.py --runs 1000

The project holds seed-format epoch CSVs of 50 epochs (the nine standard columns), 2% of them with
a sidecar like the trainer's, plus one CSV with a text in a loss column and one cut mid-line (a
run killed while writing). Each ``medic runs`` is one fresh process, timed from its start to its
exit (interpreter start-up and imports included), with its own peak RSS (``VmHWM``):

1. **cold**: no catalog cache (the first listing of the project);
2. **unchanged**: the same again;
3. **after growth**: 10 runs got one more epoch (read from where the last reading stopped);
4. **naive**: one process that reads every epoch CSV with ``pd.read_csv`` and takes each run's
   epochs, best and time from the frame — the least a listing without a cache does.

Then, in one process (a notebook's kernel): ``medic.catalog(root)`` with the cache warm, and with a
filter (``status="completed", top=10``). The grown runs must show their new epoch counts, and the
damaged CSV its problem, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_bigcsv import AS_MAIN, PEAK  # noqa: E402
from common import PY, REPO, Section, table  # noqa: E402

EPOCHS, SIDECAR_SHARE, GROWN = 50, 0.02, 10
GOALS = {"cold": 15.0, "unchanged": 1.5, "grown": 2.0}
PEAK_GOAL_MB = 300.0
HEADER = ("Epoch,Avg_Loss,Min_Batch_Loss,Max_Batch_Loss,Learning_Rate,Epoch_Time_Seconds,Best_Loss_So_Far,"
          "Is_Best_Model,Timestamp\n")

NAIVE = """
import glob, os, sys, pandas as pd
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "metrics", "epoch_metrics_*.csv"))):
    try:
        e = pd.read_csv(path)
        rows.append({"run": os.path.basename(path), "epochs": int(e["Epoch"].iloc[-1]),
                     "best": float(e["Best_Loss_So_Far"].iloc[-1]), "time": float(e["Epoch_Time_Seconds"].sum())})
    except Exception as err:
        rows.append({"run": os.path.basename(path), "problem": str(err)})
print(pd.DataFrame(rows).to_string(max_rows=20))
"""

IN_PROCESS = """
import json, sys, time
import medic
root = sys.argv[1]
import os, pandas
os.unlink(os.path.join(root, "analysis", ".cache", "catalog.json"))
t, c = time.perf_counter(), time.process_time(); medic.catalog(root)
cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
t, c = time.perf_counter(), time.process_time(); frame = medic.catalog(root)
warm, warm_cpu = time.perf_counter() - t, time.process_time() - c
t, c = time.perf_counter(), time.process_time(); top = medic.catalog(root, status="completed", top=10)
filtered, filtered_cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"cold_s": cold, "cold_cpu_s": cold_cpu, "warm_s": warm, "warm_cpu_s": warm_cpu, "filtered_s": filtered, "filtered_cpu_s": filtered_cpu,
                  "runs": len(frame), "top": len(top)}))
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB, ``VmHWM``) of one whole
    process. The CPU time is what the machine's load does not inflate: on a shared machine the
    wall time also counts the waits for a free core."""
    code = PEAK + (AS_MAIN if cmd[1] == "-m" else cmd[2])
    hwm = cwd / ".bench-hwm"
    env = dict(os.environ, PYTHONPATH=str(REPO), BENCH_HWM=str(hwm))
    t0 = time.perf_counter()
    proc = subprocess.Popen([cmd[0], "-c", code, *cmd[3:]], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed:\n{err[-2000:]}")
    peak_mb = int(hwm.read_text()) / 1024
    hwm.unlink()
    return seconds, usage.ru_utime + usage.ru_stime, peak_mb


def epoch_line(e: int, loss: float, best: float, rng: random.Random, stamp: float) -> str:
    lo, hi = loss * (1 - 0.1 * rng.random()), loss * (1 + 0.1 * rng.random())
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
    return (f"{e},{loss:.6f},{lo:.6f},{hi:.6f},{0.001 * 0.97 ** e:.8f},{30 + 5 * rng.random():.2f},"
            f"{best:.6f},{loss <= best},{when}\n")


def write_runs(root: Path, runs: int, seed: int = 0) -> list[str]:
    """``runs`` seed-format runs of EPOCHS epochs (2% with a sidecar); returns their ids."""
    rng = random.Random(seed)
    metrics = root / "metrics"
    metrics.mkdir(parents=True)
    base = time.mktime((2025, 1, 1, 0, 0, 0, 0, 1, -1))
    ids = []
    for k in range(runs):
        start = base + 3600 * k
        run_id = time.strftime("%Y%m%d_%H%M%S", time.localtime(start))
        ids.append(run_id)
        lines, best, loss0 = [HEADER], float("inf"), 1 + rng.random()
        for e in range(1, EPOCHS + 1):
            loss = loss0 / e ** 0.5 * (1 + 0.05 * rng.random())
            best = min(best, loss)
            lines.append(epoch_line(e, loss, best, rng, start + 32 * e))
        (metrics / f"epoch_metrics_{run_id}.csv").write_text("".join(lines))
        if rng.random() < SIDECAR_SHARE:
            config = {"epochs": EPOCHS, "lr": rng.choice([0.001, 0.003]), "batch_size": 4, "monitor": "Avg_Loss"}
            (metrics / f"run_{run_id}.json").write_text(json.dumps({
                "run_id": run_id, "status": "completed", "start_time": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                     time.localtime(start)),
                "end_time": None, "epochs": EPOCHS, "world_size": 1, "monitor": "Avg_Loss", "monitor_mode": "min",
                "pid": None, "host": None, "config": config}))
    bad, cut = metrics / f"epoch_metrics_{ids[1]}.csv", metrics / f"epoch_metrics_{ids[2]}.csv"
    bad.write_text(bad.read_text().replace("\n3,", "\n3,oops", 1))  # a text in Avg_Loss: a problem
    cut.write_bytes(cut.read_bytes()[:-20])  # killed mid-line: the complete rows count
    return ids


def grow(root: Path, ids: list[str]) -> None:
    rng = random.Random(1)
    for run_id in ids:
        with open(root / "metrics" / f"epoch_metrics_{run_id}.csv", "a") as f:
            f.write(epoch_line(EPOCHS + 1, 0.01, 0.01, rng, time.time()))


def measure(runs: int, work: Path) -> dict:
    root = work / "project"
    t = time.perf_counter()
    ids = write_runs(root, runs)
    made = time.perf_counter() - t
    medic_runs = [PY, "-m", "medic.cli", "runs", "--root", str(root)]
    r: dict = {"runs": runs, "epochs": EPOCHS, "generate_s": made, "seconds": {}, "cpu_s": {}, "peak_mb": {},
               "load_before": os.getloadavg()[0]}
    for name in ("cold", "unchanged", "grown", "naive"):
        if name == "grown":
            grow(root, ids[-GROWN:])
        cmd = [PY, "-c", NAIVE, str(root)] if name == "naive" else medic_runs
        r["seconds"][name], r["cpu_s"][name], r["peak_mb"][name] = timed(cmd, work)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([PY, "-c", IN_PROCESS, str(root)], capture_output=True, text=True, env=env, check=True)
    r["in_process"] = json.loads(out.stdout.strip().splitlines()[-1])
    check = subprocess.run(medic_runs + ["--json"], capture_output=True, text=True, env=env, check=True)
    rows = {row["run_id"]: row for row in json.loads(check.stdout)}
    grown_ok = all(rows[i]["epochs_done"] == EPOCHS + 1 for i in ids[-GROWN:])
    problem_ok = "Avg_Loss is 'oops" in rows[ids[1]]["problem"] and rows[ids[2]]["epochs_done"] == EPOCHS - 1
    others_ok = sum(1 for row in rows.values() if row["problem"]) == 1 and len(rows) == runs
    if not (grown_ok and problem_ok and others_ok):
        raise RuntimeError(f"wrong listing: grown runs {grown_ok}, damaged CSVs {problem_ok}, the rest {others_ok}")
    r["load_after"] = os.getloadavg()[0]
    r["ratio"] = {k: r["seconds"]["naive"] / r["seconds"][k] for k in ("cold", "unchanged", "grown")}
    return r


def to_markdown(r: dict) -> str:
    s, c, m, ip = r["seconds"], r["cpu_s"], r["peak_mb"], r["in_process"]
    per_run = (lambda k: f"{s[k] / r['runs'] * 1e3:.2f} ms ({c[k] / r['runs'] * 1e3:.2f} ms CPU)")
    rows = [["`medic runs`, cold (no cache)", f"{s['cold']:.2f} s", f"{c['cold']:.2f} s", f"{m['cold']:.0f} MB",
             per_run("cold"), f"{r['ratio']['cold']:.1f}x", f"≤ {GOALS['cold']:.0f} s"],
            ["`medic runs`, nothing changed", f"{s['unchanged']:.2f} s", f"{c['unchanged']:.2f} s",
             f"{m['unchanged']:.0f} MB", "", f"{r['ratio']['unchanged']:.1f}x", f"≤ {GOALS['unchanged']} s"],
            [f"`medic runs`, after {GROWN} runs grew by one epoch", f"{s['grown']:.2f} s", f"{c['grown']:.2f} s",
             f"{m['grown']:.0f} MB", "", f"{r['ratio']['grown']:.1f}x", f"≤ {GOALS['grown']:.0f} s"],
            ["naive: one `pd.read_csv` per file", f"{s['naive']:.2f} s", f"{c['naive']:.2f} s", f"{m['naive']:.0f} MB",
             per_run("naive"), "1x", ""],
            ["`medic.catalog(root)` in a running kernel, no cache", f"{ip['cold_s']:.2f} s",
             f"{ip['cold_cpu_s']:.2f} s", "", f"{ip['cold_s'] / r['runs'] * 1e3:.2f} ms "
             f"({ip['cold_cpu_s'] / r['runs'] * 1e3:.2f} ms CPU)", "", "≤ 1.5 ms per run"],
            ["`medic.catalog(root)` in a running kernel, cache warm", f"{ip['warm_s']:.2f} s",
             f"{ip['warm_cpu_s']:.2f} s", "", "", "", ""],
            ["`medic.catalog(root, status=\"completed\", top=10)`", f"{ip['filtered_s']:.2f} s",
             f"{ip['filtered_cpu_s']:.2f} s", "", "", "", ""]]
    return (f"{r['runs']:,} runs of {r['epochs']} epochs ({SIDECAR_SHARE:.0%} with a sidecar, one CSV with a "
            "text in a loss column, one cut mid-line); whole processes, start-up and imports included; "
            f"load average {r['load_before']:.1f} before, {r['load_after']:.1f} after ({os.cpu_count()} cores):\n\n"
            + table(["listing", "wall", "CPU", "peak RSS", "per run", "vs naive", "goal"], rows))


def run(mode: str, work: Path) -> Section:
    runs = {"smoke": 200, "quick": 2_000, "full": 10_000}[mode]
    tmp = Path(tempfile.mkdtemp(prefix="bench-catalog-", dir=work))
    try:
        r = measure(runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    full = runs >= 10_000  # the goals are for 10,000 runs: a smaller folder only checks the wiring
    summary = [[f"`medic runs`, {runs:,} runs, {name}", f"{r['seconds'][name]:.2f} s", f"≤ {GOALS[name]:g} s",
                ("met" if r["seconds"][name] <= GOALS[name] else "not met") if full else "n/a (10,000 runs: --full)"]
               for name in ("cold", "unchanged", "grown")]
    peak = max(r["peak_mb"][k] for k in ("cold", "unchanged", "grown"))
    summary.append([f"`medic runs` peak memory, {runs:,} runs", f"{peak:.0f} MB", f"≤ {PEAK_GOAL_MB:.0f} MB",
                    ("met" if peak <= PEAK_GOAL_MB else "not met") if full else "n/a (10,000 runs: --full)"])
    return Section("Run catalog at scale", to_markdown(r), summary, r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    try:
        r = measure(args.runs, work)
        print(to_markdown(r))
        print(json.dumps(r, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
