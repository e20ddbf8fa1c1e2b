"""The per-class epoch columns (``Val_Dice_<class>``, ``Val_HD95_<class>``, ``Val_NSD_<class>``):
which columns they are, and a compact one-line rendering for the console readers."""

from __future__ import annotations

_MAXIMISED = ("dice", "acc", "iou", "auc", "f1", "precision", "recall", "score", "jaccard", "nsd")
PER_CLASS = {"Val_Dice_": "Per-class Dice", "Val_HD95_": "Per-class HD95", "Val_NSD_": "Per-class NSD"}


def metric_mode(name: str) -> str:
    """``"max"`` for metrics where higher is better (Dice, accuracy, IoU, ...), else ``"min"``."""
    return "max" if any(k in name.lower() for k in _MAXIMISED) else "min"


def per_class_prefix(column: str) -> str | None:
    """The per-class family of a column (``Val_Dice_``, ...), None for any other column."""
    if column.endswith("_EMA"):
        return None
    return next((p for p in PER_CLASS if column.startswith(p)), None)


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
