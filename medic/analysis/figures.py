"""The figures of ``medic analyze`` and ``medic compare``, as matplotlib Figures.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot: in a notebook it
shows once (inline), from the CLI it is saved with the Agg canvas, and nothing global —
backend, rcParams — is changed for the caller. One theme (``medic.analysis.theme``: seaborn's
whitegrid look, without importing seaborn) is applied while a figure is built. Lines longer
than ``MAX_POINTS`` are downsampled.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from medic.analysis.perclass import per_class_compare, per_class_panel, shared_per_class_dice
from medic.analysis.theme import PALETTE, RC
from medic.store import columns as C
from medic.store.columns import split_per_class
from medic.analysis.stats import MAX_POINTS, downsample, extra_metrics, metric_mode, monitor_of
from medic.analysis.timing import has_timing, time_panel
from medic.store.files import write_atomic

if TYPE_CHECKING:
    import threading

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from medic.analysis.batches import BatchAnalysis

DPI = 110


@contextmanager
def themed() -> Iterator[list]:
    """Apply the medic theme (``medic.analysis.theme``) while a figure is built; yields the
    colour palette."""
    import matplotlib as mpl
    from cycler import cycler
    with mpl.rc_context({**RC, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield list(PALETTE)


def preload() -> "threading.Thread":
    """Import matplotlib's figure machinery in a background thread (about half a second) while
    the caller does other work, e.g. parses a CSV (numpy and pandas' parser release the GIL);
    ``join()`` it before drawing."""
    import threading

    def load() -> None:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
        import matplotlib.ticker  # noqa: F401

    thread = threading.Thread(target=load, name="medic-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def _figure(width: float, height: float, layout: str | None = "constrained") -> "Figure":
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout=layout)


def save_figure(fig: "Figure", path: str | os.PathLike) -> Path:
    """Save as PNG with the Agg canvas, atomically (a reader never sees half an image)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    path = Path(path)
    FigureCanvasAgg(fig)
    return write_atomic(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))


def _line(ax: "Axes", x, y, max_points: int = MAX_POINTS, **kw):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    keep = downsample(x, y, max_points)
    return ax.plot(x[keep], y[keep], **kw)[0]


