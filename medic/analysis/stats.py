"""The numbers behind the figures and reports (``medic.analysis.outputs`` writes them).

For notebooks everything returns objects (DataFrames, dataclasses, matplotlib Figures, strings):

    from medic import analysis
    from medic.analysis import figures
    run = medic.load_run("latest")
    summary = analysis.summarize_epochs(run.epochs, run.sidecar)
    figures.training_figure(run.epochs, monitor=summary.monitor)
    batch = analysis.analyze_batch_file(run.paths["batch_csv"])      # 10M rows in seconds
    figures.batch_figure(batch)

Batch CSVs can hold millions of rows, so their analysis works on compact numpy arrays, per
epoch, in blocks of about a million rows, and keeps at most ``MAX_POINTS`` points per plotted
line (MinMaxLTTB keeps the peaks that matter for spotting instability).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medic.analysis.timing import TimeSummary, summarize_time
from medic.store.logger import EPOCH_COLUMNS, TELEMETRY_COLUMNS
from medic.store.batchcache import read_batch_arrays_cached
from medic.store.readers import BatchArrays

MAX_POINTS = 4000  # per plotted line
SPIKE_Z = 6.0  # a batch loss this many standard deviations above the rest of its epoch ...
SPIKE_RISE = 0.5  # ... and this much above their mean (50%) is a spike
_MAXIMISED = ("dice", "acc", "iou", "auc", "f1", "precision", "recall", "score", "jaccard", "nsd")


def metric_mode(name: str) -> str:
    """``"max"`` for metrics where higher is better (Dice, accuracy, IoU, ...), else ``"min"``."""
    return "max" if any(k in name.lower() for k in _MAXIMISED) else "min"


def extra_metrics(epochs: pd.DataFrame) -> list[str]:
    """The numeric columns after the nine standard ones (Val_Loss, Val_Dice, ...), the timing
    columns left out (``medic.analysis.timing`` shows those)."""
    return [c for c in epochs.columns if c not in EPOCH_COLUMNS and c not in TELEMETRY_COLUMNS
            and pd.api.types.is_numeric_dtype(epochs[c])]


def monitor_of(epochs: pd.DataFrame, sidecar: dict[str, Any] | None = None) -> tuple[str, str]:
    """The metric that ``Best_Loss_So_Far`` tracks and its direction: from the sidecar, else
    guessed by matching the running best of each candidate column."""
    side = sidecar or {}
    config = side.get("config") if isinstance(side.get("config"), dict) else {}
    name = side.get("monitor") or config.get("monitor")
    if name in epochs.columns:
        return name, side.get("monitor_mode") or metric_mode(name)
    best = epochs["Best_Loss_So_Far"].to_numpy(dtype=float)
    for name in ["Avg_Loss"] + extra_metrics(epochs):
        mode = metric_mode(name)
        values = epochs[name].astype(float)
        running = (values.cummin() if mode == "min" else values.cummax()).to_numpy()
        if len(best) and np.allclose(running, best, rtol=1e-5, atol=1e-7, equal_nan=True):
            return name, mode
    return "Avg_Loss", "min"


@dataclass
class EpochSummary:
    """Everything the text report says about an epoch CSV."""

    epochs: int
    first_epoch: int
    last_epoch: int
    total_time_s: float
    mean_epoch_s: float
    initial_loss: float
    final_loss: float
    best_loss: float
    best_loss_epoch: int
    improvement: float  # initial - final
    improvement_pct: float  # of the initial loss
    initial_lr: float
    final_lr: float
    top: pd.DataFrame  # the 5 lowest-Avg_Loss epochs: Epoch, Avg_Loss, Learning_Rate
    monitor: str
    monitor_mode: str
    best_monitored: float
    best_monitored_epoch: int | None
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> final/best/best_epoch/mode
    nonfinite_epochs: int = 0
    planned_epochs: int | None = None
    status: str | None = None
    message: str = ""  # the sidecar's, e.g. "early stop: Val_Dice did not improve for 20 validations"
    worst_epoch: int | None = None  # the epoch of the worst validation cases (the best epoch)
    worst_cases: pd.DataFrame | None = None  # Case, Mean_Dice, Dice_<class>... (medic.analysis.cases)
    timing: TimeSummary | None = None  # where the time goes, when the CSV has the columns


def best_of(values: pd.Series, epochs: pd.Series, mode: str) -> tuple[float, int | None]:
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    if finite.empty:
        return float("nan"), None
    i = finite.idxmin() if mode == "min" else finite.idxmax()
    return float(finite[i]), int(epochs[i])


def summarize_epochs(epochs: pd.DataFrame, sidecar: dict[str, Any] | None = None,
                     status: str | None = None) -> EpochSummary:
    """The report's numbers for a (non-empty) typed epoch frame from ``read_epoch_csv``."""
    loss = epochs["Avg_Loss"]
    best_loss, best_epoch = best_of(loss, epochs["Epoch"], "min")
    initial, final = float(loss.iloc[0]), float(loss.iloc[-1])
    improvement = initial - final
    finite_loss = epochs[np.isfinite(loss.to_numpy(dtype=float))]
    monitor, mode = monitor_of(epochs, sidecar)
    best_mon, best_mon_epoch = best_of(epochs[monitor], epochs["Epoch"], mode)
    extras = {}
    for name in extra_metrics(epochs):
        m = mode if name == monitor else metric_mode(name)
        value, at = best_of(epochs[name], epochs["Epoch"], m)
        extras[name] = {"final": float(epochs[name].iloc[-1]), "best": value, "best_epoch": at, "mode": m}
    side = sidecar or {}
    planned = side.get("epochs") or (side.get("config") or {}).get("epochs")
    times = epochs["Epoch_Time_Seconds"]
    return EpochSummary(
        epochs=len(epochs), first_epoch=int(epochs["Epoch"].iloc[0]), last_epoch=int(epochs["Epoch"].iloc[-1]),
        total_time_s=float(times.sum()), mean_epoch_s=float(times.mean()),
        initial_loss=initial, final_loss=final, best_loss=best_loss, best_loss_epoch=best_epoch or 0,
        improvement=improvement,
        improvement_pct=improvement / initial * 100 if initial and math.isfinite(initial) else float("nan"),
        initial_lr=float(epochs["Learning_Rate"].iloc[0]), final_lr=float(epochs["Learning_Rate"].iloc[-1]),
        top=finite_loss.nsmallest(5, "Avg_Loss")[["Epoch", "Avg_Loss", "Learning_Rate"]].reset_index(drop=True),
        monitor=monitor, monitor_mode=mode, best_monitored=best_mon, best_monitored_epoch=best_mon_epoch,
        extras=extras, nonfinite_epochs=int((~np.isfinite(loss.to_numpy(dtype=float))).sum()),
        planned_epochs=int(planned) if isinstance(planned, (int, float)) and planned > 0 else None,
        status=status, timing=summarize_time(epochs))


