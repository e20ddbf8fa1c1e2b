"""Paired comparison of two models on the same cases: known answers against scipy and numpy on
constructed per-case tables, the empty-class rule both ways, Holm's adjustment by hand, the
tables for papers, and the refusals of ``medic compare --paired``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy
from _analysis_helpers import cli, write_run
from scipy.stats import wilcoxon

import medic
from medic.analysis.paired import holm, paired_table
from medic.analysis.papers import format_table

N = 20
ROOT = Path(__file__).resolve().parent.parent


def table(dice: dict[str, list[float]], cases=None, hd95: dict | None = None) -> pd.DataFrame:
    n = len(next(iter(dice.values())))
    out = {"Case": cases or [f"case_{i:03d}" for i in range(n)]}
    out.update({f"Dice_{k}": v for k, v in dice.items()})
    out.update({f"HD95_{k}": v for k, v in (hd95 or {}).items()})
    return pd.DataFrame(out)


def write_case_run(root, run_id: str, t: pd.DataFrame, epochs=(2, 3), best=2, record=True, **sidecar) -> None:
    """A run as the trainer leaves it for a comparison: its kept per-case tables and sidecar."""
    results = root / "results" / run_id
    results.mkdir(parents=True, exist_ok=True)
    for e in epochs:
        t.to_csv(results / f"validation_epoch_{e}.csv", index=False)
    (root / "metrics").mkdir(exist_ok=True)
    if record:
        (root / "metrics" / f"run_{run_id}.json").write_text(json.dumps({"run_id": run_id, "best_epoch": best, **sidecar}))


@pytest.fixture(scope="module")
def shifted():
    rs = np.random.RandomState(3)
    a = rs.uniform(0.5, 0.9, N)
    b = a + 0.05 + rs.normal(0, 0.01, N)
    return a, b


def test_shift_of_005_known_answers(shifted):
    a, b = shifted
    out = paired_table(table({"tumour": list(a)}), table({"tumour": list(b)}), seed=7)
    row = out.set_index("class").loc["tumour"]
    d = np.round(b - a, 9)
    expected_p = wilcoxon(d, zero_method="wilcox", correction=False).pvalue
    assert row["p_wilcoxon"] == pytest.approx(expected_p, rel=1e-12) and row["p_wilcoxon"] < 0.01
    rng = np.random.default_rng(7)
    means = d[rng.integers(0, N, size=(10_000, N))].mean(axis=1)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)
    assert row["ci_low"] > 0 and row["diff"] == pytest.approx(d.mean())
    assert (row["n"], row["wins_b"], row["wins_a"], row["ties"]) == (N, 20, 0, 0)
    assert (row["mean_a"], row["mean_b"]) == pytest.approx((a.mean(), b.mean()))
    assert list(out.columns) == ["class", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_wilcoxon",
                                 "p_holm", "wins_a", "wins_b", "ties"]
    assert out["class"].tolist() == ["tumour", "mean"]
    assert out.attrs["seed"] == 7 and out.attrs["resamples"] == 10_000 and out.attrs["scipy"] == scipy.__version__
    assert out.attrs["methods"]["tumour"] == "exact"  # 20 cases, no ties, no zeros


def test_identical_runs():
    t = table({"a": list(np.linspace(0.3, 0.9, N)), "b": list(np.linspace(0.9, 0.2, N))})
    out = paired_table(t, t.copy())
    for _, row in out.iterrows():
        assert row["diff"] == 0 and row["p_wilcoxon"] == 1 and (row["ci_low"], row["ci_high"]) == (0, 0)
        assert (row["wins_a"], row["wins_b"], row["ties"]) == (0, 0, N)
    assert out.attrs["methods"]["a"] == "all differences 0"


def test_holm_against_hand_computation(shifted):
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.02]) == pytest.approx([0.5, float("nan"), 0.04], nan_ok=True)
    a, b = shifted
    rs = np.random.RandomState(11)
    c = a + rs.normal(0.01, 0.03, N)  # a weak effect
    e = a + rs.normal(0.0, 0.05, N)   # none
    out = paired_table(table({"x": list(a), "y": list(a), "z": list(a)}),
                       table({"x": list(b), "y": list(c), "z": list(e)})).set_index("class")
    p = [wilcoxon(np.round(v - a, 9), zero_method="wilcox", correction=False).pvalue for v in (b, c, e)]
    order = np.argsort(p)
    hand, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * p[i]))
        hand[i] = running
    assert out.loc[["x", "y", "z"], "p_holm"].tolist() == pytest.approx(hand)
    assert np.isnan(out.loc["mean", "p_holm"]) and out.loc["mean", "p_wilcoxon"] == out.loc["mean", "p_wilcoxon"]


def test_empty_class_rule_both_directions():
    nan = float("nan")
    # case 0: class absent for A (perfect), B predicts it where the truth has none (0): against B
    # case 1: A has 0.4, class absent for B: B perfect (1.0), for B
    # case 2: absent for both: left out;  cases 3..8: ordinary pairs
    a = [nan, 0.4, nan, 0.5, 0.6, 0.7, 0.8, 0.6, 0.7]
    b = [0.0, nan, nan, 0.6, 0.7, 0.8, 0.9, 0.7, 0.8]
    out = paired_table(table({"c": a}), table({"c": b})).set_index("class")
    row = out.loc["c"]
    va = np.array([1.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.6, 0.7])
    vb = np.array([0.0, 1.0, 0.6, 0.7, 0.8, 0.9, 0.7, 0.8])
    assert row["n"] == 8 and row["mean_a"] == pytest.approx(va.mean()) and row["mean_b"] == pytest.approx(vb.mean())
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (1, 7, 0)
    # HD95: lower wins, an empty class scores 0
    out = paired_table(table({"c": a}, hd95={"c": [nan, 3.0, nan, 2, 2, 2, 2, 2, 2]}),
                       table({"c": b}, hd95={"c": [5.0, nan, nan, 1, 1, 1, 1, 1, 3]}), metric="hd95")
    row = out.set_index("class").loc["c"]
    assert row["n"] == 8 and row["mean_a"] == pytest.approx(15 / 8) and row["mean_b"] == pytest.approx(13 / 8)
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (2, 6, 0)  # case 0 (0 < 5) and the last


def test_few_pairs_no_p_and_a_note():
    out = paired_table(table({"c": [0.5, 0.6, 0.7]}), table({"c": [0.6, 0.7, 0.8]}))
    assert out["p_wilcoxon"].isna().all() and out["p_holm"].isna().all()
    assert any("fewer than 6" in n for n in out.attrs["notes"])


def test_paper_formats():
    t = pd.DataFrame({"class": ["tumour", "mean"], "n": [20, 20], "diff": [0.05012, float("nan")],
                      "p_wilcoxon": [0.00002, 0.0421], "p_holm": [0.00004, float("nan")]})
    assert format_table(t, "csv").splitlines()[1] == "tumour,20,0.050,<0.001,<0.001"
    md = format_table(t, "markdown").splitlines()
    assert md[0] == "| class | n | diff | p_wilcoxon | p_holm |" and md[3] == "| mean | 20 |  | 0.042 |  |"
    latex = format_table(t, "latex")
    assert r"p\_wilcoxon" in latex and r"$<$0.001" in latex and r"\toprule" in latex


@pytest.fixture
def runs(project, shifted):
    a, b = shifted
    write_case_run(project, "20250101_000001", table({"tumour": list(a)}), data_fingerprint="f1")
    write_case_run(project, "20250101_000002", table({"tumour": list(b)}), data_fingerprint="f1")
    return project


def test_compare_paired_api_and_cli(runs, shifted):
    out = medic.compare_paired("20250101_000001", "20250101_000002", root=runs, epoch="best")
    assert out.attrs["a"] == "20250101_000001" and out.set_index("class").loc["tumour", "wins_b"] == 20
    proc = cli("compare", "20250101_000001", "20250101_000002", "--paired", "--format", "markdown", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("| class | n | mean_a")
    assert "| tumour | 20 |" in proc.stdout and "<0.001" in proc.stdout
    assert "default_rng(seed=0)" in proc.stderr and f"scipy {scipy.__version__}" in proc.stderr
    saved = pd.read_csv(runs / "analysis" / "paired_20250101_000001_vs_20250101_000002_dice_last.csv")
    assert saved["p_wilcoxon"].iloc[0] == pytest.approx(out["p_wilcoxon"].iloc[0])


@pytest.mark.parametrize("case, expected", [
    ("fingerprint", "different data"),
    ("cases", "validated different cases: 2 of"),
    ("sidecar_cases", "validated different cases: 1 of"),
    ("no_tables", "has no per-case tables"),
    ("metric", "no hd95 to pair"),
])
def test_refusals(runs, shifted, case, expected):
    a, b = shifted
    other, args = "20250101_000003", []
    if case == "fingerprint":
        write_case_run(runs, other, table({"tumour": list(b)}), data_fingerprint="f2")
    elif case == "cases":
        write_case_run(runs, other, table({"tumour": list(b)}, cases=[f"case_{i:03d}" for i in range(2, N + 2)]))
    elif case == "sidecar_cases":
        write_case_run(runs, other, table({"tumour": list(b)}),
                       val_cases=[f"case_{i:03d}" for i in range(N - 1)] + ["other"])
    elif case == "no_tables":
        (runs / "metrics" / f"run_{other}.json").write_text("{}")
    else:
        other, args = "20250101_000002", ["--metric", "hd95"]
    before = sorted(p.name for p in runs.rglob("*"))
    proc = cli("compare", "20250101_000001", other, "--paired", *args, cwd=runs)
    assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in runs.rglob("*")) == before


def test_compare_notebook_paired_cell(project, shifted, monkeypatch):
    """04_compare's paired cell: the table and the one-line-per-case figure of the two runs."""
    import nbformat
    import papermill as pm

    from medic.notebooks import KERNEL_NAME, ensure_kernel
    a, b = shifted
    for run_id, values in (("20250101_000001", a), ("20250101_000002", b)):
        write_run(project, run_id, epochs=3, extra={"Val_Dice": lambda e: 0.2 * e})
        write_case_run(project, run_id, table({"tumour": list(values)}), record=False)
    ensure_kernel()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    out = project / "out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "04_compare.ipynb"), str(out), kernel_name=KERNEL_NAME,
                        cwd=str(project), parameters={"interactive": False}, progress_bar=False,
                        execution_timeout=300)
    nb = nbformat.read(out, as_version=4)
    last = nb.cells[-1]
    assert [o for o in last.outputs if "image/png" in o.get("data", {})], last.outputs
    html = "".join(o["data"].get("text/html", "") for o in last.outputs if "data" in o)
    assert "wins_b" in html and "tumour" in html and "seed 0" in "".join(o.get("text", "") for o in last.outputs)
