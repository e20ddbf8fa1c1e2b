"""Two models on the same cases: per class, the mean per-case difference with a bootstrap
interval, the Wilcoxon signed-rank test, Holm's adjustment and the wins of each.

    medic compare A B --paired [--metric dice|hd95|nsd] [--epoch last|best]
    medic.compare_paired("20251106_103015", "20251107_091500")

The statistics, fixed so that anyone can reproduce them from the two per-case tables:

- ``d = round(B - A, 9)`` per paired case (the rounding makes a float's last bits no difference);
  ``diff`` is the mean of ``d``;
- the interval is a 95% percentile bootstrap of that mean: ``BOOTSTRAP`` resamples of the paired
  cases drawn with ``numpy.random.default_rng(seed)`` (a fresh generator for each row, so a
  class's interval does not depend on the other classes);
- ``p_wilcoxon`` is ``scipy.stats.wilcoxon(d, zero_method="wilcox", correction=False)``; 1 when
  every difference is 0 (scipy is not called); empty with fewer than ``MIN_PAIRS`` cases;
- ``p_holm`` is Holm's step-down adjustment over the classes (the ``mean`` row is left out);
- a win follows the metric's direction (a lower HD95 wins); ``ties`` are cases with ``d == 0``.

Empty classes: a case is left out of a class only when the class is absent (in neither the truth
nor the prediction) for both models. When it is absent for one model only, that model's value is
the perfect one (Dice 1, NSD 1, HD95 0): a false positive of the other then counts against it.
The ``mean`` row pairs each case's mean over the classes it is paired in.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from medic.errors import MedicError

if TYPE_CHECKING:
    import pandas as pd

METRICS = {"dice": "Dice_", "hd95": "HD95_", "nsd": "NSD_"}  # the per-case tables' column prefixes
HIGHER_IS_BETTER = {"dice": True, "hd95": False, "nsd": True}
PERFECT = {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
BOOTSTRAP = 10_000
MIN_PAIRS = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided): left empty
COLUMNS = ["class", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_wilcoxon", "p_holm",
           "wins_a", "wins_b", "ties"]


def class_values(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class, A's and B's values over the cases paired for it (tables indexed alike by case),
    with the empty-class rule applied."""
    prefix = METRICS[metric]
    classes = [c[len(prefix):] for c in a.columns if c.startswith(prefix) and c in b.columns]
    if not classes:
        raise MedicError(f"the per-case tables share no {prefix}<class> column: no {metric} to pair "
                         f"(record it with --val_metrics or --metrics {metric})")
    out = {}
    for name in classes:
        va = a[prefix + name].to_numpy(dtype=float)
        vb = b[prefix + name].to_numpy(dtype=float)
        keep = ~(np.isnan(va) & np.isnan(vb))
        va, vb = va[keep], vb[keep]
        out[name] = (np.where(np.isnan(va), PERFECT[metric], va), np.where(np.isnan(vb), PERFECT[metric], vb))
    return out


