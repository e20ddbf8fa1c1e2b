"""The sweep driver: fills its slots with trials from the Optuna study, follows each trial's
epoch CSV (reporting every epoch to the pruner), heartbeats the trials it runs, and records each
outcome. Several drivers (this machine or others, sharing ``--storage``) may work one sweep:
Optuna hands each queued trial to exactly one of them.

Stopping a driver (Ctrl-C, SIGTERM, ``medic stop SWEEP_ID``, the notebook's Stop-all) stops its
trials gracefully; they are marked ``stopped`` and continue on ``--resume``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from medic.jobs import pidfile_path
from medic.procs import pid_alive, process_start_ticks
from medic.store.files import write_json_atomic
from medic.store.paths import release_run_id
from medic.sweeps import study as st
from medic.sweeps.spec import DRIVER_JOB_ENV, SweepSpec, sweep_dir
from medic.sweeps.trial import TrialRun

POLL_SECONDS = 0.5


def drivers_dir(root: Path, sweep_id: str) -> Path:
    return sweep_dir(root, sweep_id) / "drivers"


def _driver_files(root: Path, sweep_id: str):
    """Each readable driver file of the sweep as (path, its record)."""
    folder = drivers_dir(root, sweep_id)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            yield path, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue


def _alive_here(info: dict) -> bool:
    return info.get("host") == socket.gethostname() and pid_alive(info.get("pid"), start_ticks=info.get("ticks"))


def other_drivers(root: Path, sweep_id: str, own: Path | None = None) -> bool:
    """Whether a driver of the sweep other than ``own`` (its file) is alive: on this host by its
    pid, elsewhere by its file's heartbeat."""
    for path, info in _driver_files(root, sweep_id):
        if path == own:
            continue
        if info.get("host") == socket.gethostname():
            if _alive_here(info):
                return True
            continue
        try:
            if time.time() - path.stat().st_mtime <= st.FILE_GRACE_SECONDS:
                return True
        except OSError:
            continue
    return False


def live_drivers(root: Path, sweep_id: str) -> list[int]:
    """Pids of this host's drivers of the sweep that are still running."""
    return [int(info["pid"]) for _, info in _driver_files(root, sweep_id) if _alive_here(info)]


def stop_file(root: Path, sweep_id: str) -> Path:
    """A stop request for every driver of the sweep, wherever it runs (``medic stop SWEEP_ID``)."""
    return sweep_dir(root, sweep_id) / "stop"