def _band(ax: "Axes", x, lo, hi, max_points: int = MAX_POINTS, **kw):
    """A filled band; long series are binned to their envelope (min of lo, max of hi)."""
    x, lo, hi = (np.asarray(a, dtype=float) for a in (x, lo, hi))
    if len(x) > max_points:
        edges = np.linspace(0, len(x), max_points // 2 + 1).astype(np.int64)[:-1]
        x, lo, hi = x[edges], np.fmin.reduceat(lo, edges), np.fmax.reduceat(hi, edges)
    return ax.fill_between(x, lo, hi, **kw)


def _epoch_axis(ax: "Axes", ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.set_xlabel(C.EPOCH)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_if_wide(ax: "Axes", values) -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() > 50:
        from matplotlib.ticker import FuncFormatter, NullFormatter
        ax.set_yscale("log")
        # plain "0.001" / "1e-06" labels: the default 10^x ones go through mathtext, which
        # costs more than drawing the rest of a figure
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _note(ax: "Axes", text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.45")


def training_figure(epochs: pd.DataFrame, monitor: str | tuple[str, str] | None = None,
                    title: str | None = None) -> "Figure":
    """The four panels of docs/reference/files.md ("Analysis outputs") — Training Loss Curve, Loss Range, Learning Rate Schedule,
    Time per Epoch — plus a Validation Metrics panel when the CSV has non-loss extra columns.
    ``monitor``: the column Best_Loss_So_Far tracks (default: guessed from the data)."""
    monitor = monitor or monitor_of(epochs)
    if isinstance(monitor, str):
        monitor = (monitor, metric_mode(monitor))
    extras = extra_metrics(epochs)
    loss_extras = [c for c in extras if C.drawn_with_loss(c)]
    other, per_class = split_per_class([c for c in extras if c not in loss_extras])
    if C.DICE_PREFIX in per_class:  # the per-class Dice panel draws the mean already: not twice
        other = [c for c in other if c != C.VAL_DICE]
    # a row for the other metrics, per-class panels two to a row, and a Where the time goes panel
    # when the CSV has the timing columns
    rows = 2 + (1 if other else 0) + (len(per_class) + 1) // 2 + has_timing(epochs)
    e = epochs[C.EPOCH].to_numpy()
    dots = {"marker": "o", "ms": 4} if len(e) <= 50 else {}  # a few epochs: show where the data is
    with themed() as colors:
        fig = _figure(14, 9 + 4 * (rows - 2))
        grid = fig.add_gridspec(rows, 2)
        ax_loss, ax_range = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        ax_lr, ax_time = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])

        _line(ax_loss, e, epochs[C.AVG_LOSS], color=colors[0], lw=2, label=C.AVG_LOSS, **dots)
        for i, c in enumerate(loss_extras):
            _line(ax_loss, e, epochs[c], color=colors[1 + i % 5], lw=2, label=c, **dots)
        if monitor[0] in [C.AVG_LOSS] + loss_extras:
            _line(ax_loss, e, epochs[C.BEST_SO_FAR], color=colors[2], lw=1.5, ls="--",
                  label=C.BEST_SO_FAR if monitor[0] == C.AVG_LOSS else f"best {monitor[0]} so far")
        best = epochs[epochs[C.IS_BEST]]
        if monitor[0] in [C.AVG_LOSS] + loss_extras and len(best):
            ax_loss.plot(best[C.EPOCH].iloc[-1], best[monitor[0]].iloc[-1], marker="*", ms=14,
                         color=colors[3], ls="none", label=f"best model (epoch {best[C.EPOCH].iloc[-1]})")
        ax_loss.set_title("Training Loss Curve")
        _epoch_axis(ax_loss, C.LOSS)
        _log_if_wide(ax_loss, epochs[C.AVG_LOSS])
        ax_loss.legend(loc="upper right")

        _band(ax_range, e, epochs[C.MIN_BATCH_LOSS], epochs[C.MAX_BATCH_LOSS], color=colors[0],
              alpha=0.25, label="min–max batch loss")
        _line(ax_range, e, epochs[C.AVG_LOSS], color=colors[0], lw=2, label=C.AVG_LOSS)
        ax_range.set_title("Loss Range")
        _epoch_axis(ax_range, "Batch loss")
        ax_range.legend(loc="upper right")

        _line(ax_lr, e, epochs[C.LEARNING_RATE], color=colors[4], lw=2, label=C.LEARNING_RATE, **dots)
        ax_lr.set_title("Learning Rate Schedule")
        _epoch_axis(ax_lr, "Learning rate")
        _log_if_wide(ax_lr, epochs[C.LEARNING_RATE])
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3)) if ax_lr.get_yscale() == "linear" else None

        times = epochs[C.EPOCH_TIME]
        _line(ax_time, e, times, color=colors[5], lw=2, label=C.EPOCH_TIME, **dots)
        ax_time.axhline(times.mean(), color="0.4", ls="--", lw=1, label=f"mean {times.mean():.2f} s")
        ax_time.set_title("Time per Epoch")
        _epoch_axis(ax_time, "Seconds")
        ax_time.set_ylim(bottom=0)
        ax_time.legend(loc="lower right")

        if other:
            ax_val = fig.add_subplot(grid[2, :])
            for i, c in enumerate(other):
                _line(ax_val, e, epochs[c], color=colors[(6 + i) % 10], lw=2, label=c, **dots)
            if monitor[0] in other:
                _line(ax_val, e, epochs[C.BEST_SO_FAR], color=colors[2], lw=1.5, ls="--",
                      label=f"best {monitor[0]} so far")
                if len(best):
                    ax_val.plot(best[C.EPOCH].iloc[-1], best[monitor[0]].iloc[-1], marker="*", ms=14,
                                color=colors[3], ls="none", label=f"best model (epoch {best[C.EPOCH].iloc[-1]})")
            ax_val.set_title("Validation Metrics")
            _epoch_axis(ax_val, "Value")
            ax_val.legend(loc="best")
        first = 3 if other else 2
        for i, (prefix, columns) in enumerate(per_class.items()):
            row, col = first + i // 2, i % 2
            span = slice(0, 2) if col == 0 and i == len(per_class) - 1 else slice(col, col + 1)
            ax = fig.add_subplot(grid[row, span])
            per_class_panel(ax, epochs, prefix, columns, colors, **dots)
            if prefix == C.DICE_PREFIX and monitor[0] == C.VAL_DICE and C.VAL_DICE not in other:
                _best_marks(ax, epochs, best, monitor[0], colors)
        if has_timing(epochs):
            time_panel(fig.add_subplot(grid[rows - 1, :]), epochs, colors)
        if title:
            fig.suptitle(title, fontsize=14)
    return fig


