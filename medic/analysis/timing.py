"""Where the time goes: the telemetry columns of an epoch CSV (Samples_Per_Second, Data_Seconds,
Val_Seconds, Output_Seconds, Peak_Memory_MB) summed up for the report and drawn as a figure panel.
An epoch's Epoch_Time_Seconds and Output_Seconds add up to the wall time between its row and the
previous one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medic.store import columns as C

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HEADROOM = 1.35  # the time panel's y range over its data: the top quarter holds the legend
DATA_WAIT_WARN = 0.20  # data wait above this share of the epoch: the loader is the bottleneck

TEXT = {
    "en": {"title": "Where the time goes", "rate": "Mean throughput: {v:.1f} samples/s",
           "wait": "Data wait: {s:.2f} s of {t:.2f} s ({p:.1f}% of the epochs)",
           "val": "Validation: {s:.2f} s ({p:.1f}% of the epochs)",
           "outputs": "Outputs between epochs (checkpoints; masks, pictures and case tables are written in the "
                      "background while the model validates): {s:.2f} s ({p:.1f}% of the wall time)",
           "background": "Outputs written in the background (best masks, pictures, case tables; alongside the "
                         "validation): {s:.2f} s",
           "memory": "Peak memory: {v:.0f} MB",
           "warn": "Warning: the data wait is {p:.0f}% of the epoch time: the loader is the bottleneck: "
                   "raise --num_workers or cache"},
    "zh": {"title": "时间分布", "rate": "平均吞吐量: {v:.1f} 样本/秒",
           "wait": "等待数据: {s:.2f} 秒 / 共 {t:.2f} 秒 (占 {p:.1f}%)",
           "val": "验证: {s:.2f} 秒 (占 {p:.1f}%)",
           "outputs": "epoch 之间的输出 (检查点; 掩码、图片和病例表在验证时于后台写入): {s:.2f} 秒 (占总时间 {p:.1f}%)",
           "background": "后台写入的输出 (最佳掩码、图片、病例表; 与验证同时进行): {s:.2f} 秒",
           "memory": "峰值内存: {v:.0f} MB",
           "warn": "警告: 等待数据占 epoch 时间的 {p:.0f}%: 数据加载是瓶颈: 请增大 --num_workers 或使用缓存"},
}


def has_timing(epochs: pd.DataFrame) -> bool:
    return C.SAMPLES_PER_SECOND in epochs.columns and C.DATA_SECONDS in epochs.columns


@dataclass
class TimeSummary:
    mean_samples_per_s: float
    data_wait_s: float
    val_s: float | None
    total_s: float
    peak_memory_mb: float
    output_s: float | None = None
    background_s: float | None = None  # rank 0's writers, overlapping the epochs (the sidecar's)

    @property
    def data_share(self) -> float:
        return self.data_wait_s / self.total_s if self.total_s > 0 else float("nan")

    @property
    def loader_bound(self) -> bool:
        return self.data_share > DATA_WAIT_WARN


def _column(epochs: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(epochs[name], errors="coerce").to_numpy(dtype=float) if name in epochs.columns \
        else np.full(len(epochs), np.nan)


def summarize_time(epochs: pd.DataFrame, background_s: float | None = None) -> TimeSummary | None:
    """The report's timing numbers; None for a CSV without the columns. ``background_s``: the
    seconds rank 0's background writers worked (the sidecar's ``background_output_s``)."""
    if not has_timing(epochs) or epochs.empty:
        return None
    rate, wait, val = (_column(epochs, c) for c in (C.SAMPLES_PER_SECOND, C.DATA_SECONDS, C.VAL_SECONDS))
    memory = _column(epochs, C.PEAK_MEMORY_MB)
    return TimeSummary(
        mean_samples_per_s=float(np.nanmean(rate)) if np.isfinite(rate).any() else float("nan"),
        data_wait_s=float(np.nansum(wait)),
        val_s=float(np.nansum(val)) if np.isfinite(val).any() else None,
        total_s=float(np.nansum(_column(epochs, C.EPOCH_TIME))),
        peak_memory_mb=float(np.nanmax(memory)) if np.isfinite(memory).any() else float("nan"),
        output_s=float(np.nansum(outputs)) if np.isfinite(outputs := _column(epochs, C.OUTPUT_SECONDS)).any() else None,
        background_s=float(background_s) if isinstance(background_s, (int, float)) and background_s > 0 else None)


def report_lines(ts: TimeSummary, lang: str) -> list[str]:
    """The report's section (a heading and indented lines), with the warning when loader-bound."""
    t = TEXT[lang]
    lines = ["", f"{t['title']}:", "  " + t["rate"].format(v=ts.mean_samples_per_s),
             "  " + t["wait"].format(s=ts.data_wait_s, t=ts.total_s, p=100 * ts.data_share)]
    if ts.val_s is not None:
        lines.append("  " + t["val"].format(s=ts.val_s, p=100 * ts.val_s / ts.total_s if ts.total_s else math.nan))
    if ts.output_s is not None:
        wall = ts.total_s + ts.output_s
        lines.append("  " + t["outputs"].format(s=ts.output_s, p=100 * ts.output_s / wall if wall else math.nan))
    if ts.background_s is not None:
        lines.append("  " + t["background"].format(s=ts.background_s))
    if math.isfinite(ts.peak_memory_mb):
        lines.append("  " + t["memory"].format(v=ts.peak_memory_mb))
    if ts.loader_bound:
        lines.append("  " + t["warn"].format(p=100 * ts.data_share))
    return lines


def time_panel(ax: "Axes", epochs: pd.DataFrame, colors) -> None:
    """Per epoch, stacked: data wait, compute (the rest of the training loop), validation, outputs
    (together the wall time between epoch rows); and the throughput on a second axis."""
    e = epochs[C.EPOCH].to_numpy()
    total, wait, val = (_column(epochs, c) for c in (C.EPOCH_TIME, C.DATA_SECONDS, C.VAL_SECONDS))
    val = np.nan_to_num(val)
    compute = np.clip(total - wait - val, 0, None)
    width = 0.8 if len(e) < 2 else 0.8 * float(np.min(np.diff(e))) if np.all(np.diff(e) > 0) else 0.8
    ax.bar(e, wait, width, color=colors[3], label="data wait")
    ax.bar(e, compute, width, bottom=wait, color=colors[0], label="compute")
    if val.any():
        ax.bar(e, val, width, bottom=wait + compute, color=colors[2], label="validation")
    outputs = np.nan_to_num(_column(epochs, C.OUTPUT_SECONDS))
    if outputs.any():
        ax.bar(e, outputs, width, bottom=wait + compute + val, color=colors[4 % len(colors)], label="outputs")
    ax.set_xlabel(C.EPOCH)
    from matplotlib.ticker import MaxNLocator  # matplotlib: loaded only when drawing
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("Seconds")
    ax.set_title(TEXT["en"]["title"])
    rate = _column(epochs, C.SAMPLES_PER_SECOND)
    twin = ax.twinx()
    twin.plot(e, rate, color=colors[1], marker="o" if len(e) <= 50 else None, ms=4, lw=2, label="samples/s")
    twin.set_ylabel("Samples per second")
    twin.grid(False)
    # headroom above the tallest bar and the throughput line: the legend sits there, over no data
    top = np.nanmax(total) if np.isfinite(total).any() else 1.0
    ax.set_ylim(0, HEADROOM * (top if top > 0 else 1.0))
    fastest = np.nanmax(rate) if np.isfinite(rate).any() else 1.0
    twin.set_ylim(0, HEADROOM * (fastest if fastest > 0 else 1.0))
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper center", ncol=4, fontsize=9)
