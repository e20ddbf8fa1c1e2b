"""The live monitor's figure, rendered to PNG bytes.

Built on a bare ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot): nothing global is
touched, so a background thread can render while the kernel runs other cells. Long batch series
are downsampled (MinMaxLTTB, which keeps the spikes) before plotting, so a redraw costs about the
same at 100 and at 100,000 batches.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from medic.store import columns as C
from medic.store.columns import PER_CLASS, split_per_class

if TYPE_CHECKING:  # pragma: no cover
    from medic.live.feed import RunFeed

MAX_POINTS = 2000  # per plotted line; more points than pixels only cost time
COLORS = {"loss": "#1f77b4", "best": "#d62728", "val": "#ff7f0e", "lr": "#2ca02c",
          "time": "#9467bd", "batch": "#7f7f7f"}


def loss_like(feed: "RunFeed") -> list[str]:
    """The extra columns of the loss family (the registry's): drawn with the training loss rather
    than in a panel of their own."""
    return [c for c in feed.extra_columns if C.drawn_with_loss(c)]


def downsample(x, y, n_out: int = MAX_POINTS):
    """At most ``n_out`` points of the series (x ascending), keeping its extremes; non-finite
    values are dropped."""
    import numpy as np
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) <= n_out:
        return x, y
    try:
        from tsdownsample import MinMaxLTTBDownsampler
        idx = MinMaxLTTBDownsampler().downsample(x, y, n_out=n_out)
    except Exception:  # tsdownsample missing or refusing the input: an even stride still shows the shape
        idx = np.linspace(0, len(x) - 1, n_out).astype(int)
    return x[idx], y[idx]


def _marker(epochs: list, shape: str = "o") -> str | None:
    """Markers while there are few epochs (each one visible), plain lines after."""
    return shape if len(epochs) <= 60 else None


def _empty(ax, text: str = "no data yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888888")
    ax.set_xticks([])
    ax.set_yticks([])


def _monitor(feed: "RunFeed") -> str:
    """The column that Best_Loss_So_Far tracks."""
    return feed.monitor


def _best_line(ax, feed: "RunFeed", ep: list) -> None:
    best = feed.epoch_values(C.BEST_SO_FAR)
    if best:
        ax.step(ep, best, where="post", color=COLORS["best"], linestyle="--", linewidth=1.2,
                label="best so far")


def _loss_panel(ax, feed: "RunFeed") -> None:
    ep = feed.epoch_values(C.EPOCH)
    if not ep:
        return _empty(ax, "waiting for the first epoch")
    avg = feed.epoch_values(C.AVG_LOSS)
    lo, hi = feed.epoch_values(C.MIN_BATCH_LOSS), feed.epoch_values(C.MAX_BATCH_LOSS)
    ax.fill_between(ep, lo, hi, color=COLORS["loss"], alpha=0.18, linewidth=0, label="batch min–max")
    ax.plot(ep, avg, "-", marker=_marker(ep), color=COLORS["loss"], markersize=3, label=C.AVG_LOSS)
    best = feed.epoch_values(C.BEST_SO_FAR)
    if C.is_loss(_monitor(feed)):  # else the line is drawn with its metric
        _best_line(ax, feed, ep)
    for name in loss_like(feed):
        if name in feed.columns:
            ax.plot(ep, feed.epoch_values(name), "-", marker=_marker(ep, "s"), color=COLORS["val"],
                    markersize=3, label=name)
    flags = feed.epoch_values(C.IS_BEST)
    best_eps = [e for e, f in zip(ep, flags) if f]
    title = C.LOSS
    if best_eps and best:
        i = ep.index(best_eps[-1])
        name = "" if _monitor(feed) == C.AVG_LOSS else f"{_monitor(feed)} "
        title += f"  (best {name}{best[i]:.4g} at epoch {best_eps[-1]:g})"
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8, loc="upper right")


def _lr_panel(ax, feed: "RunFeed") -> None:
    ep, lr = feed.epoch_values(C.EPOCH), feed.epoch_values(C.LEARNING_RATE)
    if not ep:
        return _empty(ax)
    ax.step(ep, lr, where="post", color=COLORS["lr"], marker=_marker(ep), markersize=3)
    positive = [v for v in lr if v > 0 and math.isfinite(v)]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")
    ax.set_title(f"Learning rate  (now {lr[-1]:.3g})")
    ax.set_xlabel("epoch")


def _time_panel(ax, feed: "RunFeed") -> None:
    ep, secs = feed.epoch_values(C.EPOCH), feed.epoch_values(C.EPOCH_TIME)
    if not ep:
        return _empty(ax)
    if len(ep) <= 60:
        ax.bar(ep, secs, color=COLORS["time"], width=0.8)
    else:  # one filled step artist: hundreds of bars cost more than the rest of the figure
        ax.fill_between(ep, 0, secs, step="mid", color=COLORS["time"], alpha=0.35, linewidth=0)
        ax.step(ep, secs, where="mid", color=COLORS["time"], linewidth=1)
        ax.set_ylim(bottom=0)
    finite = [s for s in secs if math.isfinite(s)]
    rate = feed.samples_per_s()
    shown = f", {rate:.1f} samples/s" if math.isfinite(rate) else ""
    ax.set_title(f"Time per epoch  (mean {sum(finite) / max(len(finite), 1):.1f} s{shown})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds")


def _batch_panel(ax, feed: "RunFeed") -> None:
    x, y = feed.batch_series()
    if len(x) == 0:
        return _empty(ax, "waiting for the first batches")
    n = len(x)
    x, y = downsample(x, y)
    ax.plot(x, y, color=COLORS["batch"], linewidth=0.7, label="batch loss")
    ep = feed.epoch_values(C.EPOCH)
    if ep:
        ax.plot(ep, feed.epoch_values(C.AVG_LOSS), "-", marker=_marker(ep), color=COLORS["loss"],
                markersize=3, label="epoch mean")
    ax.set_title(f"Batch loss  ({n:,} batches" + (f", {len(x):,} drawn)" if len(x) < n else ")"))
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8, loc="upper right")


def _extras_panel(ax, feed: "RunFeed", names: list[str]) -> None:
    ep = feed.epoch_values(C.EPOCH)
    if not ep:
        return _empty(ax)
    for name in names:
        ax.plot(ep, feed.epoch_values(name), "-", marker=_marker(ep), markersize=3, label=name)
    if _monitor(feed) in names:
        _best_line(ax, feed, ep)
    ax.set_title("Other metrics")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)


def _per_class_panel(ax, feed: "RunFeed", prefix: str, names: list[str]) -> None:
    ep = feed.epoch_values(C.EPOCH)
    if not ep:
        return _empty(ax)
    if prefix == C.DICE_PREFIX and C.VAL_DICE in feed.columns:
        ax.plot(ep, feed.epoch_values(C.VAL_DICE), "-", color="0.2", linewidth=2, label=f"{C.VAL_DICE} (mean)")
    for name in names:
        ax.plot(ep, feed.epoch_values(name), "-", marker=_marker(ep), markersize=3, label=name[len(prefix):])
    if _monitor(feed) in names or (prefix == C.DICE_PREFIX and _monitor(feed) == C.VAL_DICE):
        _best_line(ax, feed, ep)
    ax.set_title(PER_CLASS[prefix])
    ax.set_xlabel("epoch")
    # the legend in rows of 4 above the curves, in headroom made for it: the curves run across the
    # whole panel, so no corner is free of data
    entries = len(ax.get_legend_handles_labels()[1])
    rows = math.ceil(entries / 4)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + (hi - lo) * (0.12 + 0.16 * rows) / (0.88 - 0.16 * rows))
    ax.legend(fontsize=7, ncol=min(entries, 4), loc="upper left")


def render_png(feed: "RunFeed", dpi: int = 72) -> bytes:
    """The monitor's figure for the data in ``feed`` as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [_loss_panel, _lr_panel, _time_panel]
    if feed.logs_batches:
        panels.append(_batch_panel)
    extras, per_class = split_per_class([c for c in feed.extra_columns if not C.drawn_with_loss(c)])
    if C.DICE_PREFIX in per_class:  # its panel draws the mean already: not twice
        extras = [c for c in extras if c != C.VAL_DICE]
    if extras:
        panels.append(lambda ax, f: _extras_panel(ax, f, extras))
    for prefix, names in per_class.items():
        panels.append(lambda ax, f, p=prefix, n=names: _per_class_panel(ax, f, p, n))
    cols = 2 if len(panels) <= 4 else 3
    rows = math.ceil(len(panels) / cols)
    height = 3.1 * rows
    fig = Figure(figsize=(5.5 * cols, height), dpi=dpi)
    # fixed margins: a layout engine would cost a second full draw on every refresh
    fig.subplots_adjust(left=0.06, right=0.985, top=1 - 0.75 / height, bottom=0.5 / height,
                        wspace=0.2, hspace=0.55)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, draw in zip(axes, panels):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        draw(ax, feed)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"run {feed.run_id}", fontsize=11, y=1 - 0.08 / height)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
