"""Every column of the epoch and batch CSVs, in one place: its name, family, direction, unit, the
panel it is drawn in and a one-line meaning. Every view asks this module — which columns are
losses, which way is better, where a column is drawn — and nothing else.

    from medic.store import columns as C
    C.describe("Val_HD95_Left_Accumbens_area").direction   # "min": from HD95, not from the label
    C.direction("Val_Dice", "auto")                         # "max"; "min"/"max" override

Families: ``loss``, ``metric`` (a segmentation metric: Dice, HD95, NSD, a plug-in's accuracy),
``per_class`` (``Val_Dice_<class>``, ``Val_HD95_<class>``, ``Val_NSD_<class>``), ``timing``,
``memory``, ``count``, and the record's own ``position`` (Epoch, Batch, Timestamp), ``schedule``
(Learning_Rate) and ``best`` (Best_Loss_So_Far, Is_Best_Model).

Columns this module does not list (a plug-in's, a ``MetricsLogger`` user's) are described by a
pattern on the *metric part* of the name: drop a stage word (``Val``, ``Train``, ``Test``) and
an aggregate word (``Mean``, ``Avg``, ``Macro``, ...), and the first word left is the metric
(``Val_IoU_Left_Accumbens_area`` → ``IoU``; ``val/acc_epoch`` → ``acc``). Words after it (a class
name, a suffix) never decide the direction. The metric is a loss when it contains ``loss``
(minimised), maximised when it is one of ``MAXIMISED`` (Dice, accuracy, IoU, AUC, F1, precision,
recall, ...), else minimised; such an other metric whose name ends in ``Seconds``/``Time`` is a
timing, in ``MB``/``Memory`` a memory. ``--monitor_mode min|max`` overrides the direction.
``register`` adds a column (a plug-in's own metric) to the registry.

A run's duration is the sum of its ``Epoch_Time_Seconds`` (``training_seconds``), shown as
``format_duration`` renders it; the ETA is ``eta_seconds``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

# --- the names ------------------------------------------------------------------------------
EPOCH, BATCH, LOSS, TIMESTAMP = "Epoch", "Batch", "Loss", "Timestamp"
AVG_LOSS, MIN_BATCH_LOSS, MAX_BATCH_LOSS = "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss"
LEARNING_RATE, EPOCH_TIME = "Learning_Rate", "Epoch_Time_Seconds"
BEST_SO_FAR, IS_BEST = "Best_Loss_So_Far", "Is_Best_Model"
VAL_LOSS, VAL_DICE, VAL_HD95, VAL_NSD = "Val_Loss", "Val_Dice", "Val_HD95", "Val_NSD"
NONFINITE_BATCHES = "Nonfinite_Batches"
SAMPLES_PER_SECOND, DATA_SECONDS = "Samples_Per_Second", "Data_Seconds"
VAL_SECONDS, PEAK_MEMORY_MB = "Val_Seconds", "Peak_Memory_MB"
OUTPUT_SECONDS = "Output_Seconds"
EMA_SUFFIX = "_EMA"  # the same metric, measured with the EMA weights

EPOCH_COLUMNS = (EPOCH, AVG_LOSS, MIN_BATCH_LOSS, MAX_BATCH_LOSS, LEARNING_RATE, EPOCH_TIME,
                 BEST_SO_FAR, IS_BEST, TIMESTAMP)
BATCH_COLUMNS = (EPOCH, BATCH, LOSS, LEARNING_RATE, TIMESTAMP)
# where an epoch's time goes: last in the row, after the validation columns (medic.train.telemetry)
TELEMETRY_COLUMNS = (SAMPLES_PER_SECOND, DATA_SECONDS, VAL_SECONDS, OUTPUT_SECONDS, PEAK_MEMORY_MB)

# the per-class families, by column prefix (Val_Dice_<class>, ...)
DICE_PREFIX, HD95_PREFIX, NSD_PREFIX = VAL_DICE + "_", VAL_HD95 + "_", VAL_NSD + "_"
PER_CLASS = {DICE_PREFIX: "Per-class Dice", HD95_PREFIX: "Per-class HD95", NSD_PREFIX: "Per-class NSD"}

# --- the registry ---------------------------------------------------------------------------
FAMILIES = ("loss", "metric", "per_class", "timing", "memory", "count", "position", "schedule", "best")
PANELS = ("loss", "metrics", "lr", "time", "throughput", "memory", "")  # "" = not drawn on its own


@dataclass(frozen=True)
class Column:
    """What one column is.

    Args:
        name: the CSV header.
        family: one of ``FAMILIES``.
        direction: ``"min"`` or ``"max"`` (which way is better), None where it does not apply.
        unit: "" for a plain number.
        panel: where the figures draw it (``PANELS``; per-class columns: their family's panel).
        meaning: one line for the reader.
        runs: ``(key, header, how)`` when ``medic runs`` summarises it: the catalog key, the table
            header and ``"mean"``/``"max"``/``"last"`` over the epochs.
    """

    name: str
    family: str
    direction: str | None
    unit: str
    panel: str
    meaning: str
    runs: tuple[str, str, str] | None = None


def _col(name, family, direction, unit, panel, meaning, runs=None) -> Column:
    return Column(name, family, direction, unit, panel, meaning, runs)


REGISTRY: dict[str, Column] = {c.name: c for c in (
    _col(EPOCH, "position", None, "", "", "the epoch, from 1"),
    _col(BATCH, "position", None, "", "", "the batch within its epoch, from 0"),
    _col(TIMESTAMP, "position", None, "", "", "when the row was written (local time)"),
    _col(LOSS, "loss", "min", "", "loss", "the loss of one global batch"),
    _col(AVG_LOSS, "loss", "min", "", "loss", "the epoch's training loss, sample-weighted over all processes"),
    _col(MIN_BATCH_LOSS, "loss", "min", "", "loss", "the lowest global batch loss of the epoch"),
    _col(MAX_BATCH_LOSS, "loss", "min", "", "loss", "the highest global batch loss of the epoch"),
    _col(LEARNING_RATE, "schedule", None, "", "lr", "the learning rate the epoch ended with"),
    _col(EPOCH_TIME, "timing", "min", "s", "time", "the epoch's wall time, validation included"),
    _col(BEST_SO_FAR, "best", None, "", "loss", "the best value of the monitored metric so far"),
    _col(IS_BEST, "best", None, "", "", "True when this epoch saved the best model"),
    _col(VAL_LOSS, "loss", "min", "", "loss", "the validation loss"),
    _col(VAL_DICE, "metric", "max", "", "metrics", "the validation Dice, mean over foreground classes"),
    _col(VAL_HD95, "metric", "min", "mm, or pixels", "metrics", "the 95th-percentile Hausdorff distance"),
    _col(VAL_NSD, "metric", "max", "", "metrics", "the normalised surface Dice at --nsd_tolerance"),
    _col(NONFINITE_BATCHES, "count", "min", "batches", "metrics", "batches skipped for a NaN/Inf loss"),
    _col(SAMPLES_PER_SECOND, "timing", "max", "samples/s", "throughput",
         "training samples per second of the training loop", runs=("samples_per_s", "samples/s", "mean")),
    _col(DATA_SECONDS, "timing", "min", "s", "time", "seconds the slowest process waited for data"),
    _col(VAL_SECONDS, "timing", "min", "s", "time", "seconds of validation"),
    _col(OUTPUT_SECONDS, "timing", "min", "s", "time",
         "seconds between epoch rows outside training and validation: the checkpoints, the row, handing "
         "masks, pictures and case tables to the background writers, and the processes' agreement"),
    _col(PEAK_MEMORY_MB, "memory", "min", "MB", "memory", "the highest peak memory of any process"),
)}

MAXIMISED = frozenset({"dice", "acc", "accuracy", "iou", "miou", "jaccard", "auc", "auroc", "roc", "ap", "map",
                       "f1", "fbeta", "precision", "recall", "sensitivity", "specificity", "tpr", "tnr",
                       "score", "nsd", "ssim", "psnr", "r2"})
_STAGES = frozenset({"val", "valid", "validation", "train", "training", "test", "eval"})
_AGGREGATES = frozenset({"mean", "avg", "average", "macro", "micro", "weighted", "global", "epoch", "batch"})


def register(column: Column) -> Column:
    """Add (or replace) a column in the registry: a plug-in's metric is then drawn, shown and
    ranked like the built-in ones.

    Args:
        column: the column's description.
    """
    if column.family not in FAMILIES or column.panel not in PANELS or column.direction not in ("min", "max", None):
        raise ValueError(f"bad column description: {column}")
    REGISTRY[column.name] = column
    return column


def ema_of(name: str) -> str:
    """The column of ``name`` measured with the EMA weights (``--monitor_ema``)."""
    return name + EMA_SUFFIX


def per_class_prefix(column: str) -> str | None:
    """The per-class family of a column (``Val_Dice_``, ...), None for any other column."""
    if column.endswith(EMA_SUFFIX):
        return None
    return next((p for p in PER_CLASS if column.startswith(p)), None)


def metric_part(name: str) -> str:
    """The word of a column name that names its metric (the pattern in the module docstring)."""
    words = [w for w in re.split(r"[_/\-.\s]+", name) if w]
    while words and words[0].lower() in _STAGES | _AGGREGATES:
        words.pop(0)
    return words[0] if words else name


def describe(name: str) -> Column:
    """The registry's entry for a column; columns it does not list get one from the pattern."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.endswith(EMA_SUFFIX) and len(name) > len(EMA_SUFFIX):
        base = describe(name[:-len(EMA_SUFFIX)])
        return replace(base, name=name, meaning=base.meaning + " (EMA weights)", runs=None)
    prefix = per_class_prefix(name)
    if prefix is not None:
        base = REGISTRY[prefix[:-1]]
        return Column(name, "per_class", base.direction, base.unit, base.panel,
                      f"{base.meaning}, class {name[len(prefix):]}")
    word = metric_part(name).lower()
    if "loss" in word:
        return Column(name, "loss", "min", "", "loss", "a loss (by its name)")
    if word in MAXIMISED:
        return Column(name, "metric", "max", "", "metrics", f"a metric, higher is better ({word})")
    # a metric word it does not know: a unit at the end makes it a time or a size (minimised,
    # like any unknown metric: the direction still never comes from the words after the metric)
    last = re.split(r"[_/\-.\s]+", name)[-1].lower()
    if last in ("seconds", "time", "sec"):
        return Column(name, "timing", "min", "s", "time", "a time (by its name)")
    if last in ("mb", "memory"):
        return Column(name, "memory", "min", "MB", "memory", "a memory size (by its name)")
    return Column(name, "metric", "min", "", "metrics", f"a metric, lower is better ({word})")


def direction(name: str, mode: str | None = "auto") -> str:
    """``"min"`` or ``"max"``: which way ``name`` is better. ``mode`` ``"min"``/``"max"``
    (``--monitor_mode``) overrides; ``"auto"`` or None asks the registry.

    Args:
        name: a column name.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
    """
    if mode in ("min", "max"):
        return mode
    return describe(name).direction or "min"


def is_loss(name: str) -> bool:
    """True for the loss family (``Avg_Loss``, ``Val_Loss``, a plug-in's ``val_loss``)."""
    return describe(name).family == "loss"


def drawn_with_loss(name: str) -> bool:
    """True for a column the figures draw in the loss panel, with the training loss."""
    return describe(name).panel == "loss"


def metric_columns(columns) -> list[str]:
    """The columns after the nine standard ones that the loss and metric panels draw (losses,
    segmentation and per-class metrics, counts); timing and memory have panels of their own."""
    return [c for c in columns if c not in EPOCH_COLUMNS and describe(c).panel in ("loss", "metrics")]


def runs_summaries() -> list[Column]:
    """The columns ``medic runs`` summarises, in registry order."""
    return [c for c in REGISTRY.values() if c.runs]


# --- time -----------------------------------------------------------------------------------
ETA_RECENT = 5  # epochs averaged


def eta_seconds(epoch_times, remaining: float) -> float | None:
    """Remaining epochs × the mean time of the recent epochs: the last ``ETA_RECENT``, leaving the
    first (warm-up) epoch out once there are others. None without a finished epoch. The console,
    the live monitor and ``medic watch`` all show this number.

    Args:
        epoch_times: the finished epochs' ``Epoch_Time_Seconds``, in order (NaN skipped).
        remaining: the epochs (or fractions of one) still to run.
    """
    times = [float(t) for t in epoch_times if t is not None and math.isfinite(float(t))]
    if len(times) > 1:
        times = times[1:]  # the first epoch pays for start-up
    if not times:
        return None
    recent = times[-ETA_RECENT:]
    return max(remaining, 0.0) * sum(recent) / len(recent)


def training_seconds(epoch_times) -> float:
    """A run's duration, the one definition every view shows: the sum of its epochs'
    ``Epoch_Time_Seconds`` (NaN skipped). The sidecar's ``total_time`` is a different thing, the
    process's wall time from start to end, start-up and shutdown included.

    Args:
        epoch_times: the epochs' ``Epoch_Time_Seconds``.
    """
    return float(sum(float(t) for t in epoch_times if t is not None and math.isfinite(float(t))))


def format_duration(seconds: float | None) -> str:
    """A duration or ETA the same way in every view: ``0.4s``, ``8s``, ``2m 05s``, ``1h 03m``;
    ``?`` when unknown (under ten seconds with a tenth: a short run is not "0s")."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 9.95 and abs(seconds - round(seconds)) >= 0.05:
        return f"{max(seconds, 0.0):.1f}s"
    secs = int(round(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60:02d}s"
    return f"{secs // 3600}h {secs % 3600 // 60:02d}m"


# --- one-line rendering ---------------------------------------------------------------------

def split_per_class(columns: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The columns that are not per-class, and the per-class ones by family (in column order)."""
    rest: list[str] = []
    groups: dict[str, list[str]] = {}
    for c in columns:
        prefix = per_class_prefix(c)
        if prefix is None:
            rest.append(c)
        else:
            groups.setdefault(prefix, []).append(c)
    return rest, groups


def compact_cells(header: list[str], row: dict[str, str], skip) -> list[str]:
    """Extra columns for a one-line view: ``Val_Loss 0.41``, and each per-class family as one
    cell, ``Dice class_1 0.912 tumour 0.541`` (3 decimals)."""
    cells, groups = [], {}
    for c in header:
        if c in skip or row.get(c, "") == "":
            continue
        prefix = per_class_prefix(c)
        if prefix is None:
            cells.append(f"{c} {row[c]}")
        else:
            groups.setdefault(prefix, []).append(f"{c[len(prefix):]} {_short(row[c])}")
    return cells + [f"{PER_CLASS[prefix].split()[-1]} " + " ".join(v) for prefix, v in groups.items()]


def _short(text: str) -> str:
    try:
        return f"{float(text):.3f}"
    except ValueError:
        return text
