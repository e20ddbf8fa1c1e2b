"""A new best epoch's files, in an order a reader can trust. Each process writes the masks of its
own validation cases, then says so in a small file of its own; rank 0 draws the picture, waits
(in its writer thread: no process ever waits for another's writing at a collective) until every
process's masks of that epoch are on disk, writes ``best_masks.json``, and only then
``best_model.pth``. So best_model.pth is never newer than ``best_masks/``: whoever compares them
(``medic predict --checkpoint best``, ``medic evaluate``) sees one epoch, and the run's end
(its status in the sidecar) comes after every process's masks.

    results/<id>/best_masks/<case>.nii.gz     the masks (each process its shard's)
    results/<id>/.ranks/best_masks_<r>.json   process r: its masks on disk are of this epoch
    results/<id>/best_masks.json              {"epoch", "cases"}: every process's, written just
                                              before best_model.pth

Without masks (2D images, no validation) best_model.pth is written by the training thread as
every other checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from medic.store.files import write_json_atomic
from medic.train.outputs.gate import pause

# test hook: seconds a process sleeps before writing its best masks (a slow disk, on purpose):
# "S" for rank 0, "S0,S1,..." per rank
SLOW_WRITE_ENV = "MEDIC_TEST_SLOW_WRITE"
MANIFEST = "best_masks.json"
BEST_MODEL = "best_model.pth"


def rank_file(results: Path, rank: int) -> Path:
    """Where process ``rank`` records the epoch of its masks on disk."""
    return results / ".ranks" / f"best_masks_{rank}.json"


def forget_own(results: Path, rank: int) -> None:
    """At a process's start: a record of an earlier process (a run resumed from an older epoch)
    must not vouch for masks this one has not written."""
    rank_file(results, rank).unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet (or, between two atomic writes, never half of one)


def _slow_write(rank: int) -> float:
    raw = os.environ.get(SLOW_WRITE_ENV, "").split(",")
    try:
        return max(0.0, float(raw[rank])) if rank < len(raw) and raw[rank].strip() else 0.0
    except ValueError:
        return 0.0


@dataclass
class BestFiles:
    """One best epoch's files on one process, as one writer job (keyed ``best``: a newer best
    epoch replaces it while it waits in the queue, masks, picture and checkpoint together)."""

    results: Path
    rank: int
    world_size: int
    epoch: int
    masks: Callable[[], list[str]] | None   # writes this process's masks; returns their cases
    picture: Callable[[], None] | None      # rank 0
    checkpoint: Callable[[], None] | None   # rank 0: writes best_model.pth
    ended: threading.Event = field(default_factory=threading.Event)  # the run failed: wait no more
    warn: Callable[[str], None] = print
    timeout: float = 600.0

    def __call__(self) -> None:
        time.sleep(_slow_write(self.rank))
        cases = self.masks() if self.masks is not None else []
        (self.results / ".ranks").mkdir(parents=True, exist_ok=True)
        write_json_atomic(rank_file(self.results, self.rank), {"epoch": self.epoch, "cases": cases})
        if self.picture is not None:
            pause()
            self.picture()
        if self.checkpoint is None:
            return
        found = self.wait()
        if found is None:
            return
        if all(r["epoch"] == self.epoch for r in found):  # else a newer best is on its way
            write_json_atomic(self.results / MANIFEST,
                              {"epoch": self.epoch, "cases": sorted({c for r in found for c in r["cases"]})})
            self.checkpoint()

    def wait(self) -> list[dict] | None:
        """Every process's record, once each says its masks are of this epoch or a later one;
        None (with a warning: best_model.pth stays as it was) after ``timeout`` or a failed run."""
        deadline = time.monotonic() + self.timeout
        pause = 0.02
        while True:
            found = [_read(rank_file(self.results, r)) for r in range(self.world_size)]
            missing = [r for r, f in enumerate(found) if not f or f.get("epoch", 0) < self.epoch]
            if not missing:
                return found
            if self.ended.is_set() or time.monotonic() > deadline:
                why = "the run ended" if self.ended.is_set() else f"{self.timeout:.0f} s passed"
                self.warn(f"medic: warning: {BEST_MODEL} was not updated to epoch {self.epoch}: {why} before "
                          f"process(es) {', '.join(map(str, missing))} had written their best masks of it")
                return None
            time.sleep(pause)
            pause = min(0.5, pause * 1.5)


def best_jobs(kept, data, cfg, results: Path, run_id: str, epoch: int, saves: list, r, ended: threading.Event,
              warn: Callable[[str], None]) -> tuple[list, list]:
    """A new best epoch's outputs from its validation's predictions (``kept``): this process's
    masks (volumes), the picture (rank 0, which keeps its rows), titled with the run and drawn
    with the data set's label names. Returns (the masks writer's jobs, the training thread's
    checkpoint jobs): with volumes, ``best_model.pth`` moves from ``saves`` into the best job.

    Args:
        kept: the validation's ``Predictions`` of this process's shard.
        data: the run's data (``data.volumes`` is None for 2D images).
        cfg: the run's ``TrainConfig``.
        results: the run's results folder.
        run_id: the run's id, for the picture's title.
        epoch: the new best epoch.
        saves: rank 0's checkpoint jobs of the epoch as ``(job, key)`` (empty on other ranks).
        r: this process's ranks (``medic.train.dist.Ranks``).
        ended: set when the run failed: rank 0 then waits for no other process.
        warn: prints a warning line (rank 0's console).
    """
    from medic.train.outputs.pictures import label_names, orientation, save_best_picture, write_best_masks
    volumes = data.volumes
    picture = None
    if kept.rows:
        title = f"Run {run_id}, epoch {epoch} (new best): validation cases"
        if volumes is not None:
            how = (volumes.layout.label_names, cfg.num_classes, title + ", the slice of most foreground",
                   orientation(cfg))
        else:
            how = (label_names(data, cfg), cfg.num_classes, title)
        picture = partial(save_best_picture, results, epoch, kept.rows, *how)
    if volumes is None:
        return ([(picture, None)] if picture else []), saves
    checkpoint = next((job for job, key in saves if key == BEST_MODEL), None)
    masks = partial(write_best_masks, results, kept.cases, volumes.pre, volumes.val.records)
    job = BestFiles(results, r.rank, r.world_size, epoch, masks, picture, checkpoint, ended, warn,
                    timeout=max(600.0, 2.0 * cfg.dist_timeout))
    return [(job, "best")], [(j, key) for j, key in saves if key != BEST_MODEL]
