"""Validation pictures a segmentation user can read: the truth and the prediction drawn over the
image, in one colour per class with a legend by label name, each panel titled with the case and
the slice. The best epoch's picture (``best_epoch_N.png``) and the strip of every validation
(``strip/epoch_N.png``) are drawn here, so they show the same plane in the same colours: straight
into pixels, by the run's background writers; ``panel`` and ``legend`` draw the same on a
matplotlib figure in a notebook (``medic.train.predict.prediction_figure``).

    a case       a 2D image, or the slice of a volume (along its last axis: axial in RAS) with the
                 most foreground in the truth or the prediction
    orientation  "ras": a reoriented volume's slice, shown with anterior up and the patient's right
                 on the right (neurological convention); "columns": a picture MONAI read columns
                 first; "image": as the array is (rows down)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
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


def displayed(a: np.ndarray, orientation: str) -> np.ndarray:
    """``a`` as it is shown, first row at the top."""
    if orientation == "ras":
        return a.T[::-1]  # anterior up, the patient's right on the right
    return a.T if orientation == "columns" else a


def window(image: np.ndarray) -> tuple[float, float]:
    """The grey window: the 1st and 99th percentiles of the finite values (a few bright voxels
    must not darken the anatomy)."""
    finite = image[np.isfinite(image)]
    lo, hi = (float(v) for v in np.percentile(finite, (1, 99))) if finite.size else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1


def colour(c: int) -> str:
    """Class ``c``'s colour (c >= 1)."""
    return CLASS_COLORS[(c - 1) % len(CLASS_COLORS)]


def _colours(n_classes: int):
    from matplotlib.colors import ListedColormap
    return ListedColormap([colour(c) for c in range(1, max(2, n_classes))])


def panel(ax, image: np.ndarray, labels: np.ndarray | None, n_classes: int, orientation: str, title: str) -> None:
    """On a matplotlib axes (a figure in a notebook): the image in grey, the labels over it, each
    class filled translucently, so the anatomy stays visible under the mask."""
    lo, hi = window(image)
    ax.imshow(displayed(image, orientation), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if labels is not None:
        lab = displayed(labels.astype(np.int64), orientation)
        if lab.any():
            ax.imshow(np.ma.masked_less_equal(lab, 0), cmap=_colours(n_classes), vmin=1, vmax=max(2, n_classes - 1),
                      alpha=ALPHA, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _where(s: Shown, orientation: str) -> str:
    name = f"case {s.case}" if s.case.isdigit() else s.case  # a data set without names: its position
    if s.index is None:
        return name
    return f"{name}, slice {s.index}" + (" (axial)" if orientation == "ras" else "")


def key_entries(label_names: list[str], n_classes: int) -> list[tuple[int, str]]:
    """The legend's entries: each foreground class and ``"c: name"`` (``class_c`` unnamed)."""
    names = list(label_names)[1:n_classes] or [f"class_{c}" for c in range(1, n_classes)]
    return [(c, f"{c}: {name}") for c, name in enumerate(names, start=1)]


def legend(fig, label_names: list[str], n_classes: int) -> None:
    """The classes by name, below the panels (never over the data)."""
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=colour(c), alpha=0.8, label=text) for c, text in key_entries(label_names, n_classes)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=9,
               frameon=False)


# the pictures a run writes: drawn straight into pixels (0.02 s of CPU a picture, most of it the PNG
# encoder, where a matplotlib figure took 0.2 s of the cores the training runs on)
PAD, TITLE_PX, HEAD_PX, KEY_PX = 8, 20, 30, 24
FONT_PX, HEAD_FONT_PX = 12, 15  # 9 and 11 points at 96 dpi, as the notebook figures


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont
    try:
        import matplotlib
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], np.float32)


