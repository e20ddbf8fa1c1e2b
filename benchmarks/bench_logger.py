"""Benchmark: the cost of writing batch rows — ``MetricsLogger`` against a plain ``csv.writer``
loop and Lightning's ``CSVLogger``, each with its flush policy stated.

    python benchmarks/bench_logger.py                 # 34,200 rows (the guide's 200 x 171)
    python benchmarks/bench_logger.py --rows 34200 1000000

Every writer gets the same precomputed losses and learning rates and writes the same five columns
(Lightning writes its own layout: step, epoch, loss, lr — it has no timestamp column). The goal:
``MetricsLogger`` flushing every row is at least as fast as a plain writer flushing every row,
within 10%.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Section, fmt, table  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAMP = "%Y-%m-%d %H:%M:%S"
GUIDE_ROWS = 34_200  # 200 epochs x 171 batches
BATCHES = 171


def inputs(rows: int) -> tuple[list[int], list[int], list[float], list[float]]:
    epochs = [i // BATCHES + 1 for i in range(rows)]
    batches = [i % BATCHES for i in range(rows)]
    losses = [0.06 + 0.55 * math.exp(-6 * i / rows) * (1 + 0.1 * math.sin(i)) for i in range(rows)]
    lrs = [0.0005 * (1 + math.cos(math.pi * e / (rows / BATCHES + 1))) + 1e-6 for e in epochs]
    return epochs, batches, losses, lrs


def medic_per_row(folder: Path, data) -> Path:
    from medic.store.logger import MetricsLogger
    epochs, batches, losses, lrs = data
    with MetricsLogger(folder, "20250101_000000", log_batch_metrics=True) as log:
        for e, b, loss, lr in zip(epochs, batches, losses, lrs):
            log.log_batch(e, b, loss, lr)
    return log.batch_path


def medic_groups(folder: Path, data, group: int = 10) -> Path:
    """As the trainer writes at ``--log_interval 10``: one write per 10 rows of an epoch."""
    from medic.store.logger import MetricsLogger
    epochs, batches, losses, lrs = data
    with MetricsLogger(folder, "20250101_000001", log_batch_metrics=True) as log:
        lo = 0
        while lo < len(losses):
            hi = min(lo + group, len(losses))
            while epochs[hi - 1] != epochs[lo]:  # a group ends with its epoch
                hi -= 1
            log.log_batches(epochs[lo], batches[lo], losses[lo:hi], lrs[lo:hi])
            lo = hi
    return log.batch_path


def plain_writer(folder: Path, data, flush_every_row: bool) -> Path:
    epochs, batches, losses, lrs = data
    path = folder / ("plain_flush.csv" if flush_every_row else "plain_buffered.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["Epoch", "Batch", "Loss", "Learning_Rate", "Timestamp"])
        for e, b, loss, lr in zip(epochs, batches, losses, lrs):
            w.writerow([e, b, f"{loss:.6f}", f"{lr:.8f}", time.strftime(STAMP)])
            if flush_every_row:
                f.flush()
    return path


def lightning_writer(folder: Path, data, flush_every: int):
    from lightning.pytorch.loggers import CSVLogger
    epochs, batches, losses, lrs = data
    log = CSVLogger(str(folder), name=f"lightning_{flush_every}", version=0, flush_logs_every_n_steps=flush_every)
    for i, (e, loss, lr) in enumerate(zip(epochs, losses, lrs)):
        log.log_metrics({"epoch": e, "loss": loss, "lr": lr}, step=i)
    log.finalize("success")
    return Path(log.log_dir) / "metrics.csv"


def lightning_available() -> str:
    """'' when Lightning can be imported, else why not."""
    try:
        importlib.import_module("lightning.pytorch.loggers")
    except ImportError as err:
        return f"Lightning not installed ({err}); `pip install lightning` to include it"
    return ""


def timed(fn, *args) -> tuple[float, Path]:
    t0 = time.perf_counter()
    path = fn(*args)
    return time.perf_counter() - t0, path


def measure(rows: int, work: Path, repeats: int = 3, lightning_flush_row_max: int = 100_000) -> list[dict]:
    """Each writer ``repeats`` times into a fresh folder (best time kept: the least disturbed)."""
    data = inputs(rows)
    writers = [
        ("MetricsLogger.log_batch", "every row (one os.write per row, unbuffered; no fsync)",
         lambda d: medic_per_row(d, data)),
        ("MetricsLogger.log_batches (10 rows)", "every 10 rows (one os.write per group, as at --log_interval 10)",
         lambda d: medic_groups(d, data)),
        ("csv.writer + flush()", "every row (file.flush() after each writerow)",
         lambda d: plain_writer(d, data, True)),
        ("csv.writer, buffered", "only when the 8 KiB buffer fills (rows can sit unwritten)",
         lambda d: plain_writer(d, data, False)),
    ]
    missing = lightning_available()
    if not missing:
        writers.append(("Lightning CSVLogger (default)", "every 100 steps (flush_logs_every_n_steps=100)",
                        lambda d: lightning_writer(d, data, 100)))
        if rows <= lightning_flush_row_max:
            writers.append(("Lightning CSVLogger, flush every row", "every row (flush_logs_every_n_steps=1)",
                            lambda d: lightning_writer(d, data, 1)))
    results = []
    for name, policy, fn in writers:
        best, path = math.inf, None
        for k in range(repeats):
            folder = Path(tempfile.mkdtemp(dir=work))
            seconds, path = timed(fn, folder)
            best = min(best, seconds)
        lines = sum(1 for _ in open(path, "rb")) - 1
        if lines != rows:
            raise RuntimeError(f"{name} wrote {lines} rows, expected {rows}")
        results.append({"writer": name, "flush": policy, "rows": rows, "seconds": best,
                        "us_per_row": best / rows * 1e6, "rows_per_s": rows / best,
                        "bytes": path.stat().st_size})
    if missing:
        results.append({"writer": "Lightning CSVLogger", "flush": "-", "rows": rows, "skipped": missing})
    return results


def run(mode: str = "quick", work: Path | None = None) -> Section:
    sizes = {"smoke": [2_000], "quick": [GUIDE_ROWS], "full": [GUIDE_ROWS, 1_000_000]}[mode]
    repeats = 1 if mode == "smoke" else 3
    work = Path(tempfile.mkdtemp(prefix="bench-logger-", dir=work))
    results = []
    for rows in sizes:
        results += measure(rows, work, repeats=repeats if rows < 1_000_000 else 1)
    rows_out, summary = [], []
    for size in sizes:
        mine = [r for r in results if r["rows"] == size]
        plain = next(r for r in mine if r["writer"] == "csv.writer + flush()")
        for r in mine:
            if "skipped" in r:
                rows_out.append([f"{size:,}", r["writer"], r["flush"], "skipped", "", "", r["skipped"]])
                continue
            rows_out.append([f"{size:,}", r["writer"], r["flush"], fmt(r["rows_per_s"], 0), fmt(r["us_per_row"], 2),
                             f"{plain['us_per_row'] / r['us_per_row']:.2f}x", f"{r['bytes'] / 1e6:.1f} MB"])
        medic = next(r for r in mine if r["writer"] == "MetricsLogger.log_batch")
        ratio = medic["us_per_row"] / plain["us_per_row"]
        summary.append([f"Logger, {size:,} rows, flushed every row", f"{fmt(medic['us_per_row'], 2)} µs/row = "
                        f"{ratio:.2f}x the plain csv.writer+flush ({fmt(plain['us_per_row'], 2)} µs/row)",
                        "≤ 1.10x", "met" if ratio <= 1.10 else "not met"])
    body = table(["rows", "writer", "flush policy", "rows/s", "µs/row", "speed vs csv.writer+flush", "file"],
                 rows_out)
    return Section("Logger cost", body, summary, {"results": results})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[GUIDE_ROWS])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-logger-"))
    for rows in args.rows:
        for r in measure(rows, work, repeats=args.repeats):
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
