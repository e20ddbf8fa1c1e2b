"""Per-class columns (``Val_Dice_<class>``, ``Val_HD95_<class>``, ``Val_NSD_<class>``) in the
figures: the panels that draw them (which columns they are: ``medic.store.columns``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medic.store import columns as C
from medic.store.columns import PER_CLASS, per_class_prefix

LINE_STYLES = ("-", "--", ":", "-.")

if TYPE_CHECKING:  # the live monitor uses the names without loading pandas
    import pandas as pd
    from matplotlib.axes import Axes

def per_class_panel(ax: "Axes", epochs: "pd.DataFrame", prefix: str, columns: list[str], colors,
                    **line) -> None:
    """One family's curves, one line per class (with Val_Dice, the mean, in the Dice panel)."""
    e = epochs[C.EPOCH].to_numpy()
    if prefix == C.DICE_PREFIX and C.VAL_DICE in epochs.columns:
        ax.plot(e, epochs[C.VAL_DICE], color="0.2", lw=2.5, label=f"{C.VAL_DICE} (mean)", **line)
    for i, c in enumerate(columns):
        ax.plot(e, epochs[c], color=colors[(1 + i) % len(colors)], lw=1.8, label=c[len(prefix):], **line)
    ax.set_title(PER_CLASS[prefix])
    ax.set_xlabel(C.EPOCH)
    from matplotlib.ticker import MaxNLocator  # matplotlib: loaded only when drawing
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    unit = C.describe(prefix[:-1]).unit
    ax.set_ylabel(PER_CLASS[prefix].split()[-1] + (f" ({unit})" if unit else ""))
    if prefix != C.HD95_PREFIX:
        ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize=8, ncol=2 if len(columns) > 6 else 1)


def per_class_compare(ax: "Axes", runs: "list[tuple[str, pd.DataFrame]]", columns: list[str], colors) -> None:
    """Per-class Dice of several runs: a colour per run, a line style per class."""
    for i, (label, frame) in enumerate(runs):
        for j, c in enumerate(columns):
            ax.plot(frame[C.EPOCH], frame[c], color=colors[i % len(colors)], ls=LINE_STYLES[j % len(LINE_STYLES)],
                    lw=1.8)
    for j, c in enumerate(columns):  # the legend names the classes; the runs' colours are in the figure's
        ax.plot([], [], color="0.3", ls=LINE_STYLES[j % len(LINE_STYLES)], lw=1.8, label=c[len(C.DICE_PREFIX):])
    ax.set_title("Per-class Dice vs Epoch (line style: class; colour: run)")
    ax.set_xlabel(C.EPOCH)
    from matplotlib.ticker import MaxNLocator  # matplotlib: loaded only when drawing
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)  # beside the panel, over no curve


def shared_per_class_dice(frames: "list[pd.DataFrame]") -> list[str]:
    """The per-class Dice columns every run has, in the first run's order."""
    first = [c for c in frames[0].columns if per_class_prefix(c) == C.DICE_PREFIX]
    return [c for c in first if all(c in f.columns for f in frames[1:])]
