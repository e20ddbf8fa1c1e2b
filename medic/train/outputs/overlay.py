"""Validation pictures a segmentation user can read: the truth and the prediction drawn over the
image, in one colour per class with a legend by label name, each panel titled with the case and
the slice. The best epoch's picture (``best_epoch_N.png``) and the strip of every validation
(``strip/epoch_N.png``) are drawn here, so they show the same plane in the same colours.

    a case       a 2D image, or the slice of a volume (along its last axis: axial in RAS) with the
                 most foreground in the truth or the prediction
    orientation  "ras": a reoriented volume's slice, shown with anterior up and the patient's right
                 on the right (neurological convention); "columns": a picture MONAI read columns
                 first; "image": as the array is (rows down)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medic.store.files import write_atomic

PANEL_PX = 288  # at least 256 px per panel, so a strip can be read in the monitor
DPI = 96
# one colour per foreground class (1, 2, ...), chosen to stand out on a grey image
CLASS_COLORS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff375f")
ALPHA = 0.45


@dataclass
class Shown:
    """One case as drawn: its name, the slice index (None for a 2D image) and the 2D arrays."""

    case: str
    index: int | None
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


def best_slice(truth: np.ndarray, pred: np.ndarray) -> int:
    """The index along the last axis of the slice with the most foreground in the truth or the
    prediction (the middle one if there is none)."""
    fg = (np.asarray(truth) > 0) | (np.asarray(pred) > 0)
    counts = fg.reshape(-1, fg.shape[-1]).sum(axis=0)
    return int(counts.argmax()) if counts.any() else fg.shape[-1] // 2


def shown(case: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> Shown:
    """A case ready to draw: a 2D image as it is, a volume by its ``best_slice``."""
    image, truth, pred = (np.asarray(a) for a in (image, truth, pred))
    if truth.ndim == 2:
        return Shown(case, None, image.astype(np.float32), truth, pred)
    k = best_slice(truth, pred)
    return Shown(case, k, image[..., k].astype(np.float32), truth[..., k], pred[..., k])


def _oriented(a: np.ndarray, orientation: str) -> tuple[np.ndarray, str]:
    if orientation == "ras":
        return a.T, "lower"
    return (a.T, "upper") if orientation == "columns" else (a, "upper")


def _colours(n_classes: int):
    from matplotlib.colors import ListedColormap
    return ListedColormap([CLASS_COLORS[(c - 1) % len(CLASS_COLORS)] for c in range(1, max(2, n_classes))])


def panel(ax, image: np.ndarray, labels: np.ndarray | None, n_classes: int, orientation: str, title: str) -> None:
    """The image in grey (robust window), and the labels over it: each class filled
    translucently, so the anatomy stays visible under the mask."""
    img, origin = _oriented(image, orientation)
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin=origin, interpolation="nearest")
    if labels is not None:
        lab, _ = _oriented(labels.astype(np.int64), orientation)
        if lab.any():
            ax.imshow(np.ma.masked_less_equal(lab, 0), cmap=_colours(n_classes), vmin=1, vmax=max(2, n_classes - 1),
                      alpha=ALPHA, origin=origin, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _where(s: Shown, orientation: str) -> str:
    name = f"case {s.case}" if s.case.isdigit() else s.case  # a data set without names: its position
    if s.index is None:
        return name
    return f"{name}, slice {s.index}" + (" (axial)" if orientation == "ras" else "")


def legend(fig, label_names: list[str], n_classes: int) -> None:
    """The classes by name, below the panels (never over the data)."""
    from matplotlib.patches import Patch
    names = list(label_names)[1:n_classes] or [f"class_{c}" for c in range(1, n_classes)]
    handles = [Patch(facecolor=CLASS_COLORS[(c - 1) % len(CLASS_COLORS)], alpha=0.8, label=f"{c}: {name}")
               for c, name in enumerate(names, start=1)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=9,
               frameon=False)


def save(path: Path, draw, cases: list[Shown], *args, **kwargs) -> None:
    """``draw(cases, ...)`` (``best_figure`` for ``results/<id>/best_epoch_N.png``,
    ``strip_figure`` for ``results/<id>/strip/epoch_N.png``) saved as PNG; nothing without cases."""
    if not cases:
        return
    fig = draw(cases, *args, **kwargs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))


def best_figure(cases: list[Shown], label_names: list[str], n_classes: int, title: str,
                orientation: str = "image"):
    """One row per case: the image, the truth over it, the prediction over it."""
    from matplotlib.figure import Figure
    side = PANEL_PX / DPI
    fig = Figure(figsize=(3 * side, len(cases) * (side + 0.25) + 0.7), layout="constrained")
    axes = fig.subplots(len(cases), 3, squeeze=False)
    for row, s in zip(axes, cases):
        panel(row[0], s.image, None, n_classes, orientation, _where(s, orientation))
        panel(row[1], s.image, s.truth, n_classes, orientation, "ground truth")
        panel(row[2], s.image, s.pred, n_classes, orientation, "prediction")
    legend(fig, label_names, n_classes)
    fig.suptitle(title, fontsize=11)
    return fig


def strip_figure(cases: list[Shown], label_names: list[str], n_classes: int, title: str,
                 orientation: str = "image"):
    """One row: for each case, the truth over the image, then the prediction over it."""
    from matplotlib.figure import Figure
    side = PANEL_PX / DPI
    fig = Figure(figsize=(2 * len(cases) * side, side + 0.9), layout="constrained")
    axes = fig.subplots(1, 2 * len(cases), squeeze=False)[0]
    for i, s in enumerate(cases):
        panel(axes[2 * i], s.image, s.truth, n_classes, orientation, f"{_where(s, orientation)}: truth")
        panel(axes[2 * i + 1], s.image, s.pred, n_classes, orientation, "prediction")
    legend(fig, label_names, n_classes)
    fig.suptitle(title, fontsize=11)
    return fig
