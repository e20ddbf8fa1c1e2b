"""One trial of a sweep as processes: papermill executing the training notebook (whose kernel
launches an ordinary medic run), followed from outside by tailing the run's epoch CSV.

A trial starts one of four ways (``mode``): ``new``; ``attached`` to a training job still alive
from a dead driver; ``resumed`` from the checkpoint of a job that died; ``restarted`` from scratch
when that job left no checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from medic.jobs import Job, attach
from medic.procs import descendants, pid_alive, process_start_ticks, send_signal
from medic.store import columns as C
from medic.store.files import write_json_atomic
from medic.store.paths import Project, reserve_run_id, resume_points
from medic.store.status import run_status as status_of
from medic.store.sidecar import read_sidecar
from medic.store.tail import CsvTail
from medic.sweeps.spec import SweepSpec, sweep_dir

def trial_notebook(root: str | os.PathLike, sweep_id: str, k: int) -> Path:
    return sweep_dir(root, sweep_id) / f"trial_{k}.ipynb"


def _medic_src_env(env: dict[str, str]) -> dict[str, str]:
    """The kernel imports the same medic as this process, even from a source tree."""
    src = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


class TrialRun:
    """A trial being run or followed by this driver."""

    def __init__(self, spec: SweepSpec, root: Path, trial, k: int, values: dict[str, Any],
                 slot: int, slot_env: dict[str, str]):
        self.spec, self.root, self.trial, self.k = spec, root, trial, k
        self.values, self.slot, self.slot_env = values, slot, slot_env
        self.project = Project.at(root)
        self.run_id = ""
        self.mode = "new"
        self.popen: subprocess.Popen | None = None
        self.orphan: tuple[int, int | None] | None = None  # a dead driver's papermill, still running
        self.tail: CsvTail | None = None
        self.reported: dict[int, float] = {}
        self.pruned = False
        self.stopping = False
        self.started = time.time()

    # -- starting ------------------------------------------------------------------------------

    def start(self, previous: dict[str, Any]) -> str:
        """Start (or take over) the trial; ``previous`` are the user attributes of the trial it
        retries, if any. Returns a line saying what was done."""
        old_run = previous.get("run_id") or ""
        old_pm = previous.get("papermill_pid")
        if old_run:
            job = attach(old_run, self.root)
            if job.running:
                self.mode, self.run_id = "attached", old_run
                if isinstance(old_pm, int) and pid_alive(old_pm, start_ticks=previous.get("papermill_ticks")):
                    self.orphan = (old_pm, previous.get("papermill_ticks"))
                self._record()
                return f"trial {self.k}: run {old_run} is still training; re-attached"
            self._end_orphan(old_pm, previous.get("papermill_ticks"))
            if resume_points(self.project.checkpoint_dir(old_run)) and \
                    (read_sidecar(self.project.sidecar(old_run)) or {}).get("status") != "completed":
                self.mode, self.run_id = "resumed", old_run
                self._launch(resume=old_run)
                return f"trial {self.k}: run {old_run} died; resumed from its checkpoint"
            if (read_sidecar(self.project.sidecar(old_run)) or {}).get("status") == "completed":
                return self._kept(old_run)
            self.mode = "restarted"
        return self._start_new(old_run)

    def _start_new(self, old_run: str) -> str:
        """A new run for the trial: its first, or one that restarts a run that left no checkpoint."""
        self.run_id = reserve_run_id(self.project)
        self._launch()
        if self.mode == "restarted":
            return f"trial {self.k}: run {old_run} died without a checkpoint; restarted as run {self.run_id}{self._where()}"
        return f"trial {self.k}: run {self.run_id} started{self._where()} {self._shown_values()}"

    def _where(self) -> str:
        return ""

    def _kept(self, old_run: str) -> str:
        """A dead driver's trial whose run had completed: recorded as it is, nothing started."""
        self.mode, self.run_id = "attached", old_run
        self._record()
        return f"trial {self.k}: run {old_run} had completed; kept"

    def _shown_values(self) -> str:
        return "(" + ", ".join(f"{k}={v}" for k, v in self.values.items()) + ")"

    def parameters(self, resume: str = "") -> dict[str, Any]:
        config = self.spec.trial_config(self.values)
        if "threads" not in self.spec.fixed and "MEDIC_SWEEP_THREADS" in self.slot_env:
            config["threads"] = int(self.slot_env["MEDIC_SWEEP_THREADS"])
        config["resume"] = resume
        return dict(config, interactive=False, project_root=str(self.root))

    def _launch(self, resume: str = "") -> None:
        out = trial_notebook(self.root, self.spec.sweep_id, self.k)
        log = out.with_suffix(".log")
        values = out.with_suffix(".json")
        write_json_atomic(values, self.parameters(resume))
        argv = [sys.executable, "-m", "medic.sweeps.execute", self.spec.notebook, str(out), str(values),
                str(self.root)]
        env = _medic_src_env(dict(os.environ, **{k: v for k, v in self.slot_env.items()}))
        env.update(MEDIC_SWEEP=self.spec.sweep_id, MEDIC_SWEEP_TRIAL=str(self.k),
                   MEDIC_SWEEP_RUN_ID=self.run_id, PYTHONUNBUFFERED="1")
        with open(log, "ab") as f:
            self.popen = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                          stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self._record()

    def _record(self) -> None:
        t = self.trial
        t.set_user_attr("k", self.k)
        t.set_user_attr("run_id", self.run_id)
        t.set_user_attr("mode", self.mode)
        t.set_user_attr("status", "running")
        t.set_user_attr("slot", self.slot)
        pid, ticks = (self.popen.pid, process_start_ticks(self.popen.pid)) if self.popen else \
            (self.orphan or (None, None))
        t.set_user_attr("papermill_pid", pid)
        t.set_user_attr("papermill_ticks", ticks)
        self.tail = CsvTail(self.project.epoch_csv(self.run_id))

    @staticmethod
    def _end_orphan(pid: Any, ticks: Any) -> None:
        """A dead driver's papermill whose job is gone: end it before its notebook is redone."""
        if isinstance(pid, int) and pid_alive(pid, start_ticks=ticks):
            send_signal(pid, signal.SIGTERM, group=True)
            deadline = time.monotonic() + 10
            while pid_alive(pid, start_ticks=ticks) and time.monotonic() < deadline:
                time.sleep(0.1)

    # -- following -------------------------------------------------------------------------------

    def new_values(self) -> list[tuple[int, float]]:
        """(epoch, monitored value) of the rows written since the last call."""
        found = []
        for row in self.tail.poll_dicts() if self.tail else []:
            try:
                epoch, value = int(row[C.EPOCH]), float(row[self.spec.monitor])
            except (KeyError, ValueError):
                continue
            if epoch not in self.reported and math.isfinite(value):
                self.reported[epoch] = value
                found.append((epoch, value))
        return found

    def job(self) -> Job:
        return attach(self.run_id, self.root)

    def finished(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is not None
        if self.orphan and pid_alive(self.orphan[0], start_ticks=self.orphan[1]):
            return False
        return not self.job().running

    def run_status(self) -> str:
        """The run's status (``medic.store.status``: one word of the table)."""
        return status_of(self.project, self.run_id)

    def stop(self, timeout: float = 60.0) -> threading.Thread:
        """Stop the training job gracefully (in a thread: the driver keeps its heartbeats);
        papermill then sees the run end and exits."""
        self.stopping = True

        def work():
            try:
                self.job().stop(timeout=timeout)
            finally:
                deadline = time.monotonic() + 30
                while not self.finished() and time.monotonic() < deadline:
                    time.sleep(0.2)
                if self.popen is not None and self.popen.poll() is None:
                    # still starting (no job yet): end papermill and its kernel, then any job the
                    # kernel managed to launch meanwhile
                    for pid in [self.popen.pid, *descendants(self.popen.pid)]:
                        send_signal(pid, signal.SIGTERM, group=pid == self.popen.pid)
                    try:
                        self.popen.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        send_signal(self.popen.pid, signal.SIGKILL, group=True)
                    self.job().stop(timeout=timeout)

        thread = threading.Thread(target=work, name=f"stop-trial-{self.k}", daemon=True)
        thread.start()
        return thread

    def best(self) -> tuple[float | None, int | None]:
        if not self.reported:
            return None, None
        pick = max if self.spec.direction == "maximize" else min
        epoch = pick(self.reported, key=lambda e: self.reported[e])
        return self.reported[epoch], epoch