def tile(image: np.ndarray, labels: np.ndarray | None, orientation: str, px: int = PANEL_PX):
    """One panel as a ``px``×``px`` RGB picture: the image in grey (``window``), each class of
    ``labels`` blended over it in its colour, scaled up without smoothing (each voxel a block)
    and centred."""
    from PIL import Image
    img = displayed(np.asarray(image, np.float32), orientation)
    lo, hi = window(img)
    grey = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:
        lab = displayed(np.asarray(labels), orientation)
        for c in np.unique(lab[lab > 0]):
            on = lab == c
            rgb[on] = (1.0 - ALPHA) * rgb[on] + ALPHA * _rgb(colour(int(c)))
    h, w = rgb.shape[:2]
    scale = px / max(h, w, 1)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pic = Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.NEAREST)
    out = Image.new("RGB", (px, px), "white")
    out.paste(pic, ((px - size[0]) // 2, (px - size[1]) // 2))
    return out


def _text(draw, xy: tuple[float, float], text: str, size: int, width: int) -> None:
    """``text`` centred on ``xy``, shortened with an ellipsis to fit ``width`` pixels."""
    font = _font(size)
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        text = text[:-2].rstrip() + "…"
    draw.text(xy, text, fill="black", font=font, anchor="mm")


def _key(draw, canvas_width: int, top: int, label_names: list[str], n_classes: int) -> None:
    """The classes by name, in rows of up to six below the panels (never over the data)."""
    font = _font(FONT_PX)
    items = key_entries(label_names, n_classes)
    for row in range(0, len(items), 6):
        line = items[row:row + 6]
        widths = [18 + draw.textlength(text, font=font) for _, text in line]
        x, y = (canvas_width - sum(widths) - 16 * (len(line) - 1)) / 2, top + KEY_PX * (row // 6) + KEY_PX / 2
        for (c, text), w in zip(line, widths):
            fill = tuple(int(v) for v in 255 - 0.8 * (255 - _rgb(colour(c))))  # as a translucent fill on white
            draw.rectangle([x, y - 6, x + 12, y + 6], fill=fill)
            draw.text((x + 18, y), text, fill="black", font=font, anchor="lm")
            x += w + 16


def picture(grid: list[list[tuple[Shown, bool, str]]], label_names: list[str], n_classes: int, title: str,
            orientation: str):
    """Panels in rows, each ``(case, the labels drawn over its image or None, panel title)``; the
    run's title above, the key of the classes below."""
    from PIL import Image, ImageDraw
    cols, rows = max(len(r) for r in grid), len(grid)
    cell_w, cell_h = PANEL_PX + PAD, TITLE_PX + PANEL_PX + PAD
    keys = -(-max(1, n_classes - 1) // 6)
    width, height = PAD + cols * cell_w, HEAD_PX + rows * cell_h + keys * KEY_PX + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    _text(draw, (width / 2, HEAD_PX / 2 + 2), title, HEAD_FONT_PX, width - 2 * PAD)
    for r, row in enumerate(grid):
        for c, (s, labels, name) in enumerate(row):
            x, y = PAD + c * cell_w, HEAD_PX + r * cell_h
            _text(draw, (x + PANEL_PX / 2, y + TITLE_PX / 2), name, FONT_PX, PANEL_PX)
            canvas.paste(tile(s.image, labels, orientation), (x, y + TITLE_PX))
    _key(draw, width, HEAD_PX + rows * cell_h, label_names, n_classes)
    return canvas


def best_picture(cases: list[Shown], label_names: list[str], n_classes: int, title: str, orientation: str = "image"):
    """One row per case: the image, the truth over it, the prediction over it."""
    grid = [[(s, None, _where(s, orientation)), (s, s.truth, "ground truth"), (s, s.pred, "prediction")]
            for s in cases]
    return picture(grid, label_names, n_classes, title, orientation)


def strip_picture(cases: list[Shown], label_names: list[str], n_classes: int, title: str, orientation: str = "image"):
    """One row: for each case, the truth over the image, then the prediction over it."""
    grid = [[cell for s in cases for cell in ((s, s.truth, f"{_where(s, orientation)}: truth"),
                                               (s, s.pred, "prediction"))]]
    return picture(grid, label_names, n_classes, title, orientation)


def save(path: Path, draw, cases: list[Shown], *args, **kwargs) -> None:
    """``draw(cases, ...)`` (``best_picture`` for ``results/<id>/best_epoch_N.png``,
    ``strip_picture`` for ``results/<id>/strip/epoch_N.png``) saved as PNG; nothing without cases."""
    if not cases:
        return
    image = draw(cases, *args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: image.save(f, format="PNG", compress_level=1))
