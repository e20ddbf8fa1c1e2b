"""The numbers behind the figures and reports (``medic.analysis.outputs`` writes them).

For notebooks everything returns objects (DataFrames, dataclasses, matplotlib Figures, strings):

    from medic import analysis
    from medic.analysis import figures
    run = medic.load_run("latest")
    summary = analysis.summarize_epochs(run.epochs, run.sidecar)
    figures.training_figure(run.epochs, monitor=summary.monitor)

Batch CSVs are analysed in ``medic.analysis.batches``. A plotted line keeps at most ``MAX_POINTS``
points (``downsample``: MinMaxLTTB keeps the peaks that matter for spotting instability).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medic.analysis.timing import TimeSummary, summarize_time
from medic.store.columns import metric_mode
from medic.store.logger import EPOCH_COLUMNS, TELEMETRY_COLUMNS

MAX_POINTS = 4000  # per plotted line


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


# --- plotted lines --------------------------------------------------------------------------

def downsample(x: np.ndarray | None, y: np.ndarray, n_out: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``n_out`` points of (x, y) that keep the curve's shape and extremes
    (MinMaxLTTB). ``x`` None means evenly spaced (no index array is built). NaN is never picked."""
    if len(y) <= n_out:
        return np.arange(len(y))
    from tsdownsample import MinMaxLTTBDownsampler
    args = (y,) if x is None else (x, y)
    keep = np.asarray(MinMaxLTTBDownsampler().downsample(*args, n_out=n_out))
    return keep[~np.isnan(y[keep])]
