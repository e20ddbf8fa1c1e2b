"""Which epoch is best, and when to stop: the monitored metric's direction, its exponential
moving average, the top-k checkpoints and the patience of early stopping.

    value     = the monitored column (Avg_Loss, Val_Loss, Val_Dice, Val_Dice_<class>, ...)
    smoothed  = A · previous smoothed + (1 − A) · value      (--monitor_ema A; off when A = 0)
    selected  = smoothed when the EMA is on, else value: it decides best_model.pth, the top-k
                files and Best_Loss_So_Far, and its patience counts validations without an
                improvement of more than --min_delta
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from medic.errors import MedicError
from medic.store import columns as C
from medic.store.logger import improves  # the one rule, shared with MetricsLogger

METRICS = ("dice", "hd95", "nsd")
COLUMN_PREFIX = {"dice": C.DICE_PREFIX, "hd95": C.HD95_PREFIX, "nsd": C.NSD_PREFIX}
TOP_K_RE = re.compile(r"^epoch_(\d+)_(.+)_(-?[0-9.]+(?:e-?\d+)?|nan|inf)\.pth$")


def column_safe(name: str) -> str:
    """A label name as a column suffix: anything but letters, digits and ``_`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(name))


def validation_columns(names: list[str], val_metrics: str) -> list[str]:
    """The epoch columns of a validation: Val_Loss, Val_Dice, the per-class Dice columns, then
    HD95 and NSD per class when asked for (``val_metrics``: e.g. ``"dice,hd95"``)."""
    asked = val_metrics.split(",")
    return [C.VAL_LOSS, C.VAL_DICE] + [COLUMN_PREFIX[m] + n for m in METRICS if m in asked for n in names]


def selected_name(monitor: str, ema: float) -> str:
    """The name of the value that selects the model: the monitor, or its EMA column."""
    return C.ema_of(monitor) if ema > 0 else monitor


def check_monitor(monitor: str, columns: list[str]) -> None:
    """The monitored name must be one the run records."""
    valid = [C.AVG_LOSS] + [c for c in columns if c != C.NONFINITE_BATCHES and not c.endswith(C.EMA_SUFFIX)]
    if monitor not in valid:
        raise MedicError(f"--monitor {monitor}: not a metric of this run; valid names: {', '.join(valid)}")


@dataclass
class Decision:
    selected: float          # the value that selects the model (smoothed when the EMA is on)
    smoothed: float | None   # the EMA, when on
    stop: str = ""           # the early-stop message, when patience ran out


class Selector:
    """The EMA and the patience count of one run. ``state()`` goes into checkpoints: the EMA
    continues after a resume; the patience count starts afresh."""

    def __init__(self, monitor: str, mode: str, ema: float = 0.0, patience: int = 0, min_delta: float = 0.0,
                 state: dict | None = None):
        self.monitor, self.mode, self.ema, self.patience, self.min_delta = monitor, mode, ema, patience, min_delta
        self.smoothed: float | None = (state or {}).get("smoothed")
        self.patience_best: float | None = None
        self.waited = 0

    def state(self) -> dict:
        return {"smoothed": self.smoothed}

    def update(self, value: float) -> Decision:
        """One validation's monitored value (for Avg_Loss: one epoch's)."""
        if self.ema > 0:
            if self.smoothed is None or not math.isfinite(self.smoothed):
                self.smoothed = value
            else:
                self.smoothed = self.ema * self.smoothed + (1 - self.ema) * value
        selected = self.smoothed if self.ema > 0 else value
        stop = ""
        if self.patience:
            if improves(selected, self.patience_best, self.mode, self.min_delta):
                self.patience_best, self.waited = selected, 0
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    stop = f"early stop: {selected_name(self.monitor, self.ema)} did not improve for {self.waited} validations"
        return Decision(selected, self.smoothed if self.ema > 0 else None, stop)


def top_k_name(epoch: int, monitor: str, value: float) -> str:
    return f"epoch_{epoch}_{monitor}_{value:.6f}.pth"


def top_k_files(folder: Path) -> list[tuple[float, int, Path]]:
    """The kept top-k checkpoints: (value, epoch, path)."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = TOP_K_RE.match(p.name)
        if m:
            found.append((float(m.group(3)), int(m.group(1)), p))
    return found


def top_k_plan(folder: Path, k: int, epoch: int, value: float, mode: str) -> tuple[bool, list[Path]]:
    """Whether epoch's value enters the top k, and which kept files then fall out (to remove only
    once the new file is on disk). Ties keep the earlier epoch. Files of epochs at or after
    ``epoch`` (left by a run that was resumed from an earlier point) fall out too."""
    if k <= 0 or not math.isfinite(value):
        return False, []
    kept = [(v, e, p) for v, e, p in top_k_files(folder) if e < epoch]
    stale = [p for v, e, p in top_k_files(folder) if e >= epoch]
    sign = 1 if mode == "min" else -1
    ranked = sorted(kept + [(value, epoch, None)], key=lambda t: (sign * t[0], t[1]))
    keep = ranked[:k]
    enters = any(p is None for _, _, p in keep)
    return enters, stale + [p for _, _, p in ranked[k:] if p is not None]
