"""Stopping a SLURM run from outside: a job that still waits is cancelled (nothing trains); a
running one is asked through the run's files, so that it saves a checkpoint and ends stopped."""

from __future__ import annotations

import time
from typing import Callable

from medic import squeue
from medic.errors import MedicError
from medic.store.control import request_stop
from medic.store.paths import Project
from medic.store.sidecar import now_str, read_sidecar, update_sidecar


def stop_run(project: Project, run_id: str, job_id: str, ended: Callable[[], bool], timeout: float,
             kill_after: float) -> None:
    """Stop run ``run_id`` (SLURM job ``job_id``) and wait until ``ended()``: after ``timeout`` s
    without an end the job is cancelled, and ``kill_after`` s more are left for SLURM to end it."""
    state = squeue.job(job_id, refresh=True)
    if (read_sidecar(project.sidecar(run_id)) or {}).get("status") == "queued" and (state is None or state.waiting):
        error = squeue.cancel(job_id)
        if error:
            raise MedicError(f"could not cancel SLURM job {job_id}: {error}")
        update_sidecar(project.sidecar(run_id), status="stopped", end_time=now_str(),
                       message="cancelled while queued (scancel): nothing trained")
        return
    request_stop(project, run_id, "stop", reason="stop requested")
    for wait_s, cancel in ((timeout, True), (kill_after, False)):
        deadline = time.monotonic() + wait_s
        while not ended() and time.monotonic() < deadline:
            time.sleep(0.5)
            squeue.jobs(refresh=True)
        if ended():
            return
        if cancel:
            squeue.cancel(job_id)
