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
