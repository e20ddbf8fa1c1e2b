"""The benchmark scripts, run for real at tiny sizes: they must work end to end (processes,
files, reports). No timing is asserted — a smoke run's numbers mean nothing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PY, ROOT, child_env

BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_logger  # noqa: E402
import bench_overhead  # noqa: E402
import bench_readers  # noqa: E402

TORCH_FREE = ("medic.commands.analyze", "medic.commands.watch", "medic.store.catalog", "medic.live.session")


def rows_without_timestamp(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row[:4] for row in csv.reader(f)]


def test_medic_logger_writes_the_same_rows_as_the_plain_writer(tmp_path):
    data = bench_logger.inputs(500)
    medic = bench_logger.medic_per_row(tmp_path / "a", data)
    grouped = bench_logger.medic_groups(tmp_path / "b", data)
    plain = bench_logger.plain_writer(tmp_path, data, flush_every_row=True)
    expected = rows_without_timestamp(plain)
    assert len(expected) == 501 and expected[0] == ["Epoch", "Batch", "Loss", "Learning_Rate"]
    assert rows_without_timestamp(medic) == expected
    assert rows_without_timestamp(grouped) == expected


def test_logger_benchmark_reports_every_writer_and_the_goal(tmp_path):
    section = bench_logger.run("smoke", tmp_path)
    writers = [r["writer"] for r in section.data["results"]]
    assert writers[:4] == ["MetricsLogger.log_batch", "MetricsLogger.log_batches (10 rows)",
                           "csv.writer + flush()", "csv.writer, buffered"]
    lightning = [r for r in section.data["results"] if r["writer"].startswith("Lightning")]
    if bench_logger.lightning_available():
        assert [r["writer"] for r in lightning] == ["Lightning CSVLogger"] and "skipped" in lightning[0]
    else:  # make test installs it (the bench extra), so this is the branch that runs there
        assert [r["writer"] for r in lightning] == ["Lightning CSVLogger (default)",
                                                    "Lightning CSVLogger, flush every row"]
        assert all("skipped" not in r for r in lightning)
    for r in section.data["results"]:
        assert "skipped" in r or (r["rows"] == 2000 and r["seconds"] > 0 and r["bytes"] > 0)
    assert section.summary[0][2] == "≤ 1.10x" and section.summary[0][3] in ("met", "not met")
    assert "| 2,000 | MetricsLogger.log_batch |" in section.body


@pytest.mark.parametrize("module", TORCH_FREE)
def test_reader_modules_do_not_import_torch(module):
    if not bench_readers.present(module):
        pytest.skip(f"{module} is not in the package")
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import {module} pulled in {out.stdout.strip()}"


def test_readers_benchmark_measures_each_present_module():
    results = bench_readers.measure(modules=("medic.store.catalog", "medic.not_a_module"), repeats=1)
    catalog, absent = results
    assert absent == {"module": "medic.not_a_module", "absent": True}
    assert catalog["module"] == "medic.store.catalog" and not catalog["torch"]
    assert 0 < catalog["import_s"] < catalog["wall_s"]


@pytest.mark.slow
def test_overhead_benchmark_runs_every_variant_and_the_profile(tmp_path):
    """Bare loop, medic train, the profiled medic run and the same-process comparison, each as 2
    DDP processes."""
    section = bench_overhead.run("smoke", tmp_path)
    runs = section.data["runs"]
    assert set(runs) == {"bare", "medic", "medic_batch"}
    for variant, rs in runs.items():
        assert len(rs) == 1 and len(rs[0]["epoch_times"]) == 2 and rs[0]["samples_per_s"] > 0, variant
    prof = section.data["profile"]
    assert set(prof) == {0, 1}  # both ranks report
    for rank, p in prof.items():
        assert p["steps"] == 1  # 8 samples / 2 ranks / batch 4, epoch 2 only
        assert p["parts_us"]["sync"] > 0 and p["parts_us"]["all_reduce"] > 0 and p["bookkeeping_us"] > 0
        assert p["optimizer_us"]["fused"] > 0 and p["optimizer_us"]["loop"] > 0
    assert "Adam step, medic's fused kernel" in section.body
    assert prof[0]["parts_us"]["log_batches"] > 0 and prof[1]["parts_us"]["log_batches"] == 0
    ab = section.data["inproc"]  # the same-process comparison: one warm-up round, one counted
    assert ab["world_size"] == 2 and {v: len(t) for v, t in ab["epoch_times"].items()} == \
        {"bare": 1, "medic": 1, "medic_batch": 1}
    assert len(section.summary) == 4 and all(row[3].split()[0] in ("met", "not", "within") for row in section.summary)
    assert bench_overhead.verdict(0.99, 0.0) == "met" and bench_overhead.verdict(0.95, 0.01) == "not met"
    assert bench_overhead.verdict(0.95, 0.04).startswith("within noise (runs vary ±4%")
    assert "bare DDP loop (no logging)" in section.body and "rank 1: µs" in section.body
    assert "medic `train_epoch`, epoch CSV" in section.body


@pytest.mark.slow
def test_run_all_writes_the_markdown_report(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([PY, str(BENCH / "run_all.py"), "--smoke", "--only", "logger", "readers", "scaling",
                           "--out", str(out)], capture_output=True, text=True, env=child_env(), cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (out / "results.md").read_text()
    assert text.startswith("# medic benchmarks (smoke mode)")
    assert "Command: `python benchmarks/run_all.py --smoke --only logger readers scaling`" in text
    for heading in ("## Summary", "## Logger cost", "## Reader start-up", "## DDP scaling on CPU"):
        assert heading in text
    assert "| 1 proc x 1 thread |" in text
    # the same settings inside one pair of processes: all four phases measured, and a verdict
    for phase in ("1 process x 1 thread", "1 process x 2 threads", "2 processes x 1 thread, DDP",
                  "2 independent processes x 1 thread, no communication"):
        assert f"| {phase} |" in text
    ab = json.loads((out / "results.json").read_text())["DDP scaling on CPU"]["same_processes"]
    assert all(len(v) == 1 and v[0] > 0 for v in ab["samples_per_s"].values())
    assert max(ab["idle_rank_cpu"]) < 0.5, "rank 1 must wait idle while rank 0 runs alone"
    assert "| DDP scaling on CPU, same processes, alternating phases (bare loop)" in text
    assert text in proc.stdout  # printed as well
    data = json.loads((out / "results.json").read_text())
    assert set(data) == {"Logger cost", "Reader start-up", "DDP scaling on CPU"}


def test_bare_loop_rejects_a_bad_flag():
    out = subprocess.run([PY, str(BENCH / "bare_loop.py"), "--device", "tpu"], capture_output=True, text=True,
                         env=child_env(), timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.slow
def test_big_csv_benchmark_times_cold_grown_and_naive_processes(tmp_path):
    import bench_bigcsv
    section = bench_bigcsv.run("smoke", tmp_path)
    r = section.data
    assert r["rows"] == 20_000 and set(r["runs"]) == {"cold", "grown", "naive", "floor"}
    assert all(len(v) == 1 and v[0][0] > 0 and v[0][1] > 50 for v in r["runs"].values())
    # the notebook case: one process, the cell timed again after growth, medic's and the naive one
    assert len(r["cells"]) == 1 and r["cell_s"]["medic"] > 0 and r["cell_s"]["naive"] > 0
    assert [row[2] for row in section.summary] == ["≥ 4x", "≥ 10x", "≥ 10x"]
    assert "| naive: pd.read_csv + matplotlib, every point |" in section.body and "| floor:" in section.body


@pytest.mark.slow
def test_catalog_benchmark_times_cold_unchanged_grown_and_naive_listings(tmp_path):
    import bench_catalog
    section = bench_catalog.run("smoke", tmp_path)  # it checks the listing itself: grown runs, problems
    r = section.data
    assert r["runs"] == 200 and set(r["seconds"]) == set(r["peak_mb"]) == {"cold", "unchanged", "grown", "naive"}
    assert all(v > 0 for v in r["seconds"].values()) and r["in_process"]["runs"] == 200
    assert "| naive: one `pd.read_csv` per file |" in section.body and len(section.summary) == 4


@pytest.mark.slow
def test_start_benchmark_reports_before_after_and_the_floor(tmp_path):
    import bench_start
    section = bench_start.run("smoke", tmp_path)
    (first,) = section.data["first_step"]
    assert first["nproc"] == 1 and len(first["after"]) == 1 and first["after_s"] > 0
    if section.data["baseline"]:  # a git checkout: the tree before the start-up work is measured too
        assert len(first["before"]) == 1 and section.summary[0][2] == "≥ 2x (half the time)"
    assert [i["what"] for i in section.data["imports"]] == list(bench_start.IMPORTS)


@pytest.mark.slow
def test_the_volume_memory_benchmark_runs_its_three_modes(tmp_path):
    out = tmp_path / "mem.json"
    proc = subprocess.run([PY, str(BENCH / "bench_volume_memory.py"), "--cases", "3", "--shape", "32", "32", "16",
                           "--patch", "16", "16", "16", "--workers", "1", "--json", str(out)],
                          env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert list(result["modes"]) == ["cache_rate 1.0", "cache_rate 0.2", "cache_dir"]
    for mode in result["modes"].values():
        assert mode["trainer_peak_mb"] > 100 and len(mode["worker_peaks_mb"]) == 1
    assert "| cache_dir |" in proc.stdout


# the Lightning logger benchmark at its smoke size: every variant measured and the summary line there
@pytest.mark.slow
def test_lightning_benchmark_measures_each_logger(tmp_path):
    pytest.importorskip("lightning")
    import bench_lightning
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
