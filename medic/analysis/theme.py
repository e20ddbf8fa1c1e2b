"""The look of medic's figures: seaborn's ``whitegrid`` style, ``notebook`` context and ``deep``
palette, with bold titles, as the rcParams they set.

Written out rather than applied with ``seaborn.set_theme``: importing seaborn imports pyplot,
IPython and ipywidgets, about a third of a second before the first figure of ``medic analyze``
(more than drawing it). ``tests/test_analysis.py`` checks these values against seaborn's own.
"""

from __future__ import annotations

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
           "#ccb974", "#64b5cd"]  # seaborn "deep"

RC = {
    # whitegrid
    "axes.axisbelow": True, "axes.edgecolor": ".8", "axes.grid": True, "axes.labelcolor": ".15",
    "grid.color": ".8", "patch.edgecolor": "w", "patch.force_edgecolor": True, "text.color": ".15",
    "xtick.bottom": False, "xtick.color": ".15", "ytick.color": ".15", "ytick.left": False,
    "lines.solid_capstyle": "round",
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    # notebook context
    "font.size": 12.0, "axes.labelsize": 12.0, "xtick.labelsize": 11.0, "ytick.labelsize": 11.0,
    "legend.title_fontsize": 12.0,
    "axes.linewidth": 1.25, "grid.linewidth": 1.0, "xtick.major.width": 1.25, "ytick.major.width": 1.25,
    "xtick.minor.width": 1.0, "ytick.minor.width": 1.0, "xtick.major.size": 6.0, "ytick.major.size": 6.0,
    "xtick.minor.size": 4.0, "ytick.minor.size": 4.0,
    # medic's own
    "axes.titleweight": "bold", "axes.titlesize": 13, "legend.fontsize": 9, "legend.framealpha": 0.85,
    "figure.dpi": 100,
    # titles at the top of their axes: left to place itself, matplotlib lays out every tick
    # label of the axes to find room (a third of a second per three-panel figure)
    "axes.titley": 1.0,
}