def case_means(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each case's mean over the classes paired for it, for A and for B (cases paired in none
    are left out)."""
    prefix = METRICS[metric]
    cols = [c for c in a.columns if c.startswith(prefix) and c in b.columns]
    va, vb = a[cols].to_numpy(dtype=float), b[cols].to_numpy(dtype=float)
    paired = ~(np.isnan(va) & np.isnan(vb))
    va, vb = np.where(np.isnan(va), PERFECT[metric], va), np.where(np.isnan(vb), PERFECT[metric], vb)
    count = paired.sum(axis=1)
    keep = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = np.where(paired, va, 0).sum(axis=1) / np.where(keep, count, 1)
        mb = np.where(paired, vb, 0).sum(axis=1) / np.where(keep, count, 1)
    return ma[keep], mb[keep]


def wilcoxon_method(d: np.ndarray) -> str:
    """The method scipy's ``wilcoxon(method="auto")`` picks for ``d``, by the rule of scipy 1.17
    (the version this was checked against; the table records the version used): exact without
    ties or zeros up to 50 cases; with them, a complete permutation up to 13 cases, else the
    normal approximation."""
    n = len(d)
    nonzero = np.abs(d[d != 0])
    ties = len(np.unique(nonzero)) < len(nonzero)
    if n > 50:
        return "asymptotic"
    if not ties and len(nonzero) == n:
        return "exact"
    return "permutation" if n <= 13 else "asymptotic"


def wilcoxon_p(d: np.ndarray) -> tuple[float, str]:
    """The two-sided p value of the signed-rank test on ``d`` and the method used."""
    if len(d) < MIN_PAIRS:
        return float("nan"), ""
    if not np.any(d):
        return 1.0, "all differences 0"
    from scipy.stats import wilcoxon
    return float(wilcoxon(d, zero_method="wilcox", correction=False).pvalue), wilcoxon_method(d)


def bootstrap_ci(d: np.ndarray, seed: int, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of ``d``."""
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``p`` (NaN stays NaN and does not count)."""
    p = np.asarray(p, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_row(name: str, va: np.ndarray, vb: np.ndarray, higher_is_better: bool, seed: int) -> dict:
    """One row of the table from A's and B's values on the same cases."""
    d = np.round(vb - va, 9)
    n = len(d)
    p, method = wilcoxon_p(d)
    low, high = bootstrap_ci(d, seed)
    better_b = d > 0 if higher_is_better else d < 0
    return {"class": name, "n": n, "mean_a": float(va.mean()) if n else float("nan"),
            "mean_b": float(vb.mean()) if n else float("nan"), "diff": float(d.mean()) if n else float("nan"),
            "ci_low": low, "ci_high": high, "p_wilcoxon": p, "p_holm": float("nan"),
            "wins_a": int(((d != 0) & ~better_b).sum()), "wins_b": int(better_b.sum()),
            "ties": int((d == 0).sum()), "_method": method}


def paired_table(a: pd.DataFrame, b: pd.DataFrame, metric: str = "dice", seed: int = 0) -> pd.DataFrame:
    """The paired statistics of two per-case tables (``Case`` column, one row per case, the same
    cases in both). ``attrs`` holds the seed, the resamples, scipy's version and methods, notes."""
    import pandas as pd
    import scipy

    if metric not in METRICS:
        raise MedicError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    a, b = a.set_index("Case"), b.set_index("Case")
    b = b.loc[a.index]
    higher = HIGHER_IS_BETTER[metric]
    rows = [paired_row(name, va, vb, higher, seed) for name, (va, vb) in class_values(a, b, metric).items()]
    adjusted = holm([r["p_wilcoxon"] for r in rows])
    for row, p in zip(rows, adjusted):
        row["p_holm"] = p
    rows.append(paired_row("mean", *case_means(a, b, metric), higher, seed))
    notes = [f"{r['class']}: {r['n']} paired case(s), fewer than {MIN_PAIRS}: no p value"
             for r in rows if r["n"] < MIN_PAIRS]
    methods = {r["class"]: r.pop("_method") for r in rows}
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(metric=metric, seed=seed, resamples=BOOTSTRAP, scipy=scipy.__version__,
                       methods=methods, notes=notes, direction="higher" if higher else "lower")
    return table


def compare_paired(a: str | os.PathLike, b: str | os.PathLike, root: str | os.PathLike | None = None,
                   metric: str = "dice", epoch: str = "last", seed: int = 0) -> pd.DataFrame:
    """Model B against model A on the same cases, per class and for the mean over classes.

    Args:
        a: a run id (or ``latest``), a cross-validation (``cv_<timestamp>``), an evaluation
            (``eval_<timestamp>``), or the path of a per-case table or of such a folder.
        b: the same kinds as ``a``; differences are B − A.
        root: the project root (default: the working directory).
        metric: ``dice``, ``hd95`` or ``nsd`` (a lower HD95 wins).
        epoch: ``last`` or ``best``: which kept per-case table of a run (or of each fold).
        seed: the bootstrap generator's seed (``numpy.random.default_rng(seed)``).

    Returns:
        A DataFrame with the columns ``class, n, mean_a, mean_b, diff, ci_low, ci_high,
        p_wilcoxon, p_holm, wins_a, wins_b, ties``: one row per class, then ``mean``. Its
        ``attrs`` record the seed, the resamples, scipy's version and the method per row, notes,
        and what A and B were.
    """
    from medic.analysis.casesets import check_pairable, load_cases

    if epoch not in ("last", "best"):
        raise MedicError(f"--epoch must be last or best, got {epoch!r}")
    first, second = load_cases(a, root, epoch), load_cases(b, root, epoch)
    check_pairable(first, second)
    table = paired_table(first.table, second.table, metric, seed)
    table.attrs.update(a=first.label, b=second.label, epoch=epoch)
    return table
