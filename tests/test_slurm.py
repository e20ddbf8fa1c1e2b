"""``medic train --launcher slurm`` against a real two-node SLURM cluster on this machine
(``tests/slurm/start_cluster.sh``, started once per session). Both nodes share this host's name,
so nothing here relies on host names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from _slurm_helpers import job_done, job_state, medic, slurm_cluster, submit, wait_for  # noqa: F401  (slurm_cluster: the fixture)
from _train_helpers import read_csv, train
from conftest import child_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["--num_samples", "16", "--image_size", "32", "--log_interval", "1", "--threads", "1"]


@pytest.fixture
def env(slurm_cluster):
    return child_env(MEDIC_HEARTBEAT="1", **slurm_cluster)


def sidecar(root: Path, run_id: str) -> dict:
    return json.loads((root / "metrics" / f"run_{run_id}.json").read_text())


def numbers(path: Path, columns: tuple[str, ...]) -> list[float]:
    """The values of ``columns``, row after row, in one flat list."""
    return [float(r[c]) for r in read_csv(path)[1] for c in columns]


def test_cluster_has_two_idle_nodes(env):
    def nodes() -> list[str]:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True,
                             timeout=30).stdout.split("\n")
        return sorted(set(n for n in out if n))
    # a job of an earlier session may still be completing on one
    wait_for(lambda: nodes() == ["n1 idle", "n2 idle"], 60, what="both nodes idle")
    out = subprocess.run(["srun", "-N2", "--time=1", "bash", "-c", "echo $SLURMD_NODENAME"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert sorted(out.stdout.split()) == ["n1", "n2"], out.stderr


def test_two_nodes_equal_one_node_with_two_processes(tmp_path, env):
    args = ["--epochs", "2", *TINY, "--log_batch_metrics"]
    slurm_root, local_root = tmp_path / "slurm", tmp_path / "local"
    slurm_root.mkdir()
    local_root.mkdir()
    run_id, job_id = submit(slurm_root, "--nodes", "2", *args, env=env)
    train(local_root, "--nproc_per_node", "2", *args, env=env)
    job_done(job_id, env)
    side = sidecar(slurm_root, run_id)
    assert side["status"] == "completed", side.get("message")
    assert side["launcher"] == "slurm" and side["slurm"]["job_id"] == job_id
    assert side["slurm"]["nodes"] == ["n1", "n2"] and side["world_size"] == 2 and side["requeues"] == 0
    local_id = next(local_root.glob("metrics/epoch_metrics_*.csv")).stem.removeprefix("epoch_metrics_")
    for kind, columns in (("epoch", ("Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Best_Loss_So_Far")),
                          ("batch", ("Epoch", "Batch", "Loss"))):
        got = numbers(slurm_root / "metrics" / f"{kind}_metrics_{run_id}.csv", columns)
        want = numbers(local_root / "metrics" / f"{kind}_metrics_{local_id}.csv", columns)
        assert len(got) == len(want) > 0
        assert got == pytest.approx(want, abs=1e-5)
    out = (slurm_root / "log" / f"slurm_{run_id}_{job_id}.out").read_text()
    assert "Epoch [2/2] completed" in out


def files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# long enough (12 epochs of 8 steps) for a requeue to land mid-run, short enough to finish soon after
LONG = ["--epochs", "12", "--num_samples", "32", "--image_size", "32", "--log_interval", "1", "--threads", "1",
        "--log_batch_metrics", "--save_interval", "100"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same training as LONG, run locally in one go: the history a requeued run must have."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, *LONG, env=child_env())
    run_id = next(root.glob("metrics/epoch_metrics_*.csv")).stem.removeprefix("epoch_metrics_")
    return root, run_id


def rows_written(root: Path, run_id: str) -> int:
    try:
        return max(0, len((root / "metrics" / f"epoch_metrics_{run_id}.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def assert_one_history(root: Path, run_id: str, baseline) -> None:
    """Every epoch and batch once, with the values of the uninterrupted run."""
    base_root, base_id = baseline
    for kind, key, columns in (("epoch", ("Epoch",), ("Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss")),
                               ("batch", ("Epoch", "Batch"), ("Loss",))):
        got = read_csv(root / "metrics" / f"{kind}_metrics_{run_id}.csv")[1]
        want = read_csv(base_root / "metrics" / f"{kind}_metrics_{base_id}.csv")[1]
        assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want]
        assert numbers_of(got, columns) == pytest.approx(numbers_of(want, columns), abs=1e-5)


def numbers_of(rows, columns) -> list[float]:
    return [float(r[c]) for r in rows for c in columns]


def test_scontrol_requeue_mid_run_continues_the_same_run(tmp_path, env, uninterrupted):
    run_id, job_id = submit(tmp_path, *LONG, env=env)
    wait_for(lambda: rows_written(tmp_path, run_id) >= 2, 120, what="two epochs")
    subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, timeout=30)
    job_done(job_id, env, timeout=240)
    side = sidecar(tmp_path, run_id)
    assert side["status"] == "completed", side.get("message")
    assert side["requeues"] == 1 and len(side["resumed"]) == 1
    assert 2 <= side["resumed"][0]["from_epoch"] < 12
    assert sorted(p.name for p in tmp_path.glob("metrics/epoch_metrics_*.csv")) == [f"epoch_metrics_{run_id}.csv"]
    assert_one_history(tmp_path, run_id, uninterrupted)
    out = (tmp_path / "log" / f"slurm_{run_id}_{job_id}.out").read_text()
    assert "DUE TO JOB REQUEUE" in out and f"Resuming run {run_id}" in out


@pytest.mark.parametrize("case", ["no sbatch", "refused", "nodes without slurm"])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, env, case):
    args = {"no sbatch": ["--launcher", "slurm"], "refused": ["--launcher", "slurm", "--partition", "nosuch"],
            "nodes without slurm": ["--nodes", "2"]}[case]
    jobs_before = subprocess.run(["squeue", "-h", "-t", "all"], env=env, capture_output=True, text=True).stdout
    proc = medic(tmp_path, "train", *args, "--epochs", "1", *TINY,
                 env=dict(env, PATH=str(tmp_path / "empty")) if case == "no sbatch" else env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medic: error: "), proc.stderr
    assert {"no sbatch": "no sbatch on PATH", "refused": "Invalid partition name specified",
            "nodes without slurm": "--nodes 2 needs --launcher slurm"}[case] in lines[0]
    assert files_in(tmp_path) == []
    assert subprocess.run(["squeue", "-h", "-t", "all"], env=env, capture_output=True, text=True).stdout == jobs_before


def test_a_queued_run_cannot_be_resumed_and_stops_without_training(tmp_path, env):
    run_id, job_id = submit(tmp_path, "--epochs", "1", *TINY, "--slurm_args=--begin=now+1hour", env=env)
    side = sidecar(tmp_path, run_id)
    assert side["status"] == "queued" and side["launcher"] == "slurm" and side["slurm"]["job_id"] == job_id
    assert side["slurm"]["request"]["slurm_args"] == "--begin=now+1hour"
    runs = medic(tmp_path, "runs", env=env)
    assert run_id in runs.stdout and "queued (BeginTime)" in runs.stdout, runs.stdout + runs.stderr  # why it waits
    from medic.live.session import LiveMonitor
    monitor = LiveMonitor(run_id, tmp_path, interactive=False)
    with pytest.MonkeyPatch.context() as mp:  # this process asks the test cluster's squeue
        for name in ("SLURM_CONF", "PATH"):
            mp.setenv(name, env[name])
        monitor.step()
    assert monitor.status == "queued (BeginTime)"
    before = files_in(tmp_path), (tmp_path / "metrics" / f"run_{run_id}.json").read_bytes()
    proc = medic(tmp_path, "train", "--launcher", "slurm", "--resume", run_id, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"run {run_id} is still queued (SLURM job {job_id})" in proc.stderr
    assert (files_in(tmp_path), (tmp_path / "metrics" / f"run_{run_id}.json").read_bytes()) == before
    stop = medic(tmp_path, "stop", run_id, env=env)
    assert stop.returncode == 0, stop.stderr
    side = sidecar(tmp_path, run_id)
    assert side["status"] == "stopped" and "nothing trained" in side["message"]
    assert job_state(job_id, env) in ("CANCELLED", "")
    assert not (tmp_path / "log" / f"training_{run_id}.log").exists()
    csv = tmp_path / "metrics" / f"epoch_metrics_{run_id}.csv"
    assert not csv.exists() or csv.read_text().count("\n") <= 1  # no row


def test_a_job_killed_through_slurm_reads_interrupted(tmp_path, env):
    run_id, job_id = submit(tmp_path, *LONG, env=env)
    wait_for(lambda: rows_written(tmp_path, run_id) >= 1, 120, what="an epoch")
    subprocess.run(["scancel", "--signal=KILL", job_id], env=env, check=True, timeout=30)
    seen = []

    def status() -> bool:
        runs = medic(tmp_path, "runs", env=env).stdout
        line = next(line for line in runs.splitlines() if run_id in line)
        seen.append(next(s for s in ("interrupted", "running", "queued", "completed", "failed", "stopped")
                         if s in line))
        return seen[-1] == "interrupted"

    wait_for(status, 120, every=2.0, what="the run to read interrupted")
    job_done(job_id, env, timeout=60)
    assert status()  # and it stays so once the job has ended
    assert sidecar(tmp_path, run_id)["status"] not in ("completed", "stopped")


def test_medic_stop_of_a_running_run_saves_a_checkpoint(tmp_path, env):
    run_id, job_id = submit(tmp_path, *LONG, env=env)
    wait_for(lambda: rows_written(tmp_path, run_id) >= 1, 120, what="an epoch")
    stop = medic(tmp_path, "stop", run_id, env=env, timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    job_done(job_id, env, timeout=60)
    side = sidecar(tmp_path, run_id)
    assert side["status"] == "stopped" and side["requeues"] == 0, side
    assert (tmp_path / "checkpoints" / run_id / "last.pth").is_file()
    assert 1 <= rows_written(tmp_path, run_id) < 12
    assert not (tmp_path / "metrics" / f"run_{run_id}.stop").exists()


def test_the_time_limit_warning_requeues_the_same_run(tmp_path, env, uninterrupted):
    # a 1-minute limit: SLURM warns at its first time check after the start (its resolution is a
    # minute), so each allocation is warned; --max_requeues 1 ends the chain after one requeue
    # (the run is far longer than both allocations, on a quiet machine too: 100000 epochs)
    run_id, job_id = submit(tmp_path, *LONG, "--epochs", "100000", "--time", "1", "--requeue_grace", "30",
                            "--max_requeues", "1", env=env)
    job_done(job_id, env, timeout=300)
    side = sidecar(tmp_path, run_id)
    # requeued once on the warning, as the same run with one history; the next warning ends the chain
    assert side["requeues"] == 1 and side["status"] == "timeout", side
    assert "--max_requeues" in side["message"] and f"--resume {run_id}" in side["message"]
    assert (tmp_path / "checkpoints" / run_id / "last.pth").is_file()
    assert sorted(p.name for p in tmp_path.glob("metrics/run_*.json")) == [f"run_{run_id}.json"]
    out = (tmp_path / "log" / f"slurm_{run_id}_{job_id}.out").read_text()
    assert f"Resuming run {run_id}" in out and "TIME LIMIT" not in out
    base_root, base_id = uninterrupted
    for kind, key in (("epoch", ("Epoch",)), ("batch", ("Epoch", "Batch"))):
        got = read_csv(tmp_path / "metrics" / f"{kind}_metrics_{run_id}.csv")[1]
        assert len({tuple(r[k] for k in key) for r in got}) == len(got)  # each once
        want = read_csv(base_root / "metrics" / f"{kind}_metrics_{base_id}.csv")[1][:len(got)]
        got = got[:len(want)]  # the uninterrupted run has 12 epochs
        assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want]
        column = "Avg_Loss" if kind == "epoch" else "Loss"
        assert numbers_of(got, (column,)) == pytest.approx(numbers_of(want, (column,)), abs=1e-5)


def test_a_job_that_ends_before_training_says_why(tmp_path, env):
    run_id, job_id = submit(tmp_path, "--epochs", "1", *TINY, "--slurm_setup",
                            "echo module cuda/99.9 not found >&2; exit 3", env=env)
    job_done(job_id, env, timeout=60)
    side = wait_for(lambda: (s := sidecar(tmp_path, run_id))["status"] != "queued" and s, 30)
    assert side["status"] == "failed"
    assert "exit code 3" in side["message"] and "module cuda/99.9 not found" in side["message"]
