"""medic.launch / medic.attach / medic stop, with real torchrun jobs and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from _nb_helpers import PY, child_env, wait_for
from medic.errors import MedicError, RunNotFoundError
from medic.jobs import Job, attach, descendants, launch, pid_alive, pidfile_path, process_start_ticks
from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS
from medic.store.paths import Project

TINY = dict(num_samples=16, image_size=32, batch_size=4, nproc_per_node=2, log_batch_metrics=True,
            log_interval=2)


def csv_rows(path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_launch_runs_a_ddp_job_to_completion(tmp_path):
    job = launch(dict(TINY, epochs=2), root=tmp_path)
    project = Project.at(tmp_path)
    # the id is known at once and already claimed by its sidecar, naming the job's process
    claim = json.loads(project.sidecar(job.run_id).read_text())
    assert claim["status"] == "starting" and claim["pid"] == job.pid and job.status == "starting"
    info = json.loads(pidfile_path(project, job.run_id).read_text())
    assert info["pid"] == job.pid and info["run_id"] == job.run_id
    assert job.running and job.returncode is None

    assert job.wait(timeout=180) == 0, job.log_tail(30)
    assert job.returncode == 0 and not job.running
    assert job.status == "completed"
    job.raise_for_status()
    rows = csv_rows(project.epoch_csv(job.run_id))
    assert tuple(rows[0][:9]) == EPOCH_COLUMNS and [r[0] for r in rows[1:]] == ["1", "2"]
    batches = csv_rows(project.batch_csv(job.run_id))
    assert tuple(batches[0]) == BATCH_COLUMNS and len(batches) == 1 + 2 * 2  # 16 samples / (2 x 4)
    sidecar = json.loads(project.sidecar(job.run_id).read_text())
    assert sidecar["run_id"] == job.run_id and sidecar["world_size"] == 2
    assert "Epoch [2/2]" in job.log_tail(200)
    assert job.log_tail(3).count("\n") == 2
    # the launching process recorded the exit code, so a later attach knows it
    assert json.loads(pidfile_path(project, job.run_id).read_text())["returncode"] == 0
    again = attach(job.run_id, tmp_path)
    assert not again.running and again.returncode == 0 and again.status == "completed"
    assert attach(root=tmp_path).run_id == job.run_id  # newest run by default


KERNEL = textwrap.dedent("""
    import sys, time
    import medic
    job = medic.launch(dict(epochs=500, num_samples=32, image_size=32, nproc_per_node=2,
                            log_batch_metrics=True), root=sys.argv[1])
    print(job.run_id, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_job_outlives_its_kernel_and_medic_stop_stops_it_with_its_workers(tmp_path):
    # the launching process stands in for a notebook kernel, which a restart kills with its group
    kernel = subprocess.Popen([PY, "-c", KERNEL, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=child_env(), start_new_session=True)
    run_id = kernel.stdout.readline().strip()
    os.killpg(kernel.pid, signal.SIGKILL)
    kernel.wait()
    project = Project.at(tmp_path)
    job = attach(run_id, tmp_path)
    wait_for(lambda: project.epoch_csv(run_id).exists() and len(csv_rows(project.epoch_csv(run_id))) >= 2
             or not job.running, 120,
             "the first epoch row")
    assert job.running, job.log_tail(30)
    workers = descendants(job.pid)
    assert len(workers) >= 3  # torchrun agent + 2 workers
    ticks = {p: process_start_ticks(p) for p in workers}

    t0 = time.monotonic()
    out = subprocess.run([PY, "-m", "medic.cli", "stop", "--root", str(tmp_path)],  # the newest running run
                         env=child_env(), capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert f"stopping run {run_id}" in out.stdout and "status: stopped" in out.stdout
    assert job.wait(timeout=10) == 130  # from the sidecar: the launching process is gone
    assert job.status == "stopped"
    assert not [p for p, t in ticks.items() if pid_alive(p, start_ticks=t)], "a worker outlived the stop"
    assert list(project.checkpoint_dir(run_id).glob("*.pth")), "no checkpoint saved on stop"
    assert took < 60
    # stopping again is harmless
    out = subprocess.run([PY, "-m", "medic.cli", "stop", run_id, "--root", str(tmp_path)],
                         env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "is not running" in out.stdout


STUBBORN = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.argv[1] == "agent":
        # like torchrun: the worker gets a session of its own, out of reach of the agent's group
        worker = subprocess.Popen([sys.executable, __file__, "worker"], start_new_session=True)
        print("ready", worker.pid, flush=True)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # a bound, should the test's own clean-up never run (its interpreter killed)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.1)
""")


@pytest.fixture
def reap():
    """Register process groups to SIGKILL when the test ends, whatever its outcome: a process that
    ignores SIGINT and SIGTERM in a session of its own would otherwise outlive a failed test."""
    groups: list[tuple[int, int | None]] = []
    yield lambda pid: groups.append((pid, process_start_ticks(pid)))
    for pgid, ticks in groups:
        if pid_alive(pgid) and not pid_alive(pgid, start_ticks=ticks):
            continue  # the number now names another process: not ours to kill
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_stop_escalates_to_sigkill_and_reaches_workers_in_their_own_session(tmp_path, reap):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    proc = subprocess.Popen([PY, str(script), "agent"], stdout=subprocess.PIPE, start_new_session=True)
    reap(proc.pid)
    try:
        ready, worker = proc.stdout.readline().split()
    finally:
        proc.stdout.close()
    worker = int(worker)
    reap(worker)  # the leader of its own session, so of its own process group
    assert ready == b"ready" and worker in descendants(proc.pid)
    worker_ticks = process_start_ticks(worker)
    job = Job("20250101_000000", Project.at(tmp_path), proc.pid, process_start_ticks(proc.pid), popen=proc)

    t0 = time.monotonic()
    rc = job.stop(timeout=0.5, kill_after=0.5)
    assert rc is not None and rc != 0  # the agent died of SIGTERM (its SIGINT was ignored)
    assert not pid_alive(worker, start_ticks=worker_ticks), "the worker (ignoring SIGINT and SIGTERM) survived"
    assert time.monotonic() - t0 < 10


def test_bad_options_fail_before_anything_starts(tmp_path):
    with pytest.raises(MedicError, match="epochs must be > 0"):
        launch({"epochs": -1}, root=tmp_path)
    with pytest.raises(MedicError, match="did you mean 'epochs'"):
        launch({"epoch": 3}, root=tmp_path)
    with pytest.raises(MedicError, match="is not a folder"):
        launch({"epochs": 1}, root=tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_attach_and_stop_name_unknown_runs(tmp_path):
    with pytest.raises(RunNotFoundError):
        attach("20250101_000000", tmp_path)
    with pytest.raises(RunNotFoundError):
        attach(None, tmp_path)
    out = subprocess.run([PY, "-m", "medic.cli", "stop", "--root", str(tmp_path)], env=child_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no running job" in out.stderr


def test_attach_without_pidfile_uses_the_sidecar_and_ignores_reused_pids(tmp_path):
    project = Project.at(tmp_path)
    project.metrics.mkdir()
    sidecar = project.sidecar("20250101_000000")
    sidecar.write_text(json.dumps({"status": "running", "pid": 0}))
    os.utime(sidecar, (time.time() - 600, time.time() - 600))
    # alive, but started after the sidecar was written: the pid was reused, it is not the run
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        sidecar.write_text(json.dumps({"status": "running", "pid": sleeper.pid}))
        os.utime(sidecar, (time.time() - 600, time.time() - 600))
        job = attach("20250101_000000", tmp_path)
        assert job.pid is None and not job.running
        os.utime(sidecar)  # written after the process started: it is the run's process
        job = attach("20250101_000000", tmp_path)
        assert job.pid == sleeper.pid and job.running
    finally:
        sleeper.kill()
        sleeper.wait()
    # a run whose process is gone reports the trainer's verdict as an exit code
    sidecar.write_text(json.dumps({"status": "stopped", "pid": 2 ** 22 + 7}))
    assert attach("20250101_000000", tmp_path).returncode == 130


def test_launcher_imports_no_torch():
    code = "import sys, medic.jobs, medic.live.session, medic.notebooks; print('torch' in sys.modules)"
    out = subprocess.run([PY, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
