"""What a validation leaves in ``results/<id>/`` (rank 0), and the top-k checkpoints.

    results/<id>/validation_epoch_N.csv   one row per validation case: its id, each per-class
                                          metric, the truth's and the prediction's voxel counts;
                                          kept for the best epoch and the last one
    checkpoints/<id>/top_k/epoch_N_<metric>_<value>.pth   the K best (never a resume point)
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from medic.store.files import write_text_atomic
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
