"""What a validation leaves in ``results/<id>/`` (rank 0), and the top-k checkpoints.

    results/<id>/validation_epoch_N.csv   one row per validation case: its id, each per-class
                                          metric, the truth's and the prediction's voxel counts;
                                          kept for the best epoch and the last one
    results/<id>/strip/epoch_N.png        image, truth and prediction of 3 fixed validation cases
    checkpoints/<id>/top_k/epoch_N_<metric>_<value>.pth   the K best (never a resume point)
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from medic.store.files import write_atomic, write_text_atomic
from medic.train.metrics import CASE_PREFIX, METRICS, CaseRows
from medic.train.selection import top_k_name, top_k_plan

TABLE_RE = re.compile(r"^validation_epoch_(\d+)\.csv$")


def case_table_columns(names: list[str], metrics: list[str]) -> list[str]:
    return ["Case"] + [CASE_PREFIX[m] + n for m in METRICS if m in metrics for n in names] + \
        [f"{kind}_voxels_{n}" for n in names for kind in ("gt", "pred")]


def write_case_table(folder: Path, epoch: int, cases: CaseRows, names: list[str], filename: str = "") -> Path:
    """One row per case, in case order; a metric left out for a case (the class in neither the
    truth nor the prediction) is an empty cell. (``filename``: another name than the epoch's.)"""
    per_case = cases.per_case()
    metrics = [m for m in METRICS if m in per_case]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(case_table_columns(names, metrics))
    for i, case in enumerate(cases.ids):
        row = [case] + [cell(per_case[m][i, c]) for m in metrics for c in range(len(names))]
        row += [int(per_case[kind][i, c]) for c in range(len(names)) for kind in ("gt", "pred")]
        w.writerow(row)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (filename or f"validation_epoch_{epoch}.csv")
    write_text_atomic(path, buf.getvalue())
    return path


def cell(v: float) -> str:
    return "" if np.isnan(v) else f"{float(v):.6f}"


def prune_case_tables(folder: Path, keep: set[int]) -> None:
    """Remove the tables of epochs that are neither the best nor the last."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = TABLE_RE.match(p.name)
        if m and int(m.group(1)) not in keep:
            p.unlink(missing_ok=True)


def save_strip(path: Path, strip: list[tuple[np.ndarray, np.ndarray, np.ndarray]], title: str) -> None:
    """A small picture: for each case the image with the truth's outline, and the prediction."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = len(strip)
    if not n:
        return
    fig = Figure(figsize=(1.6 * 2 * n, 2.0), constrained_layout=True)
    axes = fig.subplots(1, 2 * n, squeeze=False)[0]
    top = max(1, max(int(max(t.max(), p.max())) for _, t, p in strip))
    for i, (image, truth, pred) in enumerate(strip):
        for j, (labels, name) in enumerate(((truth, "truth"), (pred, "prediction"))):
            ax = axes[2 * i + j]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            ax.imshow(np.ma.masked_equal(labels, 0), cmap="autumn", alpha=0.55, vmin=0, vmax=top,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"case {i + 1} {name}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, dpi=60, format="png"))


def save_top_k(folder: Path, k: int, epoch: int, monitor: str, value: float, mode: str, data: bytes,
               write_checkpoint) -> Path | None:
    """Keep the epoch's checkpoint when it is among the K best; the files it pushes out are
    removed only after it is on disk."""
    enters, drop = top_k_plan(folder, k, epoch, value, mode)
    path = None
    if enters:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / top_k_name(epoch, monitor, value)
        write_checkpoint(path, data)
    for p in drop:
        p.unlink(missing_ok=True)
    return path
