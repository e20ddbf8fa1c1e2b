"""The sweep's Optuna study: durable storage (SQLite or Optuna's journal file under
``analysis/sweeps/<id>/``, or a shared database URL), the sampler, the pruner, the grid queue, heartbeats and the retry of trials whose
driver died. Optuna is imported here only, and only when a sweep runs or is read."""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from medic.errors import MedicError
from medic.procs import pid_alive, process_start_ticks

# seconds between a running trial's heartbeats; a trial silent for GRACE_FACTOR times that is failed
# (and retried) by any driver of the sweep
HEARTBEAT_SECONDS = max(1, int(os.environ.get("MEDIC_SWEEP_HEARTBEAT", "10")))
GRACE_FACTOR = 3
# a driver of another host, judged by its file's age on a shared file system: NFS may show a
# change that much later (attribute caching, acregmax 60 s by default)
FILE_GRACE_SECONDS = max(120, GRACE_FACTOR * HEARTBEAT_SECONDS)
SPEC_ATTR = "medic_sweep_spec"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MedicError("medic sweep needs Optuna: pip install 'medic[sweep]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # trials here are asked and told by the driver, which heartbeats them itself
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def journal_path(url: str) -> str:
    """The file of a ``journal://PATH`` (or ``journal:PATH``) storage URL."""
    return url.removeprefix("journal://") if url.startswith("journal://") else url.removeprefix("journal:")


def open_storage(url: str):
    """The storage at ``url``: a database URL (``sqlite:///path``, ``postgresql://...``), or
    ``journal://PATH``, Optuna's journal file with its lock (for a folder on a shared file system)."""
    _optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
        path = journal_path(url)
        try:  # the symlink lock: atomic on NFS too, where an open(O_EXCL) lock may not be
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path)))
        except Exception as err:
            raise MedicError(f"cannot open the sweep storage {url!r}: {str(err).splitlines()[0]}") from None
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=GRACE_FACTOR * HEARTBEAT_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    except Exception as err:  # a bad URL, a missing driver, an unreachable server
        raise MedicError(f"cannot open the sweep storage {url!r}: {str(err).splitlines()[0]}") from None


def build_sampler(spec, offset: int = 0):
    """The seeded sampler; ``offset`` (the trials already made) keeps a driver that joins a sweep
    from drawing the same points as the first one, which started from the seed itself."""
    optuna = _optuna()
    seed = spec.seed + offset
    if spec.sampler == "random" or spec.grid:  # grid points are all queued: the sampler never picks
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def build_pruner(spec):
    pruners = _optuna().pruners
    startup = spec.prune_startup
    return {"none": lambda: pruners.NopPruner(),
            "median": lambda: pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0),
            "percentile": lambda: pruners.PercentilePruner(25.0, n_startup_trials=startup),
            "hyperband": lambda: pruners.HyperbandPruner(min_resource=1),
            "successivehalving": lambda: pruners.SuccessiveHalvingPruner(min_resource=1)}[spec.prune]()


def create_study(spec, url: str, points: list[dict[str, Any]]):
    """A new study for ``spec``; the grid ``points`` are queued once, here."""
    optuna = _optuna()
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name=spec.sweep_id, storage=storage, direction=spec.direction,
                                    sampler=build_sampler(spec), pruner=build_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:
        raise MedicError(f"sweep {spec.sweep_id} already exists in {url}; use --resume {spec.sweep_id}") from None
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    for point in points:
        study.enqueue_trial(point, skip_if_exists=False)
    return study


