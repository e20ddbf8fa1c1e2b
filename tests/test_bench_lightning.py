"""The Lightning logger benchmark, run for real at its smoke size: every variant measured and the
summary line there. No timing is asserted (a smoke run's numbers mean nothing)."""

import sys

import pytest

from conftest import ROOT

pytest.importorskip("lightning")
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_lightning  # noqa: E402


@pytest.mark.slow
def test_lightning_benchmark_measures_each_logger(tmp_path):
    section = bench_lightning.run("smoke", tmp_path)
    per_step = section.data["us_per_step"]
    assert set(per_step) == {"none", "selflog", "csv", "medic"} and all(v > 0 for v in per_step.values())
    for name in ("no logger", "Lightning CSVLogger", "medic MedicLogger"):
        assert f"| {name} |" in section.body
    assert section.summary[0][0].startswith("MedicLogger in a Lightning fit")
    assert section.data["medic_hooks_us_per_step"] > 0 and "inside its hooks" in section.summary[0][1]
    # the medic variant wrote its files: one batch row per step
    batch_csvs = list(tmp_path.rglob("batch_metrics_*.csv"))
    assert len(batch_csvs) == 1 and len(batch_csvs[0].read_text().splitlines()) == 1 + 100
