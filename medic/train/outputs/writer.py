"""An epoch's outputs, written behind the training: the best epoch's masks and picture from the
predictions the validation has just made, case tables and strips. (Checkpoints are written by the
training thread right after the epoch row, so that a process killed in the next epoch resumes
from them.)

    Writer        a background thread that runs jobs in the order given. A job submitted with a
                  key replaces a queued (not yet started) job of the same key: a newer set of best
                  masks or sidecar progress makes the older one pointless, so a slow
                  disk never lets the queue (or its memory) grow with the epochs. Each process
                  has two: rank 0's case tables, strips and sidecar progress; and its best
                  epoch's files (``medic.train.outputs.best``: masks, picture, best_model.pth).
                  Both are waited for only at a stop and at the end, where no other process
                  waits for this one at a collective. They work while the model validates and
                  between epochs, not during the training steps (``medic.train.outputs.gate``).
    Predictions   what one validation keeps of its own shard for those outputs: per case its
                  predicted classes as bytes (uint8) with the metadata that maps them back onto
                  the case's grid and affine; on rank 0 the picture's first cases, by name, as
                  ``medic.train.outputs.overlay`` shows them (the strip's plane and colours).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from medic.train.outputs.best import forget_own
from medic.train.outputs.gate import Gate, pause, paused, serve
from medic.train.outputs.overlay import Shown, shown

Job = tuple  # (a function of no arguments, its key or None)


class Writer:
    """A background thread that runs write jobs in order (keyed jobs replace their queued
    namesake). A job's exception is raised again by the next ``submit`` or ``join``. With a
    ``gate``, each job (and each step of one, ``pause``) waits at it."""

    def __init__(self, gate: Gate | None = None):
        self.gate = gate
        self.worked_s = 0.0  # seconds spent in jobs, waits at the gate left out
        self._jobs: deque[tuple[str | None, Callable[[], None]]] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None], key: str | None = None) -> None:
        """Queue ``job``; with ``key``, in place of a queued job of the same key."""
        with self._cv:
            self._raise()
            for i, (k, _) in enumerate(self._jobs):
                if key is not None and k == key:
                    self._jobs[i] = (key, job)
                    return
            self._jobs.append((key, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="medic-writer", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def join(self) -> None:
        """Wait until every queued job has run; raise the first job error."""
        with self._cv:
            while self._jobs or self._busy:
                self._cv.wait()
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _run(self) -> None:
        # one thread of torch's own here: a second team of OpenMP threads, even idle, makes every
        # team's waits yield the CPU sooner (more threads than cores), and the training thread's
        # steps then take a third longer on a CPU; the writer's few tensor operations need none
        torch.set_num_threads(1)
        serve(self.gate)
        while True:
            with self._cv:
                while not self._jobs:
                    self._cv.wait()
            pause()
            with self._cv:
                _, job = self._jobs.popleft()
                self._busy = True
            t0, waited = time.perf_counter(), paused()
            try:
                job()
            except BaseException as err:  # handed to the training thread
                with self._cv:
                    self._error = self._error or err
            finally:
                with self._cv:
                    self.worked_s += time.perf_counter() - t0 - (paused() - waited)
                    self._busy = False
                    self._cv.notify_all()


def join_all(*writers: Writer) -> None:
    """Wait for every writer (each raises its first job error)."""
    for writer in writers:
        writer.join()


class Outputs:
    """A process's two writers: ``files`` (rank 0's case tables, strips and sidecar progress) and
    ``masks`` (its best epoch's files); ``ended`` tells a job waiting for other processes that
    the run failed.

    Args:
        results: the run's results folder.
        rank: this process's rank.
    """

    def __init__(self, results: Path, rank: int):
        self.gate = Gate()  # closed while the training loop runs
        self.files, self.masks = Writer(self.gate), Writer(self.gate)
        self.before_s = 0.0  # a resumed run's seconds of background outputs before this process
        self.ended = threading.Event()
        forget_own(results, rank)  # before the first epoch: rank 0 looks only after one

    def busy_s(self) -> float:
        """The seconds both writers have worked so far, with ``before_s`` (a resumed run's)."""
        return self.before_s + self.files.worked_s + self.masks.worked_s

    def submit(self, files: list[Job], masks: list[Job]) -> None:
        """Queue an epoch's jobs, each on its writer."""
        for writer, jobs in ((self.files, files), (self.masks, masks)):
            for job, key in jobs:
                writer.submit(job, key)

    def join(self, ended: bool = False) -> None:
        """Wait for both writers (the first job error is raised); ``ended``: the run failed, so
        no job waits for other processes any more."""
        if ended:
            self.ended.set()
        self.gate.open()
        join_all(self.files, self.masks)


@dataclass
class Predictions:
    """One validation's predictions of this process's shard, kept for the best epoch's outputs."""

    pictures: int = 0                                        # picture rows to keep (rank 0: 4)
    cases: list[tuple[dict, torch.Tensor]] = field(default_factory=list)  # (case info, uint8 classes)
    rows: list[Shown] = field(default_factory=list)          # the picture's cases, as drawn

    def __call__(self, infos, images: torch.Tensor, masks: torch.Tensor, pred: torch.Tensor,
                 names: list[str]) -> None:
        """Keep a validation batch's predictions (``pred``: N×1×spatial class indices; ``names``:
        the batch's case names)."""
        classes = pred[:, 0].to(torch.uint8).cpu()
        for i in range(classes.shape[0]):
            if infos is not None:
                self.cases.append((infos[i], classes[i]))
            if len(self.rows) < self.pictures:
                self.rows.append(shown(names[i], images[i, 0].float().cpu().numpy(), masks[i, 0].cpu().numpy(),
                                       classes[i].numpy()))


def case_jobs(results: Path, run_id: str, epoch: int, best_epoch: int, val, data, cfg, names: list[str]) -> list[Job]:
    """Rank 0: the validation's case table (rows by case name; the best's and the last's kept)
    and its strip."""
    from medic.train.outputs.casefiles import prune_case_tables, write_case_table
    from medic.train.outputs.pictures import save_validation_strip

    def write() -> None:
        write_case_table(results, epoch, val.cases, names)
        prune_case_tables(results, {epoch, best_epoch})
        pause()
        save_validation_strip(results, run_id, epoch, val, data, cfg)
    return [(write, None)]


def rank0_jobs(results: Path, run_id: str, epoch: int, ts, val, data, cfg, sidecar: Path,
               background_s: float = 0.0) -> list[Job]:
    """Rank 0's epoch outputs: the case table and strip of a validated epoch, then the sidecar's
    progress (keyed: a newer one replaces a queued older one), with the seconds its writers have
    worked so far (``background_output_s``)."""
    from medic.store.sidecar import now_str, update_sidecar
    from medic.train.metrics import class_names
    jobs = case_jobs(results, run_id, epoch, ts.best_epoch, val, data, cfg,
                     class_names(data.train_ds, cfg.num_classes)) if val is not None else []
    jobs.append((partial(update_sidecar, sidecar, epochs_done=epoch, best=ts.best, best_epoch=ts.best_epoch,
                         updated=now_str(), background_output_s=round(background_s, 3)), "sidecar"))
    return jobs
