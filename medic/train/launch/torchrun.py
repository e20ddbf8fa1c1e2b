"""``medic train`` with several processes: start torchrun, wait for it, and tell which rank's
error started a failure.

The launcher checks everything that can be checked before a worker starts (``start``), reserves
the run id, then starts torchrun — bound to 127.0.0.1 for a one-machine run, OMP threads =
cores / N — and waits, passing Ctrl-C/SIGTERM straight on to the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from medic.config import TrainConfig
from medic.procs import children
from medic.store.files import write_json_atomic
from medic.store.control import Heartbeat
from medic.store.paths import Project, reserve_run_id
from medic.store.sidecar import now_str, read_sidecar, update_sidecar
from medic.train.launch.checks import check_before_start, plan_resume

EXIT_FILE_ENV = "MEDIC_EXIT_FILE"
FAILURE_DIR_ENV = "MEDIC_FAILURE_DIR"  # where each failing rank leaves its error (report_failure)


def launch(cfg: TrainConfig, explicit: set[str], torchrun_flags: list[str]) -> int:
    """Start torchrun with N workers of this config, and wait."""
    project = Project.at(cfg.output_dir or None)
    cfg.output_dir = str(project.root)
    standalone = not torchrun_flags
    check_before_start(cfg, project, explicit)
    env = dict(os.environ)
    run_id = None
    if cfg.resume:
        cfg, run_id, path = plan_resume(cfg, explicit, project)
        cfg.output_dir = str(project.root)
    elif standalone:
        run_id = os.environ.get("MEDIC_RUN_ID") or reserve_run_id(project)
    project.make_dirs()  # the input is good: from here on the run has files
    if run_id and not cfg.resume:  # alive from afar while the workers start, and while this waits
        Heartbeat.of(project, run_id).start()  # (a resumed run beats once its workers take it over)
    if run_id and standalone:
        env["MEDIC_RUN_ID"] = run_id  # every rank uses it; in multi-node runs global rank 0 picks
    cores = os.cpu_count() or 1
    threads = cfg.threads or max(1, cores // cfg.nproc_per_node)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}"]
    if standalone:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        cmd += ["--nnodes=1", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0",
                "--local_addr=127.0.0.1"]
    else:
        cmd += torchrun_flags
    worker_cfg = TrainConfig(**{**cfg.to_dict(), "nproc_per_node": 1, "threads": threads})
    cmd += ["-m", "medic.train", *worker_cfg.to_args(full=True)]
    exit_file = project.log / f".exit-{os.getpid()}"
    exit_file.unlink(missing_ok=True)
    env[EXIT_FILE_ENV] = str(exit_file)
    # torchrun's agent copies the first failing worker's error here (its documented hand-over)
    error_file = project.log / f".error-{os.getpid()}.json"
    error_file.unlink(missing_ok=True)
    env.setdefault("TORCHELASTIC_ERROR_FILE", str(error_file))
    # and each failing rank its own error, timed precisely (report_failure)
    failure_dir = project.log / f".failures-{os.getpid()}"
    shutil.rmtree(failure_dir, ignore_errors=True)
    env[FAILURE_DIR_ENV] = str(failure_dir)
    job: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum, frame):
        # straight to the training processes: they agree to stop at a step boundary, save and
        # exit cleanly, so the agent ends normally instead of dumping its own interruption.
        # Before the workers exist, the agent gets the signal (and stops the start-up).
        if not job:
            pending.append(signum)
            return
        for pid in children(job[0].pid) or [job[0].pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old_pid = (read_sidecar(project.sidecar(run_id)) or {}).get("pid", -1) if run_id else -1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)  # before the start: a Ctrl-C then must not orphan the job
    job.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    for signum in pending:
        forward(signum, None)
    code = job[0].wait()
    if exit_file.exists():
        code = int(exit_file.read_text() or code)
        exit_file.unlink()
    cause = first_cause(failure_dir) or first_failure(error_file)
    shutil.rmtree(failure_dir, ignore_errors=True)
    if run_id:
        sidecar = project.sidecar(run_id)
        side = read_sidecar(sidecar)
        if side is not None and side.get("pid") == old_pid:
            pass  # never restarted (a resume refused by the workers): the record stays as it was
        elif side is not None and side.get("requeued"):
            pass  # checkpointed for a requeue: the run goes on later (``RankRun.requeue``)
        elif side is not None and side.get("status") in ("starting", "running"):
            update_sidecar(sidecar, status="failed", end_time=now_str(),
                           message=cause or f"the training processes ended without finishing (exit code {code})")
        elif side is not None and side.get("status") == "failed" and cause:
            # rank 0 may only have seen its peer vanish; name the error that started it
            update_sidecar(sidecar, message=f"{cause} (the first process to fail; the others stopped with it)")
    return code


def report_failure(rank: int, message: str, consequence: bool) -> None:
    """Leave this rank's error, with the time to the microsecond, where the launcher looks for
    the error that started a failure: when one rank raises, the others fail a moment later only
    because their peer vanished, often within the same second, and torchrun's own record (whole
    seconds, ties to the lowest rank) then names a bystander."""
    folder = os.environ.get(FAILURE_DIR_ENV)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        write_json_atomic(os.path.join(folder, f"rank{rank}.json"),
                          {"rank": rank, "time": time.time(), "message": message, "consequence": consequence})
    except OSError:
        pass  # the launcher falls back on torchrun's record


def first_cause(folder: Path) -> str | None:
    """The error that started a failure, from the ranks' own records: the earliest error that
    is not a rank seeing its peer vanish (or the earliest of all when each is)."""
    records = []
    for path in folder.glob("rank*.json"):
        try:
            data = json.loads(path.read_text())
            records.append((bool(data["consequence"]), float(data["time"]), str(data["message"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(records)[2][:300] if records else None


def first_failure(path: Path) -> str | None:
    """The first line of the error torchrun recorded for the first failing worker, if any."""
    try:
        data = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    lines = str(message or "").strip().splitlines()
    return lines[0][:300] if lines else None