def load_study(spec, url: str):
    optuna = _optuna()
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=spec.sweep_id, storage=storage, pruner=build_pruner(spec))
    except KeyError:
        raise MedicError(f"no sweep {spec.sweep_id} in the storage {url}") from None
    made = len([t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"])
    study.sampler = build_sampler(spec, made)
    return study


def stored_spec(url: str, sweep_id: str) -> dict[str, Any] | None:
    optuna = _optuna()
    try:
        study = optuna.load_study(study_name=sweep_id, storage=open_storage(url))
    except KeyError:
        return None
    spec = study.user_attrs.get(SPEC_ATTR)
    return spec if isinstance(spec, dict) else None


def suggest(trial, spec) -> dict[str, Any]:
    """The trial's values: its queued point (grid, retry), else the sampler's choice."""
    values = {}
    if spec.grid:
        for key, choices in spec.grid.items():
            values[key] = trial.suggest_categorical(key, choices)
        return values
    for key, dist in spec.space.items():
        kind, args = dist["kind"], dist["args"]
        if kind == "choice":
            values[key] = trial.suggest_categorical(key, args)
        elif kind in ("int", "logint"):
            values[key] = trial.suggest_int(key, int(args[0]), int(args[1]), log=kind == "logint")
        else:
            values[key] = trial.suggest_float(key, float(args[0]), float(args[1]), log=kind == "loguniform")
    return values


def driver_tag() -> dict[str, Any]:
    """Who runs a trial: this host and driver process (for telling a dead driver's trials)."""
    return {"host": socket.gethostname(), "driver_pid": os.getpid(),
            "driver_ticks": process_start_ticks(os.getpid())}


def release_stale_lock(url: str) -> bool:
    """Remove the journal file's lock when no other driver of the sweep is alive (the caller
    knows): a driver killed while appending leaves it behind, and Optuna would wait out its grace
    period (30 s) at every start. An append holds the lock for milliseconds."""
    if not url.startswith("journal:"):
        return False
    path = Path(journal_path(url) + ".lock")
    try:
        if time.time() - path.lstat().st_mtime > 2:
            path.unlink()
            return True
    except OSError:
        pass
    return False


def has_heartbeat(study) -> bool:
    """Whether the storage keeps Optuna's trial heartbeats (a database does; the journal file does
    not: there, each driver's file in the sweep folder is its heartbeat)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled
    return is_heartbeat_enabled(study._storage)


def driver_dead(attrs: dict[str, Any], drivers: Path | None = None) -> bool:
    """True when the trial's driver ran on this host and is gone (its heartbeat need not lapse),
    or, with ``drivers`` (the sweep's folder of driver files, for a storage without heartbeats),
    when the driver of another host has left no file, or not renewed it for ``FILE_GRACE_SECONDS``."""
    if not isinstance(attrs.get("driver_pid"), int):
        return False
    if attrs.get("host") == socket.gethostname():
        return not pid_alive(attrs["driver_pid"], start_ticks=attrs.get("driver_ticks"))
    if drivers is None:
        return False
    try:
        beat = (drivers / f"{attrs.get('host')}_{attrs['driver_pid']}.json").stat().st_mtime
    except OSError:
        return True
    return time.time() - beat > FILE_GRACE_SECONDS


def retried_numbers(trials) -> set[int]:
    done: set[int] = set()
    for t in trials:
        done.update(t.system_attrs.get("retry_history", []))
    return done


def recover(study, drivers: Path | None = None) -> list[str]:
    """Fail the running trials of dead drivers on this host and the stale ones anywhere (Optuna's
    heartbeat check); queue a retry of each, and of each trial that was stopped. Returns notes."""
    optuna = _optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
    state = optuna.trial.TrialState
    storage = study._storage
    notes = []
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        if driver_dead(t.user_attrs, None if has_heartbeat(study) else drivers):
            try:
                if storage.set_trial_state_values(t._trial_id, state=state.FAIL):
                    RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(t._trial_id))
                    notes.append(f"trial {t.user_attrs.get('k', t.number)}: its driver died; taken over")
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        if t.state == state.FAIL and t.user_attrs.get("status") == "stopped" and t.number not in retried:
            RetryHeartbeatStaleTrialCallback()(study, t)
            notes.append(f"trial {t.user_attrs.get('k', t.number)}: was stopped; queued to continue")
    return notes
