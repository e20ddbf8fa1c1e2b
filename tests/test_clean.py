"""medic clean: shows what it would remove, removes whole runs only with --yes, never a live run,
and never another run whose id merely starts with the same digits."""

from __future__ import annotations

import os
import time

import pytest
from _analysis_helpers import cli, files_under, write_run


def make_run(project, run_id: str, **kw) -> None:
    write_run(project, run_id, epochs=2, batches=2, **kw)
    for folder in ("checkpoints", "results"):
        (project / folder / run_id).mkdir(parents=True)
        (project / folder / run_id / "best_model.pth").write_bytes(b"x" * 1000)
    (project / "log").mkdir(exist_ok=True)
    (project / "log" / f"training_{run_id}.log").write_text("log\n")
    (project / "analysis").mkdir(exist_ok=True)
    (project / "analysis" / f"training_report_epoch_metrics_{run_id}.txt").write_text("report\n")


def run_files(project, run_id: str) -> list[str]:
    return [f for f in files_under(project) if run_id in f and f"{run_id}_2" not in f]


@pytest.fixture
def three(project):
    for run_id in ("20250101_000000", "20250101_000000_2", "20250102_000000"):
        make_run(project, run_id)
    (project / "analysis" / "comparison_20250101_000000_2_vs_20250102_000000.png").write_bytes(b"png")
    return project


def test_dry_run_then_yes(three):
    assert cli("runs", cwd=three).returncode == 0  # the catalog's cache now names all three
    before = files_under(three)
    out = cli("clean", "--keep", "2", cwd=three)
    assert out.returncode == 0, out.stderr
    assert files_under(three) == before  # nothing removed without --yes
    assert "20250101_000000  [completed]" in out.stdout and "add --yes" in out.stdout
    for shown in ("metrics/epoch_metrics_20250101_000000.csv", "metrics/batch_metrics_20250101_000000.csv",
                  "metrics/run_20250101_000000.json", "log/training_20250101_000000.log",
                  "checkpoints/20250101_000000/", "results/20250101_000000/",
                  "analysis/training_report_epoch_metrics_20250101_000000.txt"):
        assert shown in out.stdout, shown
    assert "20250101_000000_2" not in out.stdout and "20250102_000000" not in out.stdout
    out = cli("clean", "--keep", "2", "--yes", cwd=three)
    assert out.returncode == 0 and "removed 1 run(s)" in out.stdout
    assert run_files(three, "20250101_000000") == []
    left = set(files_under(three))
    assert set(before) - left == {f for f in before if "20250101_000000" in f and "20250101_000000_2" not in f}
    assert "analysis/comparison_20250101_000000_2_vs_20250102_000000.png" in left
    cache = (three / "analysis" / ".cache" / "catalog.json").read_text()
    assert '"20250101_000000"' not in cache and '"20250102_000000"' in cache


def test_never_removes_a_live_run(three):
    write_run(three, "20250101_000000", epochs=2, batches=2, status="running", pid=os.getpid())
    before = files_under(three)
    out = cli("clean", "20250101_000000", "--yes", cwd=three)
    assert out.returncode == 0
    assert "keeping 20250101_000000: it is still running" in out.stdout and "nothing to remove" in out.stdout
    assert files_under(three) == before


def test_older_than_and_keep_together(three):
    old = time.time() - 10 * 86400
    for path in three.rglob("*"):
        if "20250101_000000" in path.name and "20250101_000000_2" not in path.name or \
                path.parent.name == "20250101_000000":
            os.utime(path, (old, old))
    out = cli("clean", "--older-than", "7", cwd=three)
    assert "would remove 1 run(s)" in out.stdout and "20250101_000000  [" in out.stdout
    out = cli("clean", "--older-than", "7", "--keep", "3", cwd=three)
    assert "nothing to remove" in out.stdout  # both must select a run
    out = cli("clean", "--older-than", "7", "--yes", cwd=three)
    assert out.returncode == 0 and run_files(three, "20250101_000000") == []
    assert run_files(three, "20250101_000000_2") != [] and run_files(three, "20250102_000000") != []


@pytest.mark.parametrize("args, expected", [
    ([], "say which runs to remove"),
    (["--keep", "-1"], "--keep must be >= 0"),
    (["20300101_000000"], "no such run"),
    (["--keep", "x"], "invalid int value"),
])
def test_bad_input(three, args, expected):
    before = files_under(three)
    out = cli("clean", *args, cwd=three)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert files_under(three) == before