# --- batch CSVs -------------------------------------------------------------------------------

@dataclass
class BatchAnalysis:
    """A batch CSV reduced to what its figure and report show (all small, whatever the rows)."""

    path: Path
    rows: int
    batches_per_epoch: int
    per_epoch: pd.DataFrame  # Epoch, Batches, Mean, Std, Min, Max, NonFinite, Learning_Rate
    x: np.ndarray  # plotted loss points: position in epochs, epoch - 1 + (batch + 1) / batches_per_epoch
    y: np.ndarray  # their losses
    trend_x: np.ndarray
    trend_y: np.ndarray
    trend_window: int  # batches in the moving mean
    lr_x: np.ndarray | None
    lr_y: np.ndarray | None
    spikes: pd.DataFrame  # Epoch, Batch, Loss, Z, X: the strongest spikes (up to 20)
    spike_count: int
    nonfinite: pd.DataFrame  # Epoch, Batch, Loss, X: the first non-finite values (up to 20)
    nonfinite_count: int
    loss_first: float
    loss_last: float
    loss_min: float
    loss_max: float
    loss_mean: float


def _blocks(counts: np.ndarray, rows_per_block: int = 1 << 20) -> list[tuple[int, int]]:
    """Ranges of whole epochs (segment indices) of about ``rows_per_block`` rows each."""
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(rows_per_block, ends[-1], rows_per_block), side="left") + 1
    edges = sorted({0, len(counts), *cuts[cuts < len(counts)].tolist()})
    return list(zip(edges[:-1], edges[1:]))


