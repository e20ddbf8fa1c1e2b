"""Where a run's files live. One project root holds every run; all files of a run share its id.

    metrics/epoch_metrics_<id>.csv   metrics/batch_metrics_<id>.csv   metrics/run_<id>.json
    log/training_<id>.log            checkpoints/<id>/*.pth           results/<id>/
    analysis/...                     (written by medic analyze / compare)

Run ids are ``YYYYmmdd_HHMMSS`` (the start time); a second run started in the same second gets
``YYYYmmdd_HHMMSS_2``, ``_3``, ... The id is claimed by creating the run's sidecar exclusively,
already holding its first record (``status`` starting, the claiming pid, host and start time);
the CSVs appear later, each in one step with its header.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from medic.errors import RunNotFoundError
from medic.procs import hostname, pid_scope
from medic.store.stages import hold_at
from medic.store.files import create_exclusive
from medic.store.sidecar import now_str, read_sidecar, sweep_tags

RUN_ID_RE = re.compile(r"\d{8}_\d{6}(?:_\d+)?")
EPOCH_CSV_RE = re.compile(r"^epoch_metrics_(?P<id>\d{8}_\d{6}(?:_\d+)?)\.csv$")
BATCH_CSV_RE = re.compile(r"^batch_metrics_(?P<id>\d{8}_\d{6}(?:_\d+)?)\.csv$")
SIDECAR_RE = re.compile(r"^run_(?P<id>\d{8}_\d{6}(?:_\d+)?)\.json$")
OUTPUT_DIRS = ("metrics", "log", "checkpoints", "results", "analysis")
# the checkpoints a run can be resumed from (other .pth files, best_model.pth say, are not)
EPOCH_FILE_RE = re.compile(r"^model_epoch_(\d+)\.pth$")


@dataclass(frozen=True)
class Project:
    """The folders of one project root (the working directory or ``--output_dir``)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Project":
        return cls(Path(root if root is not None else os.getcwd()).resolve())

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    def epoch_csv(self, run_id: str) -> Path:
        return self.metrics / f"epoch_metrics_{run_id}.csv"

    def batch_csv(self, run_id: str) -> Path:
        return self.metrics / f"batch_metrics_{run_id}.csv"

    def sidecar(self, run_id: str) -> Path:
        return self.metrics / f"run_{run_id}.json"

    def heartbeat(self, run_id: str) -> Path:
        """Rank 0's heartbeat (``medic.store.control``)."""
        return self.metrics / f"run_{run_id}.heartbeat"

    def stop_request(self, run_id: str) -> Path:
        """A pending stop request (``medic.store.control``)."""
        return self.metrics / f"run_{run_id}.stop"

    def log_file(self, run_id: str) -> Path:
        return self.log / f"training_{run_id}.log"

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.checkpoints / run_id

    def results_dir(self, run_id: str) -> Path:
        return self.results / run_id

    def run_ids(self) -> list[str]:
        """Ids of every run with an epoch CSV or a sidecar, oldest first."""
        if not self.metrics.is_dir():
            return []
        ids = set()
        for name in os.listdir(self.metrics):
            m = EPOCH_CSV_RE.match(name) or SIDECAR_RE.match(name)
            if m:
                ids.add(m.group("id"))
        return sorted(ids, key=run_id_sort_key)

    def newest_resumable(self) -> str | None:
        """The newest run with a resume point (what ``--resume latest`` continues)."""
        ids = [i for i in reversed(self.run_ids()) if resume_points(self.checkpoint_dir(i))]
        return ids[0] if ids else None

    def make_dirs(self) -> None:
        for name in OUTPUT_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)


def resume_points(ckpt_dir: Path) -> list[Path]:
    """A run's resume points, best first: last.pth, then model_epoch_N newest first. The one rule
    for what a resume continues from, used by the trainer and by a launched job alike."""
    if not ckpt_dir.is_dir():
        return []
    found = [ckpt_dir / "last.pth"] if (ckpt_dir / "last.pth").is_file() else []
    epochs = sorted(((int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := EPOCH_FILE_RE.match(p.name))),
                    reverse=True)
    return found + [p for _, p in epochs]


def resumed_run_id(project: Project, spec: str) -> str:
    """The run a ``--resume`` continues, read without loading any checkpoint: ``latest`` (the
    newest run with a resume point, as the trainer decides), a run id, or a path naming one."""
    if spec == "latest":
        run_id = project.newest_resumable()
        if run_id is None:
            raise RunNotFoundError(f"--resume latest: no run with checkpoints in {project.checkpoints}")
        return run_id
    found = RUN_ID_RE.search(str(spec))
    if not found:
        raise RunNotFoundError(f"--resume {spec!r} is neither 'latest', a run id (YYYYmmdd_HHMMSS) nor a run's .pth file")
    return found.group(0)


def run_id_sort_key(run_id: str) -> tuple[str, int]:
    """Chronological order: the timestamp, then the same-second suffix (none sorts first)."""
    stamp, suffix = run_id[:15], run_id[16:]
    return stamp, int(suffix) if suffix else 1


def reserve_run_id(project: Project, now: float | None = None, pid: int | None = None) -> str:
    """Pick a fresh run id and claim it by creating its sidecar exclusively.

    The sidecar appears in one step with the claim (``status`` starting, ``pid`` — this process
    unless given —, ``host``, ``start_time`` and ``start_epoch``), so every reader lists the run
    from its first instant. Two runs started in the same second, even from two shells or two
    hosts sharing the folder, get distinct ids: the exclusive create is the lock. An id whose
    epoch CSV exists (a run written by another program) is skipped. Nothing existing is touched.
    """
    project.metrics.mkdir(parents=True, exist_ok=True)
    t = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(t))
    n = 1
    while True:
        run_id = stamp if n == 1 else f"{stamp}_{n}"
        n += 1
        if project.epoch_csv(run_id).exists():
            continue
        claim = {"run_id": run_id, "status": "starting", "claim": True, "pid": pid or os.getpid(),
                 "host": hostname(), "pid_scope": pid_scope(), "start_time": now_str(t),
                 "start_epoch": round(t, 3), "end_time": None, "message": "", **sweep_tags()}
        if create_exclusive(project.sidecar(run_id), json.dumps(claim, indent=2) + "\n"):
            hold_at("claimed")
            return run_id


def is_claim(sidecar: dict | None) -> bool:
    """A sidecar that holds only the claim: nothing of the run has been written yet."""
    return bool(sidecar) and bool(sidecar.get("claim")) and sidecar.get("status") == "starting"


def release_run_id(project: Project, run_id: str) -> None:
    """A new run that failed before writing anything (a plug-in that does not import, a model
    that cannot be built) gives back its id: the claim and its control files go, and bad input
    leaves no trace. A run that wrote more than its claim keeps everything."""
    if not is_claim(read_sidecar(project.sidecar(run_id))) or project.epoch_csv(run_id).exists():
        return
    for path in (project.sidecar(run_id), project.heartbeat(run_id), project.stop_request(run_id)):
        try:
            path.unlink()
        except OSError:
            pass
