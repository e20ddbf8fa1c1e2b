"""``medic sweep --launcher slurm`` on the two-node SLURM cluster of ``tests/slurm/start_cluster.sh``
(nodes n1 and n2, one CPU each): every trial a batch job that runs its notebook on a node. Tiny
trials (16 images of 32x32, one thread)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from _nb_helpers import PY
from _slurm_helpers import job_done, job_state, medic, slurm_cluster, wait_for  # noqa: F401  (slurm_cluster: the fixture)
from conftest import child_env
from medic.notebooks import ensure_kernel
from medic.store.paths import Project
from medic.store.readers import read_epoch_csv

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["--num_samples", "16", "--image_size", "32", "--log_interval", "2", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def medic_kernel():
    ensure_kernel()


@pytest.fixture
def env(slurm_cluster):
    return child_env(MEDIC_HEARTBEAT="1", **slurm_cluster)


def sweep_folder(root: Path) -> Path:
    folders = sorted((root / "analysis" / "sweeps").glob("sweep_*"))
    assert len(folders) == 1, folders
    return folders[0]


def sidecar(root: Path, run_id: str) -> dict:
    return json.loads((root / "metrics" / f"run_{run_id}.json").read_text())


def epochs_of(root: Path, run_id: str) -> list[int]:
    path = Project.at(root).epoch_csv(run_id)
    return [int(e) for e in read_epoch_csv(path, allow_empty=True)["Epoch"]] if path.exists() else []


def trial_runs(root: Path) -> dict[int, dict]:
    """The sidecars of the trials submitted so far, by trial."""
    found = {}
    for path in (root / "metrics").glob("run_*.json"):
        side = json.loads(path.read_text())
        if (side.get("slurm") or {}).get("job_id"):
            found[side["sweep_trial"]] = side
    return found


def squeue_all(env: dict) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=env, capture_output=True,
                          text=True, timeout=30).stdout


def test_a_2x1_grid_on_2_slots_is_two_jobs_on_two_nodes(tmp_path, env):
    done = medic(tmp_path, "sweep", "--grid", "lr=0.01,0.003", "--slots", "2", "--launcher", "slurm",
                 "--epochs", "2", *TINY, env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("as SLURM job") == 2, done.stdout
    folder = sweep_folder(tmp_path)
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["status"]) == ["completed", "completed"] and (summary["epochs_done"] == 2).all()
    assert sorted(p.name for p in folder.glob("trial_*.ipynb")) == ["trial_0.ipynb", "trial_1.ipynb"]
    # a cluster's shared folder: the study is Optuna's journal file, not SQLite
    assert (folder / "study.journal").is_file() and not (folder / "study.db").exists()
    sides = [sidecar(tmp_path, r) for r in summary["run_id"]]
    assert all(s["status"] == "completed" and s["launcher"] == "slurm" and s["sweep"] == folder.name for s in sides)
    assert sorted(n for s in sides for n in s["slurm"]["nodes"]) == ["n1", "n2"]  # one job per node, at once
    assert sorted(str(s["slurm"]["job_id"]) for s in sides) == sorted(str(j) for j in summary["job_id"])
    for s in sides:  # the notebook's training ran inside the job: its output is in the job's file
        out = tmp_path / "log" / f"slurm_{s['run_id']}_{s['slurm']['job_id']}.out"
        assert out.is_file()


def test_a_killed_driver_re_attaches_to_its_running_and_queued_trials(tmp_path, env, monkeypatch):
    # n2 is taken, so trial 1 waits in the queue while trial 0 trains on n1
    blocker = subprocess.run(["sbatch", "--parsable", "-w", "n2", "--output=/dev/null", "--wrap", "sleep 600"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    log = open(tmp_path / "driver1.log", "w")
    driver = subprocess.Popen([PY, "-m", "medic.cli", "sweep", "--grid", "lr=0.01,0.003", "--slots", "2",
                               "--launcher", "slurm", "--epochs", "30", "--save_interval", "1", *TINY],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sides = wait_for(lambda: len(found := trial_runs(tmp_path)) == 2 and found, 60, what="two trial jobs")
        runs = {k: side["run_id"] for k, side in sides.items()}
        folder = sweep_folder(tmp_path)
        wait_for(lambda: len(epochs_of(tmp_path, runs[0])) >= 1, 120, what="an epoch of trial 0")
        job1 = str(sidecar(tmp_path, runs[1])["slurm"]["job_id"])
        assert job_state(job1, env) == "PENDING"
        # the live table: each trial's SLURM state, from one squeue call
        monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
        import medic
        table = medic.attach_sweep(folder.name, root=tmp_path).summary()
        assert table.loc[table["trial"] == 1, "slurm"].iloc[0].startswith("PENDING (")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    resumed = subprocess.Popen([PY, "-m", "medic.cli", "sweep", "--resume", folder.name, "--slots", "2"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while sum("re-attached" in line for line in lines) < 2:
            line = resumed.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        subprocess.run(["scancel", blocker], env=env, check=True, timeout=30)  # trial 1 may start now
        rest, _ = resumed.communicate(timeout=240)
    finally:
        if resumed.poll() is None:
            resumed.kill()
        subprocess.run(["scancel", blocker], env=env, timeout=30)
    out = "".join(lines) + rest
    assert resumed.returncode == 0, out
    assert f"run {runs[0]} (SLURM job" in out and f"run {runs[1]} (SLURM job {job1}, PENDING" in out, out
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["status"]) == ["completed", "completed"], out
    assert list(summary["run_id"]) == [runs[0], runs[1]]
    assert len(list((tmp_path / "metrics").glob("run_*.json"))) == 2  # no trial started again as a new run
    for run_id in runs.values():
        assert epochs_of(tmp_path, run_id) == list(range(1, 31))  # each epoch trained once
        side = sidecar(tmp_path, run_id)
        assert side["status"] == "completed" and "resumed" not in side  # followed, never restarted


def test_a_pruned_trial_ends_its_job_and_reads_stopped(tmp_path, env):
    # trial 0 completes first (one slot); trial 1's useless learning rate is then pruned by the median
    # at its first epoch; 30 epochs leave the stop (the driver's poll, the trainer's look at the stop
    # file) ample time to land before the run could finish on its own, on a busy machine too
    done = medic(tmp_path, "sweep", "--grid", "lr=0.01,0.0000001", "--slots", "1", "--launcher", "slurm",
                 "--prune", "median", "--prune_startup", "1", "--epochs", "30", *TINY, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = pd.read_csv(sweep_folder(tmp_path) / "summary.csv")
    assert list(summary["status"]) == ["completed", "pruned"], done.stdout
    bad = summary.iloc[1]
    assert bad["epochs_done"] < 30, done.stdout
    side = sidecar(tmp_path, bad["run_id"])
    assert side["status"] == "stopped", side  # stopped through its stop request, with a checkpoint
    job_done(str(bad["job_id"]), env, timeout=60)
    assert job_state(str(bad["job_id"]), env) in ("COMPLETED", "FAILED", "")  # it ended, not cancelled
    assert not (tmp_path / "metrics" / f"run_{bad['run_id']}.stop").exists()


def test_a_requeued_trial_job_continues_the_same_trial_and_run(tmp_path, env):
    driver = subprocess.Popen([PY, "-m", "medic.cli", "sweep", "--grid", "lr=0.01", "--launcher", "slurm",
                               "--epochs", "100", "--save_interval", "1", *TINY], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        side = wait_for(lambda: trial_runs(tmp_path).get(0), 60, what="the trial's job")
        run_id, job_id = side["run_id"], str(side["slurm"]["job_id"])
        wait_for(lambda: len(epochs_of(tmp_path, run_id)) >= 3, 120, what="three epochs")
        subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, timeout=30)
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    summary = pd.read_csv(sweep_folder(tmp_path) / "summary.csv")
    assert list(summary["status"]) == ["completed"] and list(summary["run_id"]) == [run_id], out
    side = sidecar(tmp_path, run_id)
    assert side["status"] == "completed" and side["requeues"] == 1 and str(side["slurm"]["job_id"]) == job_id
    assert len(side["resumed"]) == 1 and side["resumed"][0]["from_epoch"] >= 1  # from its checkpoint
    assert [p.name for p in (tmp_path / "metrics").glob("run_*.json")] == [f"run_{run_id}.json"]
    assert epochs_of(tmp_path, run_id) == list(range(1, 101))  # each epoch once


def test_the_driver_on_slurm_is_a_one_cpu_job_of_its_own(tmp_path, env, monkeypatch):
    done = medic(tmp_path, "sweep", "--grid", "lr=0.01", "--launcher", "slurm", "--driver_on_slurm",
                 "--epochs", "2", *TINY, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"its driver is SLURM job (\d+) \(1 CPU\)\. Follow it: tail -f (\S+driver\.log)", done.stdout)
    assert found, done.stdout
    folder = sweep_folder(tmp_path)
    assert f"medic.attach_sweep('{folder.name}').follow()" in done.stdout and f"medic stop {folder.name}" in done.stdout
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    from medic.sweeps.handle import attach_sweep
    handle = attach_sweep(folder.name, root=tmp_path)
    assert handle.running  # followed from here while the driver runs on a node
    job_done(found.group(1), env, timeout=180)
    log = Path(found.group(2)).read_text()
    assert "trial 0: completed" in log and "done; summary in" in log, log
    assert list(pd.read_csv(folder / "summary.csv")["status"]) == ["completed"]
    script = subprocess.run(["scontrol", "show", "job", found.group(1)], env=env, capture_output=True, text=True).stdout
    assert not script or "NumCPUs=1" in script  # still listed for MinJobAge: one CPU


@pytest.mark.parametrize("case", ["slots", "partition"])
def test_bad_input_is_one_line_and_submits_nothing(tmp_path, env, case):
    args = {"slots": ["--slots", "3"], "partition": ["--partition", "nosuch"]}[case]
    before = squeue_all(env)
    done = medic(tmp_path, "sweep", "--grid", "lr=0.01", "--launcher", "slurm", *args, "--epochs", "1", env=env)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medic: error: "), done.stderr
    assert {"slots": "--slots 3: partition (the default) can never run 3 trial jobs at once; SLURM says: "
                     "Requested node configuration is not available",
            "partition": "Invalid partition name specified"}[case] in lines[0]
    assert list(tmp_path.iterdir()) == [] and squeue_all(env) == before