def _best_marks(ax: "Axes", epochs: pd.DataFrame, best: pd.DataFrame, monitor: str, colors) -> None:
    """The monitor's best-so-far line and the best model's star, in the panel that draws it."""
    _line(ax, epochs[C.EPOCH], epochs[C.BEST_SO_FAR], color=colors[2], lw=1.5, ls="--",
          label=f"best {monitor} so far")
    if len(best):
        ax.plot(best[C.EPOCH].iloc[-1], best[monitor].iloc[-1], marker="*", ms=14, color=colors[3], ls="none",
                label=f"best model (epoch {best[C.EPOCH].iloc[-1]})")
    ax.legend(loc="best", fontsize=8)


def stats_figure(epochs: pd.DataFrame, title: str | None = None) -> "Figure":
    """The two panels of docs/reference/files.md ("Analysis outputs"): Loss Improvement per Epoch (previous Avg_Loss minus this one:
    above zero is better) and Batch Loss Stability (max − min batch loss of each epoch)."""
    e = epochs[C.EPOCH].to_numpy()
    with themed() as colors:
        fig = _figure(14, 4.8)
        ax_imp, ax_stab = fig.subplots(1, 2)
        improvement = -epochs[C.AVG_LOSS].diff().to_numpy()[1:]
        if len(improvement):
            if len(improvement) <= 300:
                ax_imp.bar(e[1:], improvement, color=[colors[2] if v >= 0 else colors[3] for v in improvement],
                           width=0.8, label="improvement")
            else:
                _line(ax_imp, e[1:], improvement, color=colors[2], lw=1, label="improvement")
            ax_imp.axhline(0, color="0.3", lw=0.8)
            ax_imp.set_xlim(e[0] - 0.5, e[-1] + 0.5)  # whole epochs on the axis, even for one bar
        else:
            _note(ax_imp, "needs at least two epochs")
        ax_imp.set_title("Loss Improvement per Epoch")
        _epoch_axis(ax_imp, f"{C.AVG_LOSS} decrease vs previous epoch")

        spread = (epochs[C.MAX_BATCH_LOSS] - epochs[C.MIN_BATCH_LOSS]).to_numpy()
        _line(ax_stab, e, spread, color=colors[0], lw=2, marker="o" if len(e) <= 50 else None, ms=4,
              label="max − min batch loss")
        if len(e) >= 10:
            smooth = pd.Series(spread).rolling(max(3, len(e) // 20), min_periods=1).mean()
            _line(ax_stab, e, smooth, color=colors[1], lw=1.5, ls="--", label="moving mean")
        ax_stab.set_title("Batch Loss Stability")
        _epoch_axis(ax_stab, "Batch loss spread")
        ax_stab.set_ylim(bottom=0)
        ax_stab.legend(loc="upper right")
        if title:
            fig.suptitle(title, fontsize=14)
    return fig


def batch_figure(result: "BatchAnalysis", title: str | None = None) -> "Figure":
    """Loss per Batch (with its moving-mean trend, spikes and non-finite values marked),
    Per-Epoch Spread, and Learning Rate per Batch when the CSV has it."""
    per = result.per_epoch
    with themed() as colors:
        # fixed margins instead of a layout engine: this figure is drawn for files of any size,
        # and constrained layout would double the cost of saving it
        fig = _figure(14, 12 if result.lr_y is not None else 8.5, layout=None)
        fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.06, hspace=0.25)
        axes = fig.subplots(3 if result.lr_y is not None else 2, 1, sharex=True)
        ax = axes[0]
        ax.plot(result.x, result.y, color=colors[0], lw=0.7, alpha=0.55, label="batch loss")
        ax.plot(result.trend_x, result.trend_y, color=colors[3], lw=2.2,
                label=f"trend (mean of {result.trend_window} batches)")
        if len(result.spikes):
            ax.plot(result.spikes["X"], result.spikes[C.LOSS], ls="none", marker="o", mfc="none",
                    ms=9, mew=1.5, color=colors[1], label=f"spikes ({result.spike_count})")
        if result.nonfinite_count:
            from matplotlib.transforms import blended_transform_factory
            tr = blended_transform_factory(ax.transData, ax.transAxes)
            ax.plot(result.nonfinite["X"], np.full(len(result.nonfinite), 0.97), transform=tr, ls="none",
                    marker="x", ms=9, mew=2, color="crimson", label=f"NaN/Inf ({result.nonfinite_count})")
        ax.set_title("Loss per Batch")
        _epoch_axis(ax, C.LOSS)
        _log_if_wide(ax, result.trend_y)  # by the trend: noise and spikes alone don't warrant a log axis
        ax.legend(loc="best")

        ax = axes[1]
        e = per[C.EPOCH].to_numpy()
        _band(ax, e, per["Min"], per["Max"], color=colors[0], alpha=0.18, label="min–max")
        _band(ax, e, per["Mean"] - per["Std"], per["Mean"] + per["Std"], color=colors[0], alpha=0.35,
              label="mean ± std")
        _line(ax, e, per["Mean"], color=colors[0], lw=2, label="mean")
        ax.set_title("Per-Epoch Spread")
        _epoch_axis(ax, "Batch loss")
        ax.legend(loc="upper right")

        if result.lr_y is not None:
            ax = axes[2]
            ax.plot(result.lr_x, result.lr_y, color=colors[4], lw=1.5, label=C.LEARNING_RATE)
            ax.set_title("Learning Rate per Batch")
            _epoch_axis(ax, "Learning rate")
            _log_if_wide(ax, result.lr_y)
        for ax in axes[:-1]:
            ax.set_xlabel("")
        fig.suptitle(title or f"{run_title(result.path)}: {result.rows:,} batches", fontsize=14)
    return fig


def run_title(csv_path) -> str:
    """``Run 20251106_103015``, from a metrics CSV's name (else the file's name)."""
    from medic.store.paths import BATCH_CSV_RE, EPOCH_CSV_RE
    name = Path(csv_path).name
    m = EPOCH_CSV_RE.match(name) or BATCH_CSV_RE.match(name)
    return f"Run {m.group('id')}" if m else name


def comparison_figure(runs: list[tuple[str, pd.DataFrame]], metrics: list[str]) -> "Figure":
    """One row per metric; its curves against epoch (left) and against cumulative wall time
    (right). ``runs`` pairs each run's legend label with its epoch frame."""
    total_s = max(float(f[C.EPOCH_TIME].sum()) for _, f in runs)
    unit, scale = ("hours", 3600.0) if total_s >= 2 * 3600 else ("minutes", 60.0) if total_s >= 120 else ("seconds", 1.0)
    classes = shared_per_class_dice([f for _, f in runs])
    with themed() as colors:
        fig = _figure(14, 1.0 + 0.3 * len(runs) + 4.2 * (len(metrics) + bool(classes)))
        grid = fig.add_gridspec(len(metrics) + bool(classes), 2)
        axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(2)] for r in range(len(metrics))])
        if classes:
            per_class_compare(fig.add_subplot(grid[len(metrics), :]), runs, classes, colors)
        few = max(len(f) for _, f in runs) <= 30
        for row, metric in enumerate(metrics):
            for i, (label, frame) in enumerate(runs):
                style = dict(color=colors[i % len(colors)], lw=2, label=label, marker="o" if few else None, ms=4)
                wall = frame[C.EPOCH_TIME].fillna(0).cumsum() / scale
                _line(axes[row, 0], frame[C.EPOCH], frame[metric], **style)
                _line(axes[row, 1], wall, frame[metric], **style)
            best = "lower" if metric_mode(metric) == "min" else "higher"
            axes[row, 0].set_title(f"{metric} vs Epoch ({best} is better)")
            axes[row, 1].set_title(f"{metric} vs Wall Time")
            _epoch_axis(axes[row, 0], metric)
            axes[row, 1].set_xlabel(f"Training time ({unit})")
            axes[row, 1].set_ylabel(metric)
            if C.is_loss(metric):
                for ax in axes[row]:
                    _log_if_wide(ax, pd.concat([f[metric] for _, f in runs]))
        # one legend for the whole figure: the same runs in every panel
        # (titled there: a suptitle would sit on top of a legend placed outside)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center",
                   ncol=1 if len(runs) > 3 or max(len(lb) for lb, _ in runs) > 60 else len(runs),
                   title=f"{len(runs)} runs compared (the options that differ and shape the result)",
                   title_fontsize=11)
    return fig
