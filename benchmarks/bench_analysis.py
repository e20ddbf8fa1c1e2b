"""Benchmark: ``medic analyze --batch_metrics`` and the ``medic watch`` poll at scale.

    python benchmarks/bench_analysis.py            # 34k and 1M batch rows (a minute or two)
    python benchmarks/bench_analysis.py --full     # adds 10M rows
    python benchmarks/bench_analysis.py --rows 2000 --poll-rows 5000   # a smoke run

For each size it writes a realistic batch CSV (Epoch, Batch, Loss, Learning_Rate, Timestamp;
171 batches per epoch as in the guide) and measures, each in a fresh process:

* medic: the library call behind ``medic analyze --batch_metrics`` (read, analyse, draw, save
  the PNG and the report), with its peak RSS;
* naive, as users write it by hand: ``pd.read_csv`` with defaults, then every point drawn —
  with matplotlib (plus a per-epoch groupby and a rolling mean), and with seaborn's
  ``lineplot`` defaults (mean and bootstrapped 95% CI per x). The matplotlib way runs up to 1M
  rows (10M with --full, when 8 GB are free: it needs about 2 GB there), the seaborn way up to
  34k (1M with --full: minutes); beyond, their time is extrapolated linearly and marked so.

Then the watch poll: ``CsvTail.poll()`` picking up one appended row of a 1M-row file, against
re-reading the whole file with pandas. The Markdown table is printed and written to
``benchmarks/out/analysis.md``; ``run(quick=True)`` returns the rows for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
BATCHES_PER_EPOCH = 171
NAIVE_MAX_ROWS = 1_000_000


# --- realistic batch CSVs, written fast (vectorised formatting, no per-row Python) ------------

def _int_field(values: np.ndarray, width: int) -> np.ndarray:
    """Decimal digits of non-negative ints, right-aligned in ``width`` bytes, left pad = 0 bytes."""
    v = values.astype(np.int64)
    out = np.zeros((len(v), width), np.uint8)
    for k in range(width - 1, -1, -1):
        digit = v % 10
        out[:, k] = np.where((v > 0) | (k == width - 1), 48 + digit, 0)
        v = v // 10
    return out


def _fixed_field(values: np.ndarray, decimals: int) -> np.ndarray:
    """``values`` (0 <= v < 10) as ``d.ddd...`` with ``decimals`` digits."""
    q = np.round(values * 10 ** decimals).astype(np.int64)
    out = np.empty((len(q), decimals + 2), np.uint8)
    for k in range(decimals + 1, -1, -1):
        if k == 1:
            out[:, k] = ord(".")
            continue
        out[:, k] = 48 + q % 10
        q //= 10
    return out


def write_batch_csv(path: str | os.PathLike, rows: int, batches_per_epoch: int = BATCHES_PER_EPOCH,
                    seed: int = 0, spikes: int = 20, nonfinite: int = 0, chunk: int = 1_000_000) -> Path:
    """A batch CSV like the trainer writes: loss decaying with noise, a few spikes, an optional
    few NaN losses, a cosine learning rate per epoch, timestamps 0.085 s apart (14.5 s/epoch)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    epochs = -(-rows // batches_per_epoch)
    spike_rows = set(rng.choice(rows, size=min(spikes, rows), replace=False).tolist())
    bad_rows = set(rng.choice(rows, size=min(nonfinite, rows), replace=False).tolist())
    start = np.datetime64("2025-11-06T10:30:15", "s")
    with open(path, "wb") as f:
        f.write(b"Epoch,Batch,Loss,Learning_Rate,Timestamp\n")
        for lo in range(0, rows, chunk):
            i = np.arange(lo, min(rows, lo + chunk))
            epoch, batch = i // batches_per_epoch + 1, i % batches_per_epoch
            progress = i / max(1, rows - 1)
            loss = (0.06 + 0.55 * np.exp(-6 * progress)) * np.exp(rng.normal(0, 0.15, len(i)))
            for r in spike_rows:
                if lo <= r < lo + len(i):
                    loss[r - lo] += 1.5
            loss = np.clip(loss, 0.001, 9.999999)
            lr = 0.0005 * (1 + np.cos(np.pi * (epoch - 1) / epochs)) + 1e-6
            stamps = np.datetime_as_string(start + (i * 0.085).astype("timedelta64[s]"), unit="s")
            ts = np.frombuffer(stamps.astype("S19").tobytes(), np.uint8).reshape(-1, 19).copy()
            ts[:, 10] = ord(" ")
            sep = np.full((len(i), 1), ord(","), np.uint8)
            nl = np.full((len(i), 1), ord("\n"), np.uint8)
            table = np.hstack([_int_field(epoch, 9), sep, _int_field(batch, 7), sep, _fixed_field(loss, 6),
                               sep, _fixed_field(lr, 8), sep, ts, nl])
            flat = table.ravel()
            text = flat[flat != 0].tobytes()
            for r in sorted(bad_rows):
                if lo <= r < lo + len(i):  # the trainer writes a non-finite loss as "nan"
                    text = _replace_loss(text, r - lo, b"nan")
            f.write(text)
    return path


def _replace_loss(text: bytes, row: int, value: bytes) -> bytes:
    lines = text.split(b"\n")
    cells = lines[row].split(b",")
    cells[2] = value
    lines[row] = b",".join(cells)
    return b"\n".join(lines)


# --- measurements, each in a fresh interpreter ------------------------------------------------
# Every script imports its libraries (seaborn included) before the clock starts, and reports
# wall and CPU seconds and the peak RSS of its own process image (VmHWM: unlike ru_maxrss it is
# not inherited from the parent that forked it).

_PRELUDE = """
import json, sys, time
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt, pandas as pd, seaborn as sns
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
def report(t0, c0, base):
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                      "rss_mb": hwm(), "base_mb": base}))
"""

MEDIC_CHILD = _PRELUDE + """
from medic import analysis
from medic.analysis import figures
base, t0, c0 = hwm(), time.perf_counter(), time.process_time()
analysis.analyze_batches(sys.argv[1], sys.argv[2], "en")
report(t0, c0, base)
"""

# what people write by hand: read everything with the defaults, draw every point (a script with the
# batch CSV and an output folder as its arguments; bench_bigcsv.py runs it too)
NAIVE_PLOT = """
df = pd.read_csv(sys.argv[1])
per_epoch = df.groupby("Epoch")["Loss"].agg(["mean", "min", "max"])
fig, axes = plt.subplots(3, 1, figsize=(14, 12))
axes[0].plot(df.index, df["Loss"], lw=0.5)
axes[0].plot(df.index, df["Loss"].rolling(171).mean())
axes[1].fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"], alpha=0.2)
axes[1].plot(per_epoch.index, per_epoch["mean"])
axes[2].plot(df.index, df["Learning_Rate"])
fig.savefig(sys.argv[2] + "/naive.png", dpi=110)
"""
NAIVE_MPL_CHILD = _PRELUDE + """
sns.set_theme()
base, t0, c0 = hwm(), time.perf_counter(), time.process_time()
""" + NAIVE_PLOT + """
report(t0, c0, base)
"""

# the same with seaborn's defaults: each line is aggregated per x with a bootstrapped 95% CI
NAIVE_SNS_CHILD = _PRELUDE + """
sns.set_theme()
base, t0, c0 = hwm(), time.perf_counter(), time.process_time()
df = pd.read_csv(sys.argv[1]).reset_index()
fig, axes = plt.subplots(2, 1, figsize=(14, 8))
sns.lineplot(data=df, x="index", y="Loss", ax=axes[0], lw=0.5)
sns.lineplot(data=df, x="Epoch", y="Loss", ax=axes[1])
fig.savefig(sys.argv[2] + "/naive_sns.png", dpi=110)
report(t0, c0, base)
"""


def _child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         check=False)
    if out.returncode:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best_of(repeats: int, code: str, *args: str) -> dict:
    runs = [_child(code, *args) for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"])


def measure_poll(rows: int, work: Path, repeats: int = 30) -> dict:
    """One appended row picked up by ``CsvTail.poll`` vs a full ``pd.read_csv`` of the file."""
    import pandas as pd
    from medic.store.tail import CsvTail

    path = write_batch_csv(work / f"poll_{rows}.csv", rows, spikes=0)
    tail = CsvTail(path)
    tail.poll()  # the first poll reads what is there; watch pays it once
    poll_times, read_times = [], []
    epoch = rows // BATCHES_PER_EPOCH + 1
    with open(path, "ab") as f:
        for k in range(repeats):
            f.write(f"{epoch},{k},0.100000,0.00100000,2025-11-07 10:30:15\n".encode())
            f.flush()
            t = time.perf_counter()
            new = tail.poll()
            poll_times.append(time.perf_counter() - t)
            assert len(new) == 1, new
    for _ in range(3):
        t = time.perf_counter()
        pd.read_csv(path)
        read_times.append(time.perf_counter() - t)
    poll, full = statistics.median(poll_times), min(read_times)
    return {"rows": rows, "poll_s": poll, "full_read_s": full, "speedup": full / poll}


def run(quick: bool = True, sizes: list[int] | None = None, poll_rows: int = 1_000_000,
        repeats: int | None = None, work: str | os.PathLike | None = None) -> list[dict]:
    """Measure every size; returns one dict per table row (see ``to_markdown``).

    The matplotlib baseline runs up to 1M rows, the seaborn one up to 34k rows (1M with
    ``quick=False``); beyond that their time is extrapolated linearly and marked so.
    """
    sizes = sizes or ([34_200, 1_000_000] if quick else [34_200, 1_000_000, 10_000_000])
    repeats = repeats or (2 if quick else 3)
    # the matplotlib way at 10M needs about 2 GB: run it only where that is a small share
    big_ok = not quick and _mem_available_gb() >= 8
    limits = {"mpl": 10_000_000 if big_ok else NAIVE_MAX_ROWS, "sns": 34_200 if quick else NAIVE_MAX_ROWS}
    scripts = {"mpl": NAIVE_MPL_CHILD, "sns": NAIVE_SNS_CHILD}
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medic-bench-", dir=work) as tmp:
        tmp = Path(tmp)
        (tmp / "analysis").mkdir()
        per_row: dict[str, float] = {}
        for rows in sizes:
            csv = write_batch_csv(tmp / f"batch_metrics_{rows}.csv", rows, nonfinite=3)
            medic = _best_of(repeats, MEDIC_CHILD, str(csv), str(tmp))
            row = {"benchmark": "analyze --batch_metrics", "rows": rows, "csv_mb": csv.stat().st_size / 1e6,
                   "medic_s": medic["seconds"], "medic_cpu_s": medic["cpu_s"], "medic_rss_mb": medic["rss_mb"],
                   "medic_base_mb": medic["base_mb"]}
            for name, script in scripts.items():
                if rows <= limits[name] or not per_row.get(name):
                    naive = _best_of(1 if rows > NAIVE_MAX_ROWS or name == "sns" and rows > 100_000
                                     else repeats, script, str(csv), str(tmp))
                    per_row[name] = naive["seconds"] / rows
                    row.update({f"{name}_s": naive["seconds"], f"{name}_cpu_s": naive["cpu_s"],
                                f"{name}_rss_mb": naive["rss_mb"], f"{name}_measured": True})
                else:
                    row.update({f"{name}_s": per_row[name] * rows, f"{name}_rss_mb": float("nan"),
                                f"{name}_measured": False})
                row[f"speedup_{name}"] = row[f"{name}_s"] / row["medic_s"]
            results.append(row)
            csv.unlink()
        poll = measure_poll(poll_rows, tmp)
        results.append({"benchmark": "watch poll (1 new row)", **poll})
    return results


def _mem_available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2 ** 20
    except (OSError, StopIteration, ValueError):
        return 0.0


def _naive_cell(r: dict, name: str) -> str:
    if r[f"{name}_measured"]:
        return f"{r[name + '_s']:.2f} s ({r[name + '_cpu_s']:.2f} s), {r[name + '_rss_mb']:.0f} MB"
    return f"~{r[name + '_s']:.0f} s (extrapolated)"


def to_markdown(results: list[dict]) -> str:
    lines = ["| batch rows | CSV | medic analyze --batch_metrics: wall (CPU) | medic peak RSS | "
             "naive: read_csv + matplotlib, every point: wall (CPU), peak RSS | "
             "naive: read_csv + seaborn lineplot defaults | speed-up (wall) vs matplotlib / seaborn |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["benchmark"].startswith("analyze"):
            lines.append(f"| {r['rows']:,} | {r['csv_mb']:.1f} MB | {r['medic_s']:.2f} s ({r['medic_cpu_s']:.2f} s) | "
                         f"{r['medic_rss_mb']:.0f} MB (after imports: {r['medic_base_mb']:.0f} MB) | "
                         f"{_naive_cell(r, 'mpl')} | {_naive_cell(r, 'sns')} | "
                         f"{r['speedup_mpl']:.1f}x / {r['speedup_sns']:.0f}x |")
    for r in results:
        if r["benchmark"].startswith("watch"):
            lines += ["", "| watch poll on a file of | CsvTail.poll (1 new row) | pd.read_csv of the whole file | ratio |",
                      "|---:|---:|---:|---:|",
                      f"| {r['rows']:,} rows | {r['poll_s'] * 1e6:.0f} µs | {r['full_read_s']:.3f} s | {r['speedup']:,.0f}x |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="add the 10M-row size")
    parser.add_argument("--rows", type=int, nargs="*", help="explicit sizes (rows) instead of the defaults")
    parser.add_argument("--poll-rows", type=int, default=1_000_000, help="size of the file polled")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (best is kept)")
    parser.add_argument("--out", default=str(OUT / "analysis.md"), help="where to write the table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(quick=not args.full, sizes=args.rows, poll_rows=args.poll_rows, repeats=args.repeats)
    table = to_markdown(results)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/bench_analysis.py" + (" --full" if args.full else "")
    out.write_text(f"Measured with `{cmd}` ({os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; "
                   f"took {time.perf_counter() - started:.0f} s)\n\n" + table, encoding="utf-8")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
