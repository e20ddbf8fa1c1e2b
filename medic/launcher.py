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
Stopping sends SIGINT (the trainer saves a checkpoint and marks the run stopped), then escalates to
SIGTERM and SIGKILL on the agent *and* its workers: torchrun starts each worker in a session of
its own, so killing the agent alone would leave them training.
"""

from __future__ import annotations

import argparse
import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from medic.errors import MedicError, RunNotFoundError
from medic.paths import RUN_ID_RE, Project, reserve_run_id
from medic.sidecar import now_str, read_sidecar, write_json_atomic

# what an attached job reports as its exit code when only the sidecar's status is known
STATUS_RETURNCODES = {"completed": 0, "stopped": 130, "failed": 1}


def pidfile_path(project: Project, run_id: str) -> Path:
    return project.log / f"launcher_{run_id}.pid"


def launcher_log_path(project: Project, run_id: str) -> Path:
    return project.log / f"launcher_{run_id}.log"


# -- processes, read from /proc (Linux); psutil is used only where /proc is absent ----------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    return data[data.rfind(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; with the pid it names one process."""
    fields = _stat_fields(pid)
    if fields is not None:
        return int(fields[19])
    try:
        import psutil
        return int(psutil.Process(pid).create_time() * 100)
    except Exception:
        return None


def pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """True while ``pid`` runs (a zombie counts as ended) and, given ``start_ticks``, is still the
    same process rather than a later one that reused the number."""
    from medic.status import pid_alive as running
    return running(pid) and (start_ticks is None or process_start_ticks(pid) == start_ticks)


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        try:
            import psutil
            return [p.pid for p in psutil.Process(pid).children()]
        except Exception:
            return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan every ppid
            return [p for p in _all_pids() if (_stat_fields(p) or [None, "0"])[1] == str(pid)]
        except OSError:
            continue
    return kids


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun workers, their data-loader workers), nearest first."""
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in _children(queue.pop(0)):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the job handle ---------------------------------------------------------------------------------

class Job:
    """A training job: its run id, its agent process and the run's files.

    Made by ``launch`` (it holds the ``Popen``) or ``attach`` (it polls the pid and reads the
    outcome from the sidecar); ``wait``, ``stop``, ``returncode`` and ``log_tail`` work for both.
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
    def status(self) -> str | None:
        """The run's status from its sidecar: running, completed, failed or stopped."""
        return (self.sidecar or {}).get("status")

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
        if pid_alive(self.pid, self.start_ticks):
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
        """Block until the job ends and return its exit code; ``TimeoutError`` after ``timeout`` s."""
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
        """Stop the job: SIGINT to the agent (workers save a checkpoint, the run is marked stopped);
        after ``timeout`` s SIGTERM to the agent and every worker, after ``kill_after`` s more
        SIGKILL. Returns the exit code."""
        if not self.running:
            return self.returncode
        known: dict[int, int | None] = {}

        def gather() -> list[int]:
            if pid_alive(self.pid, self.start_ticks):
                for p in descendants(self.pid):
                    known.setdefault(p, process_start_ticks(p))
            alive = [p for p, t in known.items() if pid_alive(p, t)]
            if self.poll() is None:
                alive.insert(0, self.pid)
            return alive

        gather()
        _signal(self.pid, signal.SIGINT)
        for sig, wait_s in ((None, timeout), (signal.SIGTERM, kill_after), (signal.SIGKILL, 10.0)):
            if sig is not None:
                for p in gather():
                    _signal(p, sig, group=p != self.pid or sig == signal.SIGKILL)
            deadline = time.monotonic() + wait_s
            while gather() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not gather():
                break
        return self.poll()

    def log_tail(self, n: int = 20) -> str:
        """The last ``n`` lines the job printed (its launcher log)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * max(n, 1)))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def raise_for_status(self) -> None:
        """Raise ``MedicError`` (with the end of the log) unless the job ended and completed."""
        rc = self.poll()
        if rc is None:
            raise MedicError(f"run {self.run_id} is still running")
        status = self.status
        if rc != 0 or status != "completed":
            message = (self.sidecar or {}).get("message") or ""
            raise MedicError(f"run {self.run_id} ended with exit code {rc}, status {status or 'unknown'}"
                             + (f": {message}" if message else "")
                             + f"\n--- last lines of {self.log_path} ---\n{self.log_tail(15)}")


# -- launch / attach -------------------------------------------------------------------------------

def _child_env(run_id: str) -> dict[str, str]:
    env = dict(os.environ, MEDIC_RUN_ID=run_id, PYTHONUNBUFFERED="1")
    # the job runs the same medic as this process, even when it is imported from a source tree
    src = str(Path(__file__).resolve().parent.parent)
    if src not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _resumed_run_id(project: Project, resume: str) -> str:
    if resume == "latest":  # the trainer's choice: the newest run that has a checkpoint
        ids = [i for i in reversed(project.run_ids()) if any(project.checkpoint_dir(i).glob("*.pth"))]
        if not ids:
            raise RunNotFoundError(f"resume=latest but no run in {project.root} has a checkpoint")
        return ids[0]
    found = RUN_ID_RE.search(str(resume))
    if not found:
        raise RunNotFoundError(f"cannot tell which run {resume!r} continues; give a run id")
    return found.group(0)


def launch(config, root: str | os.PathLike | None = None) -> Job:
    """Start training for ``config`` (a ``TrainConfig`` or a dict of its options) in the background
    and return its ``Job`` at once. ``root`` is the project root (default: the working directory)."""
    from medic.config import TrainConfig
    config = TrainConfig.from_dict(config) if isinstance(config, dict) else config.validate()
    cwd = Path(root if root is not None else os.getcwd()).resolve()
    if not cwd.is_dir():
        raise MedicError(f"project root {cwd} is not a folder")
    project = Project.at(cwd / config.output_dir if config.output_dir else cwd)
    project.make_dirs()
    reserved = not config.resume
    run_id = reserve_run_id(project) if reserved else _resumed_run_id(project, config.resume)
    argv = [sys.executable, "-m", "medic.train", *config.to_args(include_launcher=True)]
    log_path = launcher_log_path(project, run_id)
    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, cwd=cwd, env=_child_env(run_id), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as err:
        csv = project.epoch_csv(run_id)
        if reserved and csv.exists() and csv.stat().st_size == 0:
            csv.unlink()
        raise MedicError(f"could not start training: {err}") from err
    ticks = process_start_ticks(popen.pid)
    write_json_atomic(pidfile_path(project, run_id), {
        "run_id": run_id, "pid": popen.pid, "start_ticks": ticks, "start_time": now_str(),
        "argv": argv, "cwd": str(cwd), "log": str(log_path)})
    return Job(run_id, project, popen.pid, ticks, popen=popen)


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
    info = read_sidecar(pidfile_path(project, run_id))
    if info and isinstance(info.get("pid"), int):
        rc = info.get("returncode")
        return Job(run_id, project, info["pid"], info.get("start_ticks"),
                   returncode=rc if isinstance(rc, int) else None)
    sidecar = read_sidecar(project.sidecar(run_id))
    if sidecar is None and not project.epoch_csv(run_id).exists():
        raise RunNotFoundError(f"no run {run_id} in {project.metrics}")
    # without a pid file: the torchrun agent (or the single process) named in the sidecar, unless
    # that pid now belongs to a process started after the sidecar was last written
    from medic.status import pid_alive as sidecar_pid_alive
    try:
        written = project.sidecar(run_id).stat().st_mtime
    except OSError:
        written = None
    for key in ("agent_pid", "pid"):
        pid = (sidecar or {}).get(key)
        if isinstance(pid, int) and sidecar_pid_alive(pid, written):
            return Job(run_id, project, pid, process_start_ticks(pid))
    return Job(run_id, project, None)


def stop_main(argv: list[str] | None = None) -> int:
    """``medic stop [RUN_ID]``: stop a running job (default: the newest running one)."""
    parser = argparse.ArgumentParser(prog="medic stop", description="Stop a running training job: "
                                     "it saves a checkpoint and its run is marked stopped.")
    parser.add_argument("run_id", nargs="?", help="the run to stop (default: the newest running run)")
    parser.add_argument("--root", "--output_dir", "--output-dir", default=None,
                        help="project root (default: the working directory)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a clean stop before killing (default: 60)")
    args = parser.parse_args(argv)
    project = Project.at(args.root)
    if args.run_id:
        job = attach(args.run_id, project.root)
    else:
        running = [attach(r, project.root) for r in reversed(project.run_ids())
                   if (read_sidecar(project.sidecar(r)) or {}).get("status") == "running"]
        running = [j for j in running if j.running]
        if not running:
            raise RunNotFoundError(f"no running job in {project.root}")
        job = running[0]
    if not job.running:
        print(f"run {job.run_id} is not running (status: {job.status or 'unknown'})")
        return 0
    print(f"stopping run {job.run_id} (pid {job.pid}) ...", flush=True)
    rc = job.stop(timeout=args.timeout)
    print(f"run {job.run_id} ended (status: {job.status or 'unknown'}, exit code {rc})")
    return 0


if __name__ == "__main__":
    from medic.cli import run_main
    sys.exit(run_main(stop_main))