class Driver:
    def __init__(self, spec: SweepSpec, root: Path, slot_envs: list[dict[str, str]], storage: str,
                 say: Callable[[str], None] = print, slurm=None):
        self.spec, self.root, self.slot_envs, self.url = spec, Path(root), slot_envs, storage
        self.say, self.slurm = say, slurm  # slurm: the trials' SlurmOptions, or None (local slots)
        self.study = st.load_study(spec, storage)
        self.active: dict[int, TrialRun] = {}
        self.stop_requested = threading.Event()
        self.detached = False
        self.last_beat = 0.0
        self.pidfile = drivers_dir(self.root, spec.sweep_id) / f"{socket.gethostname()}_{os.getpid()}.json"

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until no trial is left for this driver (0), or until stopped (130)."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.pidfile, {"pid": os.getpid(), "ticks": process_start_ticks(os.getpid()),
                                         "host": socket.gethostname(), "started": time.time()})
        stop_file(self.root, self.spec.sweep_id).unlink(missing_ok=True)  # an earlier stop, acted on
        if not other_drivers(self.root, self.spec.sweep_id, self.pidfile) and st.release_stale_lock(self.url):
            self.say("the study's lock was left by a driver that died; released")
        for note in st.recover(self.study, drivers_dir(self.root, self.spec.sweep_id)):
            self.say(note)
        self._write_summary()
        try:
            while True:
                self._follow()
                if stop_file(self.root, self.spec.sweep_id).exists() and not self.stop_requested.is_set():
                    self.say("stop requested (medic stop): stopping the sweep (its trials save a checkpoint)")
                    self.stop_requested.set()
                if self.stop_requested.is_set():
                    if self.detached:
                        return 143
                    self._stop_all()
                    return 130
                self._fill_slots()
                if not self.active:
                    break
                self.stop_requested.wait(POLL_SECONDS)
        finally:
            try:
                self.pidfile.unlink()
            except OSError:
                pass
        self._write_summary()
        return 0

    def _fill_slots(self) -> None:
        for slot in range(len(self.slot_envs)):
            if slot in self.active or self.stop_requested.is_set():
                continue
            if not self._work_left():
                return
            trial = self.study.ask()
            system_attrs = self.study._storage.get_trial(trial._trial_id).system_attrs
            fixed = system_attrs.get("fixed_params")
            if self.spec.grid and fixed is None:
                # another driver took the last queued point between our look and our ask
                trial.set_user_attr("unused", True)
                self.study.tell(trial, state=st._optuna().trial.TrialState.FAIL)
                return
            previous = self._retried_attrs(system_attrs)
            k = previous.get("k", trial.number)
            values = st.suggest(trial, self.spec)
            trial.set_user_attr("k", k)
            for key, value in st.driver_tag().items():
                trial.set_user_attr(key, value)
            if self.slurm is not None:
                from medic.sweeps.slurm_trial import SlurmTrialRun
                run: TrialRun = SlurmTrialRun(self.spec, self.root, trial, k, values, slot, {}, slurm=self.slurm)
            else:
                run = TrialRun(self.spec, self.root, trial, k, values, slot, self.slot_envs[slot])
            try:
                self.say(run.start(previous))
            except Exception as err:
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("message", str(err))
                self.study.tell(trial, state=st._optuna().trial.TrialState.FAIL)
                self.say(f"trial {k}: could not start: {err}")
                continue
            self.active[slot] = run

    def _retried_attrs(self, system_attrs: dict) -> dict:
        history = system_attrs.get("retry_history") or []
        if not history:
            return {}
        number = history[-1]  # the latest attempt: its run is the one to continue
        old = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number))
        return dict(old.user_attrs)

    def _work_left(self) -> bool:
        state = st._optuna().trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == state.WAITING for t in trials):
            return True
        if self.spec.grid:
            return False
        planned = [t for t in trials if "failed_trial" not in t.system_attrs and not t.user_attrs.get("unused")]
        return len(planned) < self.spec.trials

    def _follow(self) -> None:
        now = time.monotonic()
        beat = now - self.last_beat >= max(1.0, st.HEARTBEAT_SECONDS / 2)
        heartbeat = beat and st.has_heartbeat(self.study)
        if beat:
            self.last_beat = now
            from optuna.storages import fail_stale_trials
            fail_stale_trials(self.study)
            try:  # this driver's own heartbeat (what a storage without heartbeats is judged by)
                os.utime(self.pidfile)
            except OSError:
                pass
        for slot, run in list(self.active.items()):
            if heartbeat:
                self.study._storage.record_heartbeat(run.trial._trial_id)
            for epoch, value in run.new_values():
                run.trial.report(value, epoch)
                if not run.pruned and not run.stopping and run.trial.should_prune():
                    run.pruned = True
                    self.say(f"trial {run.k}: pruned at epoch {epoch} ({self.spec.monitor} {value:.6g}); stopping run {run.run_id}")
                    run.stop()
            if run.finished():
                run.new_values()
                self._finish(run)
                del self.active[slot]

    def _finish(self, run: TrialRun) -> None:
        if not pidfile_path(run.project, run.run_id).exists():  # its notebook never started the job
            release_run_id(run.project, run.run_id)
        state = st._optuna().trial.TrialState
        best, best_epoch = run.best()
        status = run.run_status()
        trial = run.trial
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("epochs_done", max(run.reported) if run.reported else 0)
        if run.pruned:
            outcome, verdict = "pruned", state.PRUNED
        elif status == "completed" and best is not None:
            outcome, verdict = "completed", state.COMPLETE
        elif run.stopping or status == "stopped":
            outcome, verdict = "stopped", state.FAIL
        else:
            outcome, verdict = "failed", state.FAIL
        trial.set_user_attr("status", outcome)
        self.study.tell(trial, best if verdict == state.COMPLETE else None, state=verdict)
        shown = f"best {self.spec.monitor} {best:.6g} at epoch {best_epoch}" if best is not None else "no epoch"
        self.say(f"trial {run.k}: {outcome} (run {run.run_id}, {shown})")
        self._write_summary()

    def _stop_all(self) -> None:
        if self.active:
            self.say(f"stopping {len(self.active)} trial(s) gracefully ...")
        threads = [run.stop() for run in self.active.values()]
        for thread in threads:
            thread.join(timeout=120)
        for run in list(self.active.values()):
            run.stopping = True
            self._finish(run)
        self.active.clear()
        self.say(f"sweep {self.spec.sweep_id} stopped; continue it with: medic sweep --resume {self.spec.sweep_id}")

    def _write_summary(self) -> None:
        from medic.sweeps.results import write_summary
        try:
            write_summary(self.root, self.spec, self.study)
        except Exception as err:  # the summary is a view: a failure to draw it never stops a sweep
            self.say(f"could not write the sweep summary: {err}")

    # -- signals ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            if self.stop_requested.is_set():
                return
            if signum == signal.SIGTERM and os.environ.get(DRIVER_JOB_ENV):
                # the driver's own SLURM job ends (requeue, preemption, scancel): its trials are
                # jobs of their own and go on; the requeued driver re-attaches to them
                self.say("SIGTERM: the driver's job ends; its trials go on (medic sweep --resume re-attaches)")
                self.detached = True
            else:
                self.say(f"{signal.Signals(signum).name}: stopping the sweep (its trials save a checkpoint)")
            self.stop_requested.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