def downsample(x: np.ndarray | None, y: np.ndarray, n_out: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``n_out`` points of (x, y) that keep the curve's shape and extremes
    (MinMaxLTTB). ``x`` None means evenly spaced (no index array is built). NaN is never picked."""
    if len(y) <= n_out:
        return np.arange(len(y))
    from tsdownsample import MinMaxLTTBDownsampler
    args = (y,) if x is None else (x, y)
    keep = np.asarray(MinMaxLTTBDownsampler().downsample(*args, n_out=n_out))
    return keep[~np.isnan(y[keep])]


def analyze_batch_arrays(data: BatchArrays, max_points: int = MAX_POINTS) -> BatchAnalysis:
    """Per-epoch spread, a smoothed trend, spikes and non-finite values of a batch CSV."""
    starts, counts, loss = data.starts, data.counts, data.loss
    n, segs = len(loss), len(counts)
    sums, sq = np.zeros(segs), np.zeros(segs)
    mins, maxs = np.full(segs, np.nan), np.full(segs, np.nan)
    good = counts.copy()
    bad_rows = []
    blocks = _blocks(counts)
    for lo, hi in blocks:  # one pass in blocks of whole epochs: no full-size float64 copies
        r0, r1 = starts[lo], starts[hi - 1] + counts[hi - 1]
        v, local = loss[r0:r1], starts[lo:hi] - r0
        fin = np.isfinite(v)
        if not fin.all():
            bad = ~fin
            bad_rows.append(np.flatnonzero(bad) + r0)
            good[lo:hi] -= np.add.reduceat(bad, local, dtype=np.int64)
            v = np.where(fin, v, np.nan)  # fmin/fmax skip NaN; sums use the zeros below
        vz = np.nan_to_num(v, nan=0.0) if len(bad_rows) else v
        sums[lo:hi] = np.add.reduceat(vz, local, dtype=np.float64)
        sq[lo:hi] = np.add.reduceat(np.square(vz, dtype=np.float64), local)
        mins[lo:hi] = np.fmin.reduceat(v, local)
        maxs[lo:hi] = np.fmax.reduceat(v, local)
    bad_rows = np.concatenate(bad_rows) if bad_rows else np.zeros(0, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / good
        std = np.sqrt(np.maximum(sq / good - mean * mean, 0.0))
    bpe = int(counts.max())

    spike_rows, spike_z = [], []
    for lo, hi in blocks:  # second pass: each batch against the other batches of its epoch
        r0, r1 = starts[lo], starts[hi - 1] + counts[hi - 1]
        reps = counts[lo:hi]
        # a leave-one-out z above SPIKE_Z (with 7+ others) implies a plain z above 2.3, so a
        # cheap float32 screen at 1 std leaves few rows for the exact float64 test
        screen = (mean[lo:hi] + std[lo:hi]).astype(np.float32)
        cand = np.flatnonzero(loss[r0:r1] > np.repeat(screen, reps))
        if not len(cand):
            continue
        seg = np.searchsorted(starts[lo:hi] - r0, cand, side="right") - 1 + lo
        v = loss[r0:r1][cand].astype(np.float64)
        k = good[seg] - 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            # leave-one-out mean and spread, so that a spike does not hide itself by
            # inflating its own epoch's standard deviation
            m = (sums[seg] - v) / k
            var = (sq[seg] - v * v) / k - m * m
            z = (v - m) / np.sqrt(np.maximum(var, 0.0))
        hit = (k >= 7) & (var > 0) & (z > SPIKE_Z) & (v - m > SPIKE_RISE * np.abs(m))
        spike_rows.append(cand[hit] + r0)
        spike_z.append(z[hit])
    spike_rows = np.concatenate(spike_rows) if spike_rows else np.zeros(0, np.int64)
    spike_z = np.concatenate(spike_z) if spike_z else np.zeros(0)

    def position(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seg = np.searchsorted(starts, rows, side="right") - 1
        batch = rows - starts[seg]
        # epoch e's batches fill (e - 1, e]: its last batch sits where its epoch row is plotted
        return data.epoch_values[seg], batch, (data.epoch_values[seg] - 1) + (batch + 1) / bpe

    # non-finite losses are marked separately; as NaN the downsampler never picks them
    py = np.where(np.isfinite(loss), loss, np.nan).astype(loss.dtype) if len(bad_rows) else loss
    keep = downsample(None, py, max_points)
    keep = keep[np.isfinite(py[keep])]
    x, y = position(keep)[2], py[keep].astype(np.float64)

    window = max(1, min(bpe, n // 10), n // 100)
    if segs >= MAX_POINTS // 2:  # many epochs: their sums are fine enough bins for the trend
        trend_x, trend_y = _moving_mean(sums, good, starts + (counts - 1) // 2, max(1, round(window / bpe)), position)
    else:
        trend_x, trend_y = _trend(loss, window, position)
    lr_x = lr_y = None
    if data.lr is not None:
        lr_keep = downsample(None, data.lr, max_points)
        lr_x, lr_y = position(lr_keep)[2], data.lr[lr_keep].astype(np.float64)

    order = np.argsort(-spike_z, kind="stable")[:20]
    e, b, sx = position(spike_rows[order])
    spikes = pd.DataFrame({"Epoch": e, "Batch": b, "Loss": loss[spike_rows[order]].astype(np.float64),
                           "Z": spike_z[order], "X": sx})
    e, b, bx = position(bad_rows[:20])
    nonfinite = pd.DataFrame({"Epoch": e, "Batch": b, "Loss": loss[bad_rows[:20]].astype(np.float64), "X": bx})
    per_epoch = pd.DataFrame({"Epoch": data.epoch_values, "Batches": counts, "Mean": mean, "Std": std,
                              "Min": mins, "Max": maxs, "NonFinite": counts - good})
    if data.lr is not None:
        per_epoch["Learning_Rate"] = data.lr[starts].astype(np.float64)
    finite_mean = float(sums.sum() / good.sum()) if good.sum() else float("nan")
    first_ok, last_ok = 0, n - 1
    if len(bad_rows) and len(y):
        fin = np.isfinite(loss)
        first_ok, last_ok = int(np.argmax(fin)), n - 1 - int(np.argmax(fin[::-1]))
    return BatchAnalysis(
        path=data.path, rows=n, batches_per_epoch=bpe, per_epoch=per_epoch, x=x, y=y,
        trend_x=trend_x, trend_y=trend_y, trend_window=window, lr_x=lr_x, lr_y=lr_y,
        spikes=spikes, spike_count=len(spike_rows), nonfinite=nonfinite, nonfinite_count=len(bad_rows),
        loss_first=float(loss[first_ok]), loss_last=float(loss[last_ok]),
        loss_min=float(np.nanmin(mins)) if good.any() else float("nan"),
        loss_max=float(np.nanmax(maxs)) if good.any() else float("nan"), loss_mean=finite_mean)


def _trend(loss: np.ndarray, window: int, position) -> tuple[np.ndarray, np.ndarray]:
    """A centred moving mean of about ``window`` batches (non-finite values left out), from
    sums over at most ``MAX_POINTS // 2`` bins of rows."""
    n = len(loss)
    edges = np.unique(np.linspace(0, n, min(n, MAX_POINTS // 2) + 1).astype(np.int64))
    fin = np.isfinite(loss)
    clean = loss if fin.all() else np.where(fin, loss, 0).astype(loss.dtype)
    bin_sum = np.add.reduceat(clean, edges[:-1], dtype=np.float64)
    bin_cnt = np.add.reduceat(fin, edges[:-1], dtype=np.int64)
    per_bin = max(1, round(window / max(1.0, n / len(bin_sum))))
    return _moving_mean(bin_sum, bin_cnt, (edges[:-1] + edges[1:] - 1) // 2, per_bin, position)


def _moving_mean(bin_sum: np.ndarray, bin_cnt: np.ndarray, bin_row: np.ndarray, width: int,
                 position) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving mean over ``width`` bins, at most ``MAX_POINTS // 2`` points of it."""
    csum, ccnt = np.r_[0.0, np.cumsum(bin_sum)], np.r_[0, np.cumsum(bin_cnt)]
    k = np.arange(len(bin_sum))
    lo = np.maximum(k - width // 2, 0)
    hi = np.minimum(k + width - width // 2, len(bin_sum))
    with np.errstate(invalid="ignore", divide="ignore"):
        y = (csum[hi] - csum[lo]) / (ccnt[hi] - ccnt[lo])
    pick = np.unique(np.linspace(0, len(y) - 1, min(len(y), MAX_POINTS // 2)).astype(np.int64))
    pick = pick[np.isfinite(y[pick])]
    return position(bin_row[pick])[2], y[pick]


def analyze_batch_file(path: str | os.PathLike, max_points: int = MAX_POINTS,
                       cache_dir: str | os.PathLike | None = None) -> BatchAnalysis:
    """Read and analyse a batch CSV (see ``analyze_batch_arrays``); with ``cache_dir``, a big
    file is read through the cache there (``medic.store.batchcache``): again after it grew, only
    the added rows are parsed."""
    return analyze_batch_arrays(read_batch_arrays_cached(path, cache_dir), max_points)
