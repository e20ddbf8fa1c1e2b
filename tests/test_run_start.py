"""A run's record is true from its first instant and from any host: the claim is the sidecar, the
epoch CSV never exists without its header, a run killed anywhere in its start reads
``interrupted``, a run on another host is seen running, stopped through the files, and read
``interrupted`` once its heartbeat stops; the per-case tables and the sidecar name the cases."""

from __future__ import annotations

import csv
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import PY, child_env
from medic.procs import descendants, pid_alive
from medic.store.paths import Project
from medic.store.status import effective_status, run_status

TINY = ["--num_samples", "16", "--image_size", "32", "--log_interval", "1", "--batch_size", "2"]


def start(root: Path, nproc: int, *args: str, **env: str) -> subprocess.Popen:
    cmd = [PY, "-m", "medic.train", *TINY, "--nproc_per_node", str(nproc), *args]
    return subprocess.Popen(cmd, cwd=root, env=child_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process below it (torchrun's workers run in sessions of
    their own): stopped first, so none can start another in between."""
    seen: list[int] = []
    for _ in range(5):
        new = [p for p in [proc.pid, *descendants(proc.pid)] if p not in seen]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        seen += new
    for pid in seen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30  # a killed process takes a moment to be gone
    while any(pid_alive(pid) for pid in seen):
        assert time.monotonic() < deadline, "a killed process lives on"
        time.sleep(0.05)


class CsvPoller(threading.Thread):
    """Reads every ``metrics/epoch_metrics_*.csv`` every 50 ms, as a user's script would, and
    keeps what no reader may ever see: an empty file, or a header without its newline."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.bad, self.polls = root, [], 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for path in glob.glob(str(self.root / "metrics" / "epoch_metrics_*.csv")):
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                if b"\n" not in data:
                    self.bad.append((os.path.basename(path), data[:80]))
            self.polls += 1
            time.sleep(0.05)


def check_left_behind(root: Path) -> None:
    """Every run reads interrupted, every epoch CSV has its header, and pandas reads each one."""
    project = Project.at(root)
    ids = project.run_ids()
    assert ids
    for run_id in ids:
        assert run_status(project, run_id) == "interrupted", (run_id, project.sidecar(run_id).read_text())
    for path in (root / "metrics").glob("epoch_metrics_*.csv"):
        assert path.read_bytes().split(b"\n", 1)[0].startswith(b"Epoch,Avg_Loss,"), path
        pd.read_csv(path)  # the guide's snippet
    newest = max(glob.glob(str(root / "metrics" / "epoch_metrics_*.csv")), key=os.path.getmtime, default=None)
    if newest:
        pd.read_csv(newest)


@pytest.mark.slow
def test_kills_at_each_stage_and_at_random_moments_leave_interrupted_runs_and_whole_headers(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    poller = CsvPoller(root)
    poller.start()
    held = []
    for stage in ("claimed", "torch", "rendezvous", "header"):
        for nproc in (1, 2):
            marker = tmp_path / f"held_{stage}_{nproc}"
            proc = start(root, nproc, "--epochs", "1", MEDIC_TEST_HOLD_AT=stage, MEDIC_TEST_HOLD_FILE=str(marker))
            held.append((stage, nproc, marker, proc))
    deadline = time.monotonic() + 150
    for stage, nproc, marker, proc in held:
        while not marker.exists():
            assert proc.poll() is None, f"{stage}/{nproc}: ended with {proc.returncode} before holding"
            assert time.monotonic() < deadline, f"{stage}/{nproc}: never reached its stage"
            time.sleep(0.1)
    for stage, nproc, marker, proc in held:
        kill_tree(proc)
    # the header stage: the file exists and is whole; the earlier stages: no CSV at all
    assert len(list((root / "metrics").glob("epoch_metrics_*.csv"))) == 2
    assert len(list((root / "metrics").glob("run_*.json"))) == 8
    check_left_behind(root)

    rng = random.Random(19)
    for batch in range(2):  # 8 random moments of the first 10 s, 4 runs at a time
        procs = [(start(root, 1 + k % 2, "--epochs", "500"), rng.uniform(0.0, 10.0)) for k in range(4)]
        t0 = time.monotonic()
        for proc, at in sorted(procs, key=lambda p: p[1]):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            kill_tree(proc)
    poller.done.set()
    poller.join()
    assert poller.polls > 100 and not poller.bad, poller.bad
    check_left_behind(root)


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_medic_error_before_the_first_epoch_gives_the_id_back(project, nproc):
    """A model plug-in that returns no model: refused in the training process, after the claim;
    the claim goes and no file is left (folders may stay). (The plug-in uses no MONAI: loaded as
    for a run without plug-ins, seconds sooner.)"""
    (project / "notamodel.py").write_text("def model(cfg):\n    return 42\n")
    proc = subprocess.run([PY, "-m", "medic.train", *TINY, "--epochs", "1", "--model", "notamodel:model",
                           "--nproc_per_node", str(nproc)],
                          cwd=project, env=child_env(MEDIC_IMPORT_ALL="0"), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2 and "not an nn.Module" in proc.stderr, proc.stderr[-2000:]
    left = [p.relative_to(project) for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert left == [Path("notamodel.py")], left


@pytest.mark.parametrize("args, expected", [
    (["--resume", "20000101_000000"], "run 20000101_000000 does not exist"),
    (["--resume", "notes.pth"], "notes.pth"),
    (["--model", "broken:model"], "importing 'broken' failed"),
])
def test_one_process_refuses_a_bad_resume_or_plug_in_before_the_training_sets_up(project, args, expected):
    """As the launcher of several processes does: the resume is settled and the plug-ins imported
    before the training process loads the rest of torch and MONAI; held at that stage, a later
    refusal would never come."""
    (project / "notes.pth").write_text("not a checkpoint\n")
    (project / "broken.py").write_text("raise ImportError('a missing dependency')\n")
    before = sorted(project.iterdir())
    marker = project.parent / "held"
    proc = subprocess.run([PY, "-m", "medic.train", *TINY, "--epochs", "1", *args], cwd=project,
                          env=child_env(MEDIC_TEST_HOLD_AT="torch", MEDIC_TEST_HOLD_FILE=str(marker)),
                          capture_output=True, text=True, timeout=120)
    assert not marker.exists(), "reached the training's set-up"
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medic: error:") and expected in lines[0], proc.stderr
    assert sorted(p for p in project.iterdir() if p.name != "__pycache__") == before


def other_host(root: Path, *args: str) -> subprocess.Popen:
    """``medic train`` under another host name: its own UTS namespace where that works (root),
    else the ``MEDIC_HOSTNAME`` override; a heartbeat every second."""
    env = dict(MEDIC_HEARTBEAT="1", MEDIC_HOSTNAME="")
    cmd = [PY, "-m", "medic.train", *TINY, *args]
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and subprocess.run([unshare, "-u", "true"], capture_output=True).returncode == 0:
        cmd = [unshare, "-u", "sh", "-c", 'hostname medic-other-host && exec "$@"', "sh", *cmd]
    else:
        env["MEDIC_HOSTNAME"] = "medic-other-host"
    return subprocess.Popen(cmd, cwd=root, env=child_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def cli(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", *args], cwd=root, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def wait_running(root: Path, proc: subprocess.Popen, known: tuple[str, ...] = ()) -> str:
    """The id of the new run once it has finished an epoch (runs in ``known`` are older ones)."""
    project = Project.at(root)
    deadline = time.monotonic() + 150
    while True:
        assert proc.poll() is None, f"ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "never started training"
        ids = [i for i in project.run_ids() if i not in known]
        if ids and (json.loads(project.sidecar(ids[-1]).read_text()).get("epochs_done") or 0) >= 1:
            return ids[-1]
        time.sleep(0.2)


@pytest.mark.slow
def test_a_run_on_another_host_is_seen_stopped_and_found_dead(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    proc = other_host(root, "--epochs", "500")
    try:
        run_id = wait_running(root, proc)
        side = json.loads(Project.at(root).sidecar(run_id).read_text())
        assert side["host"] == "medic-other-host" and side["heartbeat_s"] == 1.0
        listed = cli(root, "runs")
        assert listed.returncode == 0 and run_id in listed.stdout
        assert "running" in next(line for line in listed.stdout.splitlines() if run_id in line)
        stopped = cli(root, "stop", run_id, "--timeout", "90")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    project = Project.at(root)
    side = json.loads(project.sidecar(run_id).read_text())
    assert side["status"] == "stopped" and run_status(project, run_id) == "stopped"
    assert (project.checkpoint_dir(run_id) / "last.pth").is_file()
    assert not project.stop_request(run_id).exists()  # acted on: a resume does not stop at once

    proc = other_host(root, "--epochs", "500")
    try:
        run_id = wait_running(root, proc, known=(run_id,))
        assert run_status(project, run_id) == "running"
    finally:
        kill_tree(proc)
    killed = time.time()
    time.sleep(3 * 1.0 + 0.5)  # 3 heartbeat intervals after the last sign of life, at the latest
    assert time.time() - killed >= 3.0
    assert run_status(project, run_id) == "interrupted"
    assert "interrupted" in next(line for line in cli(root, "runs").stdout.splitlines() if run_id in line)


def test_same_named_host_is_judged_by_the_heartbeat(project, monkeypatch):
    """A pid recorded under this host name but in another process table is not checked here."""
    from medic.procs import hostname
    side = {"status": "running", "pid": os.getpid(), "host": hostname(), "pid_scope": "another-machine/pid:[1]",
            "heartbeat_s": 1.0}
    now = time.time()
    assert effective_status(side, last_beat=now - 1, now=now) == "running"
    assert effective_status(side, last_beat=now - 10, now=now) == "interrupted"
    local = dict(side, pid_scope=None)
    assert effective_status(local, last_beat=now - 10, now=now) == "running"  # this very process
    assert effective_status(dict(local, status="starting"), now=now) == "starting"
    for word in ("stale", "unknown", None):
        assert effective_status(dict(side, status=word), last_beat=now - 10, now=now) == "interrupted"
    assert effective_status(None, last_update=now - 100, now=now) == "interrupted"  # 3 x 30 s default


def case_table_names(root: Path, run_id: str) -> list[str]:
    path = sorted((root / "results" / run_id).glob("validation_epoch_*.csv"))[-1]
    with open(path, newline="") as f:
        return [row["Case"] for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["decathlon", "nnunet"])
def test_case_tables_name_each_validation_case_once_with_1_and_2_processes(tmp_path, layout):
    from _volume_helpers import make_decathlon, make_nnunet
    make = make_decathlon if layout == "decathlon" else make_nnunet
    data = make(tmp_path / "data", n=12, shape=(20, 20, 16))
    procs = {}
    for nproc in (1, 2):
        root = tmp_path / f"p{nproc}"
        root.mkdir()
        procs[nproc] = (root, subprocess.Popen(
            [PY, "-m", "medic.train", "--data", str(data), "--val_fraction", "0.25", "--epochs", "1",
             "--batch_size", "1", "--log_interval", "1", "--nproc_per_node", str(nproc)],
            cwd=root, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    names = {}
    for nproc, (root, proc) in procs.items():
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]
        (run_id,) = Project.at(root).run_ids()
        side = json.loads(Project.at(root).sidecar(run_id).read_text())
        table = case_table_names(root, run_id)
        assert table == side["val_cases"] and len(set(table)) == len(table) == 3
        assert not set(table) & set(side["train_cases"]) and len(side["train_cases"]) == 9
        assert all(name.startswith("case_0") for name in table)
        assert side["data_fingerprint"]["cases"] == 12 and side["data_fingerprint"]["dataset_json_sha256"]
        names[nproc] = (table, side["data_fingerprint"]["sha256"])
    assert names[1] == names[2]


@pytest.mark.slow
def test_a_requeue_request_checkpoints_without_marking_the_run_stopped(project):
    """Stop request ``action="requeue"`` (what a scheduler's time limit asks), 2 processes: all
    ranks agree, a checkpoint is saved, the run is left resumable (not ``stopped``), and the
    request is gone."""
    from medic.store.control import request_stop
    proc = start(project, 2, "--epochs", "500", MEDIC_HEARTBEAT="1")
    try:
        run_id = wait_running(project, proc)
        request_stop(Project.at(project), run_id, action="requeue", reason="time limit")
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    p = Project.at(project)
    side = json.loads(p.sidecar(run_id).read_text())
    assert side["status"] == "running" and side["requeued"] and side["message"] == "checkpoint saved for a requeue"
    assert (p.checkpoint_dir(run_id) / "last.pth").is_file() and not p.stop_request(run_id).exists()
    assert run_status(p, run_id) == "interrupted"  # its processes are gone: resumable from last.pth
