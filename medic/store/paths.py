"""Where a run's files live. One project root holds every run; all files of a run share its id.

    metrics/epoch_metrics_<id>.csv   metrics/batch_metrics_<id>.csv   metrics/run_<id>.json
    log/training_<id>.log            checkpoints/<id>/*.pth           results/<id>/
    analysis/...                     (written by medic analyze / compare)

Run ids are ``YYYYmmdd_HHMMSS`` (the start time); a second run started in the same second gets
``YYYYmmdd_HHMMSS_2``, ``_3``, ... The id is reserved by creating the epoch CSV exclusively.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from medic.errors import RunNotFoundError

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


def reserve_run_id(project: Project, now: float | None = None) -> str:
    """Pick a fresh run id and claim it by creating its (empty) epoch CSV exclusively.

    Two runs started in the same second, even from two shells, get distinct ids: the exclusive
    create is the lock. Nothing existing is touched.
    """
    project.metrics.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now if now is not None else time.time()))
    n = 1
    while True:
        run_id = stamp if n == 1 else f"{stamp}_{n}"
        try:
            fd = os.open(project.epoch_csv(run_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        if project.sidecar(run_id).exists():  # a run whose CSV was deleted by hand keeps its id
            os.unlink(project.epoch_csv(run_id))
            n += 1
            continue
        return run_id


def release_run_id(project: Project, run_id: str) -> None:
    """A new run that failed before writing anything (a plug-in that does not import, a model
    that cannot be built) gives back the empty epoch CSV that reserved its id: bad input leaves
    no trace."""
    path = project.epoch_csv(run_id)
    try:
        if path.stat().st_size == 0 and not project.sidecar(run_id).exists():
            path.unlink()
    except OSError:
        pass
