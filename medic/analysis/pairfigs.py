"""Figures of per-case results: a paired comparison (one line per case from A to B) and a
cross-validation (each fold's cases per class). Built without pyplot, in medic's theme."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medic.analysis.figures import themed
from medic.analysis.paired import METRICS, class_values

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def paired_figure(a: pd.DataFrame, b: pd.DataFrame, metric: str = "dice", labels=("A", "B"),
                  table: pd.DataFrame | None = None) -> Figure:
    """Per class, each paired case as a line from its value under A to its value under B (green
    when B is better, red when worse), the means in black; the title gives the paired table's
    difference and p value when ``table`` is given."""
    from matplotlib.figure import Figure

    from medic.analysis.paired import HIGHER_IS_BETTER
    a, b = a.set_index("Case"), b.set_index("Case")
    b = b.loc[a.index]
    pairs = class_values(a, b, metric)
    with themed():
        fig = Figure(figsize=(3.2 * max(1, len(pairs)), 3.6), constrained_layout=True)
        axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
        for ax, (name, (va, vb)) in zip(axes, pairs.items()):
            better = vb > va if HIGHER_IS_BETTER[metric] else vb < va
            for x, y, up in zip(va, vb, better):
                ax.plot([0, 1], [x, y], color="#55a868" if up else ("#c44e52" if x != y else ".6"),
                        alpha=0.6, lw=1, marker="o", ms=3)
            if len(va):
                ax.plot([0, 1], [va.mean(), vb.mean()], color="black", lw=2.5, marker="s", ms=6)
            ax.set_xticks([0, 1], labels=[str(labels[0])[:18], str(labels[1])[:18]])
            ax.set_xlim(-0.25, 1.25)
            ax.set_ylabel(METRICS[metric] + name)
            title = name
            if table is not None and name in set(table["class"]):
                row = table.set_index("class").loc[name]
                p = row["p_wilcoxon"]
                title += f": Δ {row['diff']:+.3f}" + (f", p {p:.3g}" if p == p else "")
            ax.set_title(title, fontsize=10)
    return fig


def cv_figure(pooled: pd.DataFrame, summary: pd.DataFrame, title: str = "") -> Figure:
    """Per class of the first metric, each fold's per-case values (dots) and the fold's value
    (a bar), with the mean ± std over folds in the title."""
    from matplotlib.figure import Figure
    metric = next(m for m in METRICS if not summary[summary["metric"] == m].empty)
    prefix = METRICS[metric]
    classes = [c for c in pooled.columns if c.startswith(prefix)]
    folds = sorted(pooled["Fold"].unique())
    with themed() as colors:
        fig = Figure(figsize=(max(5.0, 3.2 * len(classes)), 3.4), constrained_layout=True)
        axes = fig.subplots(1, max(1, len(classes)), squeeze=False)[0]
        for ax, col in zip(axes, classes):
            row = summary[(summary["metric"] == metric) & (summary["class"] == col[len(prefix):])].iloc[0]
            for k, fold in enumerate(folds):
                values = pooled.loc[pooled["Fold"] == fold, col].to_numpy(dtype=float)
                values = values[~np.isnan(values)]
                jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
                ax.scatter(k + jitter, values, s=12, color=colors[k % len(colors)], alpha=0.8)
                ax.bar(k, row.get(f"fold_{int(fold)}", np.nan), width=0.6, color=colors[k % len(colors)], alpha=0.25)
            ax.set_xticks(range(len(folds)), labels=[f"fold {int(f)}" for f in folds])
            ax.set_ylabel(col)
            ax.set_title(f"{col[len(prefix):]}: {row['mean']:.3f} ± {row['std']:.3f}", fontsize=10)
        if title:
            fig.suptitle(f"{title} ({summary['epoch'].iloc[0]} epoch of each fold)", fontsize=11)
    return fig


def paired_comparison(runs, metric: str = "dice", epoch: str = "last", seed: int = 0, say=print):
    """For a notebook: the paired table and figure of the first two of ``runs`` (``Run``s or ids;
    B = the second, against A = the first), or ``(None, None)`` with the reason said when they
    cannot be paired (fewer than two runs, no per-case tables, other cases or data).

    Args:
        runs: loaded runs or run ids; the first two are compared.
        metric: ``dice``, ``hd95`` or ``nsd``.
        epoch: ``last`` or ``best``: which kept per-case table of each run.
        seed: the bootstrap's seed.
        say: where the reason goes.
    """
    from pathlib import Path

    from medic.analysis.casesets import check_pairable, load_cases
    from medic.analysis.paired import paired_table
    from medic.errors import MedicError
    if len(runs) < 2:
        say("paired comparison: it needs two runs")
        return None, None
    ids = [getattr(r, "run_id", r) for r in runs[:2]]
    paths = getattr(runs[0], "paths", {}) or {}
    root = Path(paths["epoch_csv"]).resolve().parent.parent if "epoch_csv" in paths else None
    try:
        a, b = (load_cases(i, root, epoch) for i in ids)
        check_pairable(a, b)
        table = paired_table(a.table, b.table, metric, seed)
    except MedicError as err:
        say(f"paired comparison of {ids[0]} and {ids[1]}: {err}")
        return None, None
    table.attrs.update(a=a.label, b=b.label, epoch=epoch)
    say(f"paired {metric}, {epoch} epoch: B = {b.label} against A = {a.label}; 95% bootstrap CI "
        f"({table.attrs['resamples']:,} resamples, seed {seed}), Wilcoxon signed-rank (scipy {table.attrs['scipy']})")
    return table, paired_figure(a.table, b.table, metric, (a.label, b.label), table)
