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
from medic.store import columns as C
# the one direction rule (the registry's), under the name the analysis API has always had
from medic.store.columns import direction as metric_mode  # noqa: F401

MAX_POINTS = 4000  # per plotted line
TOP_EPOCHS = 5


def extra_metrics(epochs: pd.DataFrame) -> list[str]:
    """The numeric metric columns after the nine standard ones (Val_Loss, Val_Dice, ...), the
    timing and memory columns left out (``medic.analysis.timing`` shows those)."""
    return [c for c in C.metric_columns(epochs.columns) if pd.api.types.is_numeric_dtype(epochs[c])]


def monitor_of(epochs: pd.DataFrame, sidecar: dict[str, Any] | None = None) -> tuple[str, str]:
    """The metric that ``Best_Loss_So_Far`` tracks and its direction: from the sidecar, else
    guessed by matching the running best of each candidate column."""
    side = sidecar or {}
    config = side.get("config") if isinstance(side.get("config"), dict) else {}
    name = side.get("monitor") or config.get("monitor")
    if name in epochs.columns:
        return name, side.get("monitor_mode") or metric_mode(name)
    best = epochs[C.BEST_SO_FAR].to_numpy(dtype=float)
    for name in [C.AVG_LOSS] + extra_metrics(epochs):
        mode = metric_mode(name)
        values = epochs[name].astype(float)
        running = (values.cummin() if mode == "min" else values.cummax()).to_numpy()
        if len(best) and np.allclose(running, best, rtol=1e-5, atol=1e-7, equal_nan=True):
            return name, mode
    return C.AVG_LOSS, "min"


def top_epochs(epochs: pd.DataFrame, monitor: str, mode: str, n: int = TOP_EPOCHS,
               full: bool = False) -> pd.DataFrame:
    """The ``n`` best epochs by the monitored metric in its direction (epochs without a value of
    it left out), best first.

    Args:
        epochs: a typed epoch frame (``read_epoch_csv``).
        monitor: the column to rank by, ``mode`` its direction (``monitor_of`` gives both).
        n: how many epochs.
        full: every column; else Epoch, the monitor, Avg_Loss, Learning_Rate.
    """
    finite = epochs[np.isfinite(epochs[monitor].to_numpy(dtype=float))]
    best = finite.nsmallest(n, monitor) if mode == "min" else finite.nlargest(n, monitor)
    shown = list(best.columns) if full else list(dict.fromkeys([C.EPOCH, monitor, C.AVG_LOSS, C.LEARNING_RATE]))
    return best[shown].reset_index(drop=True)


@dataclass
class EpochSummary:
    """Everything the text report says about an epoch CSV."""

    epochs: int
    first_epoch: int
    last_epoch: int
    total_time_s: float  # the run's duration: the sum of Epoch_Time_Seconds (columns.training_seconds)
    mean_epoch_s: float
    initial_loss: float
    final_loss: float
    best_loss: float
    best_loss_epoch: int
    improvement: float  # initial - final
    improvement_pct: float  # of the initial loss
    initial_lr: float
    final_lr: float
    top: pd.DataFrame  # the 5 best epochs by the monitor: Epoch, [monitor,] Avg_Loss, Learning_Rate
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
    loss = epochs[C.AVG_LOSS]
    best_loss, best_epoch = best_of(loss, epochs[C.EPOCH], "min")
    initial, final = float(loss.iloc[0]), float(loss.iloc[-1])
    improvement = initial - final
    monitor, mode = monitor_of(epochs, sidecar)
    best_mon, best_mon_epoch = best_of(epochs[monitor], epochs[C.EPOCH], mode)
    extras = {}
    for name in extra_metrics(epochs):
        m = mode if name == monitor else metric_mode(name)
        value, at = best_of(epochs[name], epochs[C.EPOCH], m)
        extras[name] = {"final": float(epochs[name].iloc[-1]), "best": value, "best_epoch": at, "mode": m}
    side = sidecar or {}
    planned = side.get("epochs") or (side.get("config") or {}).get("epochs")
    times = epochs[C.EPOCH_TIME]
    return EpochSummary(
        epochs=len(epochs), first_epoch=int(epochs[C.EPOCH].iloc[0]), last_epoch=int(epochs[C.EPOCH].iloc[-1]),
        total_time_s=C.training_seconds(times), mean_epoch_s=float(times.mean()),
        initial_loss=initial, final_loss=final, best_loss=best_loss, best_loss_epoch=best_epoch or 0,
        improvement=improvement,
        improvement_pct=improvement / initial * 100 if initial and math.isfinite(initial) else float("nan"),
        initial_lr=float(epochs[C.LEARNING_RATE].iloc[0]), final_lr=float(epochs[C.LEARNING_RATE].iloc[-1]),
        top=top_epochs(epochs, monitor, mode),
        monitor=monitor, monitor_mode=mode, best_monitored=best_mon, best_monitored_epoch=best_mon_epoch,
        extras=extras, nonfinite_epochs=int((~np.isfinite(loss.to_numpy(dtype=float))).sum()),
        planned_epochs=int(planned) if isinstance(planned, (int, float)) and planned > 0 else None,
        status=status, timing=summarize_time(epochs, side.get("background_output_s")))


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
