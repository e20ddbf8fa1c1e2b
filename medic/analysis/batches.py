"""A batch CSV's analysis: per-epoch spread, spikes, non-finite losses, a trend and the points to
plot, from compact arrays (``medic.store.readers.BatchArrays``; 10M rows in about a second).

    batch = analysis.analyze_batch_file(run.paths["batch_csv"])
    figures.batch_figure(batch)

What is shown comes from a ``Summary`` of the rows that grows with them: per stretch of one epoch,
its sums, extremes, spikes and non-finite rows; per bucket of ``bucket`` rows, its sum and the rows
of its lowest and highest loss and learning rate. The points drawn are those bucket extremes
(buckets merged 2, 4, ... at a time), thinned by LTTB to ``MAX_POINTS``, so a peak is never lost
between two kept points; the trend is a moving mean over bucket (or epoch) sums. Through the cache
of ``medic.store.batchcache`` the summary is kept beside the arrays, and analysing the file again
after it grew summarises only the epochs and buckets the new rows touch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from medic.analysis.stats import MAX_POINTS
from medic.store import columns as C
from medic.store.batchcache import Slot, cached_batch_arrays
from medic.store.readers import BatchArrays

SPIKE_Z = 6.0  # a batch loss this many standard deviations above the rest of its epoch ...
SPIKE_RISE = 0.5  # ... and this much above their mean (50%) is a spike
BUCKET = 64  # rows per bucket of a big file (and of every cached summary)
BLOCK = 1 << 20  # rows per step of a pass: no full-size float64 copies
SUMMARY = "batch_summary"


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


@dataclass
class Summary:
    """What the analysis needs of a batch CSV's rows. Per stretch of rows of one epoch (``seg_``):
    sums of the finite losses and of their squares, extremes (NaN: none finite), finite count.
    Rows that are spikes (with their z) or non-finite. Per bucket of ``bucket`` rows (``bk_``,
    ``lr_``): sum and finite count, and the rows of the lowest and highest finite loss and
    learning rate (-1: none)."""

    bucket: int
    seg_sum: np.ndarray
    seg_sq: np.ndarray
    seg_min: np.ndarray
    seg_max: np.ndarray
    seg_good: np.ndarray
    spike_rows: np.ndarray
    spike_z: np.ndarray
    bad_rows: np.ndarray
    bk_sum: np.ndarray
    bk_good: np.ndarray
    bk_lo: np.ndarray
    bk_hi: np.ndarray
    lr_lo: np.ndarray
    lr_hi: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Summary":
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})

    def settled(self, data: BatchArrays) -> "Summary":
        """The part that rows appended later cannot change: every stretch but the last, and the
        full buckets."""
        segs, full = len(data.counts) - 1, data.rows // self.bucket
        edge = int(data.starts[segs]) if segs > 0 else 0
        keep = self.spike_rows < edge
        return Summary(self.bucket, *(a[:segs] for a in (self.seg_sum, self.seg_sq, self.seg_min,
                                                          self.seg_max, self.seg_good)),
                       self.spike_rows[keep], self.spike_z[keep], self.bad_rows[self.bad_rows < edge],
                       *(a[:full] for a in (self.bk_sum, self.bk_good, self.bk_lo, self.bk_hi,
                                            self.lr_lo, self.lr_hi)))


def bucket_for(rows: int) -> int:
    """Rows per bucket: ``BUCKET`` for big files; fewer for small ones, so that their plot still
    has candidates for all ``MAX_POINTS`` points (one row per bucket up to ``MAX_POINTS`` rows)."""
    if rows >= BUCKET * MAX_POINTS:
        return BUCKET
    return 1 << max(0, (max(1, rows // MAX_POINTS)).bit_length() - 1)


def _segment_stats(data: BatchArrays, s0: int) -> tuple[np.ndarray, ...]:
    """Sums, extremes and finite counts of the stretches from ``s0`` on; their spikes (rows and
    z); their non-finite rows."""
    starts, counts, loss = data.starts[s0:], data.counts[s0:], data.loss
    segs = len(counts)
    sums, sq = np.zeros(segs), np.zeros(segs)
    mins, maxs = np.full(segs, np.nan), np.full(segs, np.nan)
    good = counts.copy()
    bad_rows, spike_rows, spike_z = [], [], []
    for lo, hi in _blocks(counts):
        r0, r1 = starts[lo], starts[hi - 1] + counts[hi - 1]
        v, local = loss[r0:r1], starts[lo:hi] - r0
        fin = np.isfinite(v)
        vz = v
        if not fin.all():
            bad = ~fin
            bad_rows.append(np.flatnonzero(bad) + r0)
            good[lo:hi] -= np.add.reduceat(bad, local, dtype=np.int64)
            v = np.where(fin, v, np.nan)  # fmin/fmax skip NaN
            vz = np.where(fin, v, 0)  # sums skip them as zeros
        sums[lo:hi] = np.add.reduceat(vz, local, dtype=np.float64)
        sq[lo:hi] = np.add.reduceat(np.square(vz, dtype=np.float64), local)
        mins[lo:hi] = np.fmin.reduceat(v, local)
        maxs[lo:hi] = np.fmax.reduceat(v, local)
        rows, z = _spikes(loss[r0:r1], local, sums[lo:hi], sq[lo:hi], good[lo:hi])
        spike_rows.append(rows + r0)
        spike_z.append(z)
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return (sums, sq, mins, maxs, good, join(spike_rows, np.int64), join(spike_z, np.float64),
            join(bad_rows, np.int64))


def _spikes(v: np.ndarray, local: np.ndarray, sums: np.ndarray, sq: np.ndarray,
            good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``v`` (stretches starting at ``local``) far above the other batches of their
    stretch: a leave-one-out z, so that a spike does not hide itself by inflating its own
    stretch's spread."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / good
        std = np.sqrt(np.maximum(sq / good - mean * mean, 0.0))
    # a leave-one-out z above SPIKE_Z (with 7+ others) implies a plain z above 2.3, so a cheap
    # float32 screen at 1 std leaves few rows for the exact float64 test
    screen = (mean + std).astype(np.float32)
    cand = np.flatnonzero(v > np.repeat(screen, np.diff(np.r_[local, len(v)])))
    if not len(cand):
        return np.zeros(0, np.int64), np.zeros(0)
    seg = np.searchsorted(local, cand, side="right") - 1
    x = v[cand].astype(np.float64)
    k = good[seg] - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (sums[seg] - x) / k
        var = (sq[seg] - x * x) / k - m * m
        z = (x - m) / np.sqrt(np.maximum(var, 0.0))
    hit = (k >= 7) & (var > 0) & (z > SPIKE_Z) & (x - m > SPIKE_RISE * np.abs(m))
    return cand[hit], z[hit]


def _bucket_stats(values: np.ndarray | None, r0: int, bucket: int, with_sums: bool) -> tuple[np.ndarray, ...]:
    """Per bucket of ``values[r0:]`` (``r0`` a bucket boundary): sum and finite count (with
    ``with_sums``), rows of the lowest and highest finite value (-1: none)."""
    if values is None:
        return (np.zeros(0, np.int64),) * 2
    parts = []
    step = max(bucket, BLOCK // bucket * bucket)
    for a in range(r0, len(values), step):
        v = values[a:a + step]
        nb = -(-len(v) // bucket)
        v = np.r_[v, np.full(nb * bucket - len(v), np.nan, v.dtype)].reshape(nb, bucket)
        fin = np.isfinite(v)
        lo = np.where(fin, v, np.inf).argmin(axis=1)
        hi = np.where(fin, v, -np.inf).argmax(axis=1)
        count = fin.sum(axis=1, dtype=np.int64)
        first = a + np.arange(nb, dtype=np.int64) * bucket
        part = [np.where(count > 0, first + lo, -1), np.where(count > 0, first + hi, -1)]
        if with_sums:
            part = [np.where(fin, v, 0).sum(axis=1, dtype=np.float64), count] + part
        parts.append(part)
    dtypes = (np.float64, np.int64, np.int64, np.int64) if with_sums else (np.int64, np.int64)
    return tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, d) for i, d in enumerate(dtypes))


def summarize(data: BatchArrays, bucket: int, prior: Summary | None = None) -> Summary:
    """The summary of ``data``'s rows; with ``prior`` (the settled summary of a prefix of them,
    same ``bucket``), only the stretches and buckets after it are computed."""
    s0 = len(prior.seg_sum) if prior is not None else 0
    k0 = len(prior.bk_sum) if prior is not None else 0
    seg = _segment_stats(data, s0)
    bk = _bucket_stats(data.loss, k0 * bucket, bucket, with_sums=True)
    lr = _bucket_stats(data.lr, k0 * bucket, bucket, with_sums=False)
    new = Summary(bucket, *seg, *bk, *lr)
    if prior is None:
        return new
    return Summary(bucket, *(np.concatenate([getattr(prior, f.name), getattr(new, f.name)])
                             for f in fields(Summary) if f.name != "bucket"))


def _blocks(counts: np.ndarray, rows_per_block: int = BLOCK) -> list[tuple[int, int]]:
    """Ranges of whole stretches (their indices) of about ``rows_per_block`` rows each."""
    if not len(counts):
        return []
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(rows_per_block, ends[-1], rows_per_block), side="left") + 1
    edges = sorted({0, len(counts), *cuts[cuts < len(counts)].tolist()})
    return list(zip(edges[:-1], edges[1:]))


def _merge(rows: np.ndarray, values: np.ndarray, m: int, lowest: bool) -> np.ndarray:
    """Bucket extremes (rows, -1: none) of ``m`` buckets at a time: the row of the lowest (or
    highest) value among them."""
    if m == 1:
        return rows
    r = np.r_[rows, np.full((-len(rows)) % m, -1)].reshape(-1, m)
    v = np.where(r >= 0, values[r.clip(0)], np.inf if lowest else -np.inf)
    pick = v.argmin(axis=1) if lowest else v.argmax(axis=1)
    return r[np.arange(len(r)), pick]


def _points(lo: np.ndarray, hi: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Rows to plot: the extremes of buckets merged until there are at most 4 x ``max_points``,
    thinned to ``max_points`` by LTTB."""
    m = 1
    while -(-len(lo) // m) > 2 * max_points:
        m *= 2
    cand = np.union1d(_merge(lo, values, m, True), _merge(hi, values, m, False))
    cand = cand[cand >= 0]
    if len(cand) <= max_points:
        return cand
    from tsdownsample import LTTBDownsampler
    keep = np.asarray(LTTBDownsampler().downsample(cand.astype(np.float64), values[cand].astype(np.float64),
                                                    n_out=max_points))
    return cand[keep]


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


def _trend(s: Summary, data: BatchArrays, window: int, position) -> tuple[np.ndarray, np.ndarray]:
    """A centred moving mean of about ``window`` batches (non-finite values left out): over the
    stretches' sums when there are many, else over bucket sums merged into at most
    ``MAX_POINTS // 2`` bins."""
    starts, counts, bpe = data.starts, data.counts, int(data.counts.max())
    if len(counts) >= MAX_POINTS // 2:
        return _moving_mean(s.seg_sum, s.seg_good, starts + (counts - 1) // 2, max(1, round(window / bpe)), position)
    m = 1
    while -(-len(s.bk_sum) // m) > MAX_POINTS // 2:
        m *= 2
    pad = (-len(s.bk_sum)) % m
    sums = np.r_[s.bk_sum, np.zeros(pad)].reshape(-1, m).sum(axis=1)
    cnt = np.r_[s.bk_good, np.zeros(pad, np.int64)].reshape(-1, m).sum(axis=1)
    rows_per_bin = s.bucket * m
    first = np.arange(len(sums), dtype=np.int64) * rows_per_bin
    centre = (first + np.minimum(first + rows_per_bin, data.rows) - 1) // 2
    return _moving_mean(sums, cnt, centre, max(1, round(window / rows_per_bin)), position)


def analyze_batch_arrays(data: BatchArrays, max_points: int = MAX_POINTS,
                         summary: Summary | None = None) -> BatchAnalysis:
    """Per-epoch spread, a smoothed trend, spikes and non-finite values of a batch CSV (from
    ``summary`` when it is given: ``summarize(data, ...)``)."""
    s = summary if summary is not None else summarize(data, bucket_for(data.rows))
    starts, counts, loss = data.starts, data.counts, data.loss
    n = len(loss)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s.seg_sum / s.seg_good
        # the sample std (ddof=1), as pandas' describe() and std() give it: one number for one
        # statistic in every view (NaN for an epoch of one batch)
        std = np.sqrt(np.maximum(s.seg_sq / s.seg_good - mean * mean, 0.0) * s.seg_good / (s.seg_good - 1))
    bpe = int(counts.max())

    def position(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seg = np.searchsorted(starts, rows, side="right") - 1
        batch = rows - starts[seg]
        # epoch e's batches fill (e - 1, e]: its last batch sits where its epoch row is plotted
        return data.epoch_values[seg], batch, (data.epoch_values[seg] - 1) + (batch + 1) / bpe

    keep = _points(s.bk_lo, s.bk_hi, loss, max_points)
    x, y = position(keep)[2], loss[keep].astype(np.float64)
    window = max(1, min(bpe, n // 10), n // 100)
    trend_x, trend_y = _trend(s, data, window, position)
    lr_x = lr_y = None
    if data.lr is not None:
        lr_keep = _points(s.lr_lo, s.lr_hi, data.lr, max_points)
        lr_x, lr_y = position(lr_keep)[2], data.lr[lr_keep].astype(np.float64)

    order = np.argsort(-s.spike_z, kind="stable")[:20]
    e, b, sx = position(s.spike_rows[order])
    spikes = pd.DataFrame({C.EPOCH: e, C.BATCH: b, C.LOSS: loss[s.spike_rows[order]].astype(np.float64),
                           "Z": s.spike_z[order], "X": sx})
    bad = np.sort(s.bad_rows)
    e, b, bx = position(bad[:20])
    nonfinite = pd.DataFrame({C.EPOCH: e, C.BATCH: b, C.LOSS: loss[bad[:20]].astype(np.float64), "X": bx})
    per_epoch = pd.DataFrame({C.EPOCH: data.epoch_values, "Batches": counts, "Mean": mean, "Std": std,
                              "Min": s.seg_min, "Max": s.seg_max, "NonFinite": counts - s.seg_good})
    if data.lr is not None:
        per_epoch[C.LEARNING_RATE] = data.lr[starts].astype(np.float64)
    good = s.seg_good.sum()
    first_ok, last_ok = _first_finite(bad, n), n - 1 - _first_finite(n - 1 - bad[::-1], n)
    first_ok, last_ok = (first_ok, last_ok) if first_ok < n else (0, n - 1)
    return BatchAnalysis(
        path=data.path, rows=n, batches_per_epoch=bpe, per_epoch=per_epoch, x=x, y=y,
        trend_x=trend_x, trend_y=trend_y, trend_window=window, lr_x=lr_x, lr_y=lr_y,
        spikes=spikes, spike_count=len(s.spike_rows), nonfinite=nonfinite, nonfinite_count=len(bad),
        loss_first=float(loss[first_ok]), loss_last=float(loss[last_ok]),
        loss_min=float(np.nanmin(s.seg_min)) if good else float("nan"),
        loss_max=float(np.nanmax(s.seg_max)) if good else float("nan"),
        loss_mean=float(s.seg_sum.sum() / good) if good else float("nan"))


def _first_finite(bad: np.ndarray, n: int) -> int:
    """The first row of ``range(n)`` not in ``bad`` (sorted), ``n`` when there is none."""
    gaps = np.flatnonzero(bad != np.arange(len(bad)))
    return int(gaps[0]) if len(gaps) else min(len(bad), n)


def _cached_summary(data: BatchArrays, slot: Slot) -> Summary:
    """``data``'s summary, from the one kept in ``slot`` for the rows it already covered (a
    summary made with other buckets, while the file was smaller, is made again)."""
    bucket, prior = bucket_for(data.rows), None
    saved = slot.load(SUMMARY)
    if saved is not None and "bucket" in saved and int(saved["bucket"]) == bucket:
        try:
            prior = Summary.from_arrays({**saved, "bucket": bucket})
        except KeyError:
            prior = None
    if prior is not None and (len(prior.seg_sum) > len(data.counts) or len(prior.bk_sum) * bucket > data.rows):
        prior = None
    summary = summarize(data, bucket, prior)
    settled = summary.settled(data)
    if prior is None or len(settled.seg_sum) > len(prior.seg_sum) or len(settled.bk_sum) > len(prior.bk_sum):
        slot.save(SUMMARY, settled.arrays())
    return summary


def analyze_batch_file(path: str | os.PathLike, max_points: int = MAX_POINTS,
                       cache_dir: str | os.PathLike | None = None) -> BatchAnalysis:
    """Read and analyse a batch CSV (see ``analyze_batch_arrays``); with ``cache_dir``, a big
    file is read through the cache there (``medic.store.batchcache``), with its summary: again
    after it grew, only the added rows are parsed and summarised."""
    data, slot = cached_batch_arrays(path, cache_dir)
    if slot is None or data.order is not None:  # rows reordered (an epoch in several stretches)
        return analyze_batch_arrays(data, max_points)
    return analyze_batch_arrays(data, max_points, _cached_summary(data, slot))
