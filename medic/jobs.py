"""Start, re-attach to and stop a training job from a notebook or a shell.

    job = medic.launch({"epochs": 20, "nproc_per_node": 2}, root=".")
    job.run_id            # known at once: the launcher reserves it and hands it to the trainer
    job.wait(); job.returncode; job.log_tail(20)
    medic.attach(job.run_id).stop()        # from another kernel, after a restart
    medic stop 20251106_103015             # from a shell

The job is ``python -m medic.train ...`` (which starts torchrun itself for several processes) in
its own session, so it outlives the kernel that started it and a kernel interrupt or restart never
reaches it. Its output goes to ``log/launcher_<id>.log`` (a pipe nobody drains would stall
training), and ``log/launcher_<id>.pid`` records the agent's pid so another process can find it.

Stopping writes a stop request next to the run (``medic.store.control``), which the trainer reads
at its next progress interval from whatever host it runs on: it saves a checkpoint and marks the
run stopped. Where the job's process is local, SIGINT is sent as well (the fast path), then, if
it does not end, SIGTERM and SIGKILL to the agent *and* its workers: torchrun starts each worker
in a session of its own, so killing the agent alone would leave them training.
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from medic.errors import MedicError, RunNotFoundError
from medic.procs import descendants, hostname, pid_alive, pid_scope, process_start_ticks, send_signal
from medic.store.control import request_stop
from medic.store.paths import RUN_ID_RE, Project, is_claim, release_run_id, reserve_run_id, resumed_run_id
from medic.store.files import tail_lines, write_json_atomic
from medic.store.sidecar import now_str, read_sidecar, update_sidecar, written_at
from medic.store.status import ACTIVE, FINISHED, run_status, is_local

# what an attached job reports as its exit code when only the sidecar's status is known
STATUS_RETURNCODES = {"completed": 0, "stopped": 130, "failed": 1, "interrupted": 1, "timeout": 1}


def pidfile_path(project: Project, run_id: str) -> Path:
    return project.log / f"launcher_{run_id}.pid"


def launcher_log_path(project: Project, run_id: str) -> Path:
    return project.log / f"launcher_{run_id}.log"


# -- the job handle ---------------------------------------------------------------------------------

class Job:
    """A training job: its run id, its agent process and the run's files.

    Made by ``launch`` (it holds the ``Popen``) or ``attach`` (it polls the pid and reads the
    outcome from the sidecar); ``wait``, ``stop``, ``returncode`` and ``log_tail`` work for both.

    Args:
        run_id: the run's id (``metrics/epoch_metrics_<run_id>.csv``).
        project: the project whose files the run writes.
        pid: the agent process (``medic train``, or torchrun's agent); ``None`` when unknown.
        start_ticks: the process's start time in clock ticks, so that a reused pid is not
            taken for the job.
        popen: the ``Popen`` when this process started the job.
        returncode: the exit code, when already known.
    """

    def __init__(self, run_id: str, project: Project, pid: int | None, start_ticks: int | None = None,
                 popen: subprocess.Popen | None = None, returncode: int | None = None):
        self.run_id = run_id
        self.project = project
        self.pid = pid
        self.start_ticks = start_ticks
        self._popen = popen
        self._returncode = returncode

    def __repr__(self) -> str:
        state = "running" if self.running else f"ended, returncode {self.returncode}"
        return f"<Job run {self.run_id} pid {self.pid} ({state}) in {self.project.root}>"

    @property
    def sidecar(self) -> dict[str, Any] | None:
        return read_sidecar(self.project.sidecar(self.run_id))

    @property
    def status(self) -> str:
        """The run's status: one word of the table in ``medic.store.status``."""
        return run_status(self.project, self.run_id)

    @property
    def log_path(self) -> Path:
        return launcher_log_path(self.project, self.run_id)

    def poll(self) -> int | None:
        """None while the job runs, else its exit code."""
        if self._returncode is not None:
            return self._returncode
        if self._popen is not None:
            rc = self._popen.poll()
            if rc is not None:
                self._record_returncode(rc)
            return rc
        if pid_alive(self.pid, start_ticks=self.start_ticks):
            return None
        if self.pid is None and self.status in ACTIVE:  # a run on another host: alive by its heartbeat
            return None
        saved = (read_sidecar(pidfile_path(self.project, self.run_id)) or {}).get("returncode")
        if isinstance(saved, int):
            self._returncode = saved
        else:  # the launching process is gone: the trainer's own verdict is all there is
            self._returncode = STATUS_RETURNCODES.get(self.status or "", 1)
        return self._returncode

    @property
    def returncode(self) -> int | None:
        return self.poll()

    @property
    def running(self) -> bool:
        return self.poll() is None

    def _record_returncode(self, rc: int) -> None:
        self._returncode = rc
        path = pidfile_path(self.project, self.run_id)
        info = read_sidecar(path)
        if info is not None and info.get("pid") == self.pid:
            info.update(returncode=rc, end_time=now_str())
            try:
                write_json_atomic(path, info)
            except OSError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        """Block until the job ends and return its exit code.

        Args:
            timeout: seconds to wait; ``None``: no limit.

        Raises:
            TimeoutError: the job is still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._popen is not None:
                try:
                    rc = self._popen.wait(timeout=0.2)
                    self._record_returncode(rc)
                    return rc
                except subprocess.TimeoutExpired:
                    pass
            else:
                rc = self.poll()
                if rc is not None:
                    return rc
                time.sleep(0.2)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} is still running after {timeout:g} s")

    def stop(self, timeout: float = 60.0, kill_after: float = 10.0) -> int | None:
        """Stop the job: a stop request in the run's files (read by the trainer on any host: it
        saves a checkpoint and marks the run stopped) and, where its process is local, SIGINT to
        the agent, escalating as below. A run on another host is waited for.

        Args:
            timeout: seconds to wait for the graceful stop before SIGTERM goes to the agent and
                every worker (a local job), or before giving up waiting (a job elsewhere).
            kill_after: seconds after the SIGTERM before SIGKILL.

        Returns:
            The job's exit code (130 for a graceful stop); None when a run elsewhere has not
            ended by then.
        """
        if not self.running:
            return self.returncode
        try:
            request_stop(self.project, self.run_id, "stop", reason="medic stop")
        except OSError:
            if self.pid is None:
                raise
        if self.pid is None:  # elsewhere: the request is the only way
            deadline = time.monotonic() + timeout
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            return self.poll()
        known: dict[int, int | None] = {}

        def gather() -> list[int]:
            if pid_alive(self.pid, start_ticks=self.start_ticks):
                for p in descendants(self.pid):
                    known.setdefault(p, process_start_ticks(p))
            alive = [p for p, t in known.items() if pid_alive(p, start_ticks=t)]
            if self.poll() is None:
                alive.insert(0, self.pid)
            return alive

        gather()
        send_signal(self.pid, signal.SIGINT)
        for sig, wait_s in ((None, timeout), (signal.SIGTERM, kill_after), (signal.SIGKILL, 10.0)):
            if sig is not None:
                for p in gather():
                    send_signal(p, sig, group=p != self.pid or sig == signal.SIGKILL)
            deadline = time.monotonic() + wait_s
            while gather() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not gather():
                break
        return self.poll()

    def log_tail(self, n: int = 20) -> str:
        """The last lines the job printed (its launcher log).

        Args:
            n: how many lines.
        """
        return "\n".join(tail_lines(self.log_path, n))

    def raise_for_status(self) -> None:
        """Raise ``MedicError`` (with the end of the log) unless the job ended and completed."""
        rc = self.poll()
        if rc is None:
            raise MedicError(f"run {self.run_id} is still running")
        status = self.status
        if rc != 0 or status != "completed":
            message = (self.sidecar or {}).get("message") or ""
            raise MedicError(f"run {self.run_id} ended with exit code {rc}, status {status}"
                             + (f": {message}" if message else "")
                             + f"\n--- last lines of {self.log_path} ---\n{self.log_tail(15)}")


class SlurmJob(Job):
    """A training job that SLURM runs: its state comes from ``squeue`` and the run's files, never
    from a pid (the processes live on compute nodes). ``stop`` goes through the run's files (the
    trainer saves a checkpoint and the run is marked stopped); a job still waiting is cancelled."""

    @property
    def job_id(self) -> str:
        """SLURM's job id (the same across requeues), from the run's sidecar."""
        info = (self.sidecar or {}).get("slurm")
        return str(info.get("job_id") or "") if isinstance(info, dict) else ""

    def __repr__(self) -> str:
        return f"<SlurmJob run {self.run_id}, SLURM job {self.job_id} ({self.status}) in {self.project.root}>"

    @property
    def log_path(self) -> Path:
        """SLURM's output file of the job (every rank-0 line, and the job's own errors)."""
        return self.project.log / f"slurm_{self.run_id}_{self.job_id}.out"

    def poll(self) -> int | None:
        if self._returncode is None and self.status in FINISHED:
            self._returncode = STATUS_RETURNCODES.get(self.status or "", 1)
        return self._returncode

    def stop(self, timeout: float = 60.0, kill_after: float = 60.0) -> int | None:
        """Stop the run: a job that waits is cancelled (``scancel``) and nothing trains; a running
        one is asked through the files to save a checkpoint and stop. After ``timeout`` s without
        an end, the job is cancelled; ``kill_after`` s more are left for SLURM to end it."""
        from medic.slurm.control import stop_run
        if self.poll() is None:
            stop_run(self.project, self.run_id, self.job_id, lambda: self.poll() is not None, timeout, kill_after)
        return self.poll()


# -- launch / attach -------------------------------------------------------------------------------

def _child_env(run_id: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"MEDIC_RUN_ID": run_id} if run_id else {}))
    # the job runs the same medic as this process, even when it is imported from a source tree
    src = str(Path(__file__).resolve().parent.parent)
    if src not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _sweep_run_id(project: Project) -> str | None:
    """The run id a sweep driver reserved for this trial (``MEDIC_SWEEP_RUN_ID``), while unused:
    its sidecar is still the bare claim, and no job was started for it; or, in a trial's SLURM
    job, the run submitted with that job."""
    run_id = os.environ.get("MEDIC_SWEEP_RUN_ID", "")
    side = read_sidecar(project.sidecar(run_id)) if RUN_ID_RE.fullmatch(run_id) else None
    info = (side or {}).get("slurm")
    if isinstance(info, dict) and info.get("job_id") and str(info["job_id"]) == os.environ.get("SLURM_JOB_ID"):
        return run_id  # the trial's job, on its node: its run is this trial's, in every allocation
    if not is_claim(side) or project.epoch_csv(run_id).exists() or pidfile_path(project, run_id).exists():
        return None
    return run_id


def launch(config, root: str | os.PathLike | None = None, launcher: str = "local",
           slurm: dict[str, Any] | None = None) -> Job:
    """Start training in the background and return its ``Job`` at once.

    The job runs in a session of its own, so it outlives the kernel that launched it; its output
    goes to ``log/launcher_<run_id>.log``. With ``launcher="slurm"`` it is a SLURM batch job
    instead: this returns once SLURM has accepted it, with a ``SlurmJob``.

    Args:
        config: a ``TrainConfig``, or a dict of its options (checked like the command line's).
        root: the project root (default: the working directory).
        launcher: ``"local"`` (processes on this machine) or ``"slurm"`` (``sbatch``).
        slurm: the SLURM request, ``medic train``'s SLURM options by name
            (``{"nodes": 2, "gpus_per_node": 4, "time": "12:00:00", "partition": "gpu"}``).

    Returns:
        The job; its ``run_id`` is known at once.

    Raises:
        MedicError: an unknown option or a bad value, or a root that is not a folder; for SLURM,
            no ``sbatch`` or a job that ``sbatch`` refuses (its message).

    Example::

        import medic

        job = medic.launch({"epochs": 2, "num_samples": 32, "nproc_per_node": 2}, root=".")
        print(job.run_id)
        job.wait()                 # the exit code; job.status is the run's sidecar status
        print(job.log_tail(5))
    """
    from medic.config import TrainConfig
    from medic.slurm.options import SlurmOptions
    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config.validate()
    options = SlurmOptions.from_dict({**(slurm or {}), "launcher": launcher})
    cwd = Path(root if root is not None else os.getcwd()).resolve()
    if not cwd.is_dir():
        raise MedicError(f"project root {cwd} is not a folder")
    project = Project.at(cwd / config.output_dir if config.output_dir else cwd)
    if options.launcher == "slurm":
        return _submit(config, options, project, cwd)
    project.make_dirs()
    reserved = not config.resume
    run_id = (_sweep_run_id(project) or reserve_run_id(project)) if reserved \
        else resumed_run_id(project, config.resume)
    argv = [sys.executable, "-m", "medic.train", *config.to_args(include_launcher=True)]
    log_path = launcher_log_path(project, run_id)
    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, cwd=cwd, env=_child_env(run_id), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as err:
        if reserved:
            release_run_id(project, run_id)
        raise MedicError(f"could not start training: {err}") from err
    if reserved:  # the claim names the job's process from now on, not this one
        update_sidecar(project.sidecar(run_id), pid=popen.pid)
    ticks = process_start_ticks(popen.pid)
    write_json_atomic(pidfile_path(project, run_id), {
        "run_id": run_id, "pid": popen.pid, "start_ticks": ticks, "start_time": now_str(),
        "host": hostname(), "pid_scope": pid_scope(),
        "argv": argv, "cwd": str(cwd), "log": str(log_path)})
    return Job(run_id, project, popen.pid, ticks, popen=popen)


def _submit(config, options, project: Project, cwd: Path) -> "SlurmJob":
    """``medic train --launcher slurm`` in a child process (the same checks and claim as in a
    shell); it returns once SLURM has accepted the job."""
    argv = [sys.executable, "-m", "medic.train", *config.to_args(include_launcher=True), *options.to_args()]
    proc = subprocess.run(argv, cwd=cwd, env=_child_env(""), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    found = re.search(r"run (\S+): SLURM job \S+ submitted", proc.stdout)
    if proc.returncode != 0 or not found:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()
        raise MedicError(lines[-1].removeprefix("medic: error: "))
    return SlurmJob(found.group(1), project, None)


def attach(run_id: str | None = None, root: str | os.PathLike | None = None) -> Job:
    """A ``Job`` for a run started earlier (by ``launch``, or ``medic train`` in a shell), found by
    its id (default: the newest run) in the project at ``root``."""
    project = Project.at(root)
    if not run_id:
        ids = project.run_ids()
        if not ids:
            raise RunNotFoundError(f"no runs in {project.metrics}")
        run_id = ids[-1]
    run_id = str(run_id)
    side = read_sidecar(project.sidecar(run_id)) or {}
    if side.get("launcher") == "slurm" and isinstance(side.get("slurm"), dict) and side["slurm"].get("job_id"):
        return SlurmJob(run_id, project, None)
    info = read_sidecar(pidfile_path(project, run_id))
    if info and isinstance(info.get("pid"), int) and is_local(info):
        rc = info.get("returncode")
        return Job(run_id, project, info["pid"], info.get("start_ticks"),
                   returncode=rc if isinstance(rc, int) else None)
    sidecar = read_sidecar(project.sidecar(run_id))
    if sidecar is None and not project.epoch_csv(run_id).exists():
        raise RunNotFoundError(f"no run {run_id} in {project.metrics}")
    # without a pid file: the torchrun agent (or the single process) named in the sidecar, unless
    # that pid now belongs to a process started after the sidecar was last written
    written = written_at(project.sidecar(run_id))
    for key in ("agent_pid", "pid") if sidecar is not None and is_local(sidecar) else ():
        pid = sidecar.get(key)
        if isinstance(pid, int) and pid_alive(pid, written_at=written):
            return Job(run_id, project, pid, process_start_ticks(pid))
    return Job(run_id, project, None)
