"""A cross-validation's summary from its fold runs (``medic train --folds K --fold all``).

    analysis/cv/cv_<timestamp>/
        cv.json       the fold runs (fold i = run), K, the epoch used, the data fingerprint
        summary.csv   per metric, per class and for the mean over classes: mean and std over
                      the folds, and each fold's value
        cases.csv     the pooled per-case table: every case once, with its fold
        summary.md, summary.tex   the summary for a paper (3 decimals)
        summary.png   each fold's per-case values per class, the folds' means marked

The summary uses each fold's **last** epoch by default (what nnU-Net reports): the best epoch
was chosen on the same cases, so its values are optimistic; ``summary.csv`` says which was used.
A fold's value of a class is the mean over the fold's cases in which the class is present (the
validation's own rule, so it equals the run's ``Val_Dice_<class>`` of that epoch); the mean over
classes is the mean of the defined class values (``Val_Dice``). The std over folds is the sample
standard deviation (ddof 1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from medic.analysis.casesets import CASES_CSV, CV_DIR, CV_RECORD, pooled_cases
from medic.analysis.paired import METRICS
from medic.analysis.papers import format_table
from medic.store.files import new_stamped_dir, write_json_atomic, write_text_atomic
from medic.store.paths import Project

if TYPE_CHECKING:
    import pandas as pd


def fold_values(pooled: pd.DataFrame) -> pd.DataFrame:
    """Per fold, each ``<Metric>_<class>`` value and each metric's mean over classes."""
    import pandas as pd
    rows = []
    for fold, part in pooled.groupby("Fold", sort=True):
        row = {"Fold": int(fold)}
        for prefix in METRICS.values():
            cols = [c for c in part.columns if c.startswith(prefix)]
            if not cols:
                continue
            values = part[cols].mean(axis=0, skipna=True)  # NaN: left out (the class in neither)
            row.update(values.to_dict())
            row[prefix + "mean"] = float(values.mean(skipna=True)) if values.notna().any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(pooled: pd.DataFrame, epoch: str) -> pd.DataFrame:
    """One row per metric and class (and ``mean``): mean and std over the folds, then each fold."""
    import pandas as pd
    folds = fold_values(pooled)
    rows = []
    for metric, prefix in METRICS.items():
        for col in [c for c in folds.columns if c.startswith(prefix)]:
            values = folds[col].to_numpy(dtype=float)
            ok = values[~np.isnan(values)]
            row = {"metric": metric, "class": col[len(prefix):], "epoch": epoch,
                   "mean": float(ok.mean()) if len(ok) else float("nan"),
                   "std": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"), "folds": len(ok)}
            row.update({f"fold_{int(f)}": float(v) for f, v in zip(folds["Fold"], values)})
            rows.append(row)
    return pd.DataFrame(rows)


def write_cv(run_ids: Sequence[str], root=None, epoch: str = "last", splits: str = "") -> Path:
    """The summary of the fold runs ``run_ids`` (fold i = ``run_ids[i]``) in a new
    ``analysis/cv/cv_<timestamp>/``. Returns the folder.

    Args:
        run_ids: the fold runs, in fold order.
        root: the project root (default: the working directory).
        epoch: ``last`` (default, as nnU-Net reports) or ``best`` (chosen on the same cases).
        splits: the split's source, recorded (a ``splits_final.json`` path, or empty).
    """
    from medic.analysis.figures import save_figure
    from medic.analysis.pairfigs import cv_figure
    project = Project.at(root)
    pooled, prints = pooled_cases(project, run_ids, epoch)  # before anything is written
    summary = summary_table(pooled, epoch)
    folder = new_stamped_dir(project.root.joinpath(*CV_DIR), "cv")
    fingerprint = next((p[1] for p in prints if p), None)
    write_json_atomic(folder / CV_RECORD, {"runs": list(run_ids), "folds": len(run_ids), "epoch": epoch,
                                           "splits": splits, "data_fingerprint": fingerprint,
                                           "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    write_text_atomic(folder / "summary.csv", summary.to_csv(index=False))
    paper = summary.drop(columns=["epoch", "folds"])
    write_text_atomic(folder / "summary.md", format_table(paper, "markdown"))
    write_text_atomic(folder / "summary.tex", format_table(paper, "latex"))
    write_text_atomic(folder / CASES_CSV, pooled.to_csv(index=False))
    save_figure(cv_figure(pooled, summary, folder.name), folder / "summary.png")
    return folder
