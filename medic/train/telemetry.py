"""Where an epoch's time goes: throughput, data wait, validation time and peak memory, recorded
without a host sync per step.

    Samples_Per_Second   global training samples / the training loop's time (the slowest rank),
                         validation and checkpoints left out
    Data_Seconds         the time the step loop waited for the DataLoader, max over ranks
    Val_Seconds          the epoch's validation (a column only when the run validates)
    Peak_Memory_MB       CUDA: peak allocated device memory, max over ranks, reset each epoch;
                         CPU: the largest rank's peak RSS so far (the OS keeps no per-epoch peak)

On CPU the data wait is two ``perf_counter`` calls around each ``next(loader)``. On CUDA the host
runs ahead of the device, so host waits say little about an idle GPU: a pair of CUDA events per
step (one when the previous step's work is queued, one when this step's batch is on the device)
gives the device's wait; the pairs are read once per log interval, and only those already
complete (``Event.query`` does not block), the rest at the epoch's end. The ranks' figures are
combined with one small collective per epoch, on the control group (gloo, host tensors).
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from medic.store import columns as C
from medic.store.columns import TELEMETRY_COLUMNS


def columns(validates: bool) -> list[str]:
    """The telemetry columns of a run, in their order (last in the epoch row)."""
    return [c for c in TELEMETRY_COLUMNS if validates or c != C.VAL_SECONDS]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class EpochTimer:
    """One rank's telemetry of one epoch. ``batches(loader)`` wraps the step loop's iterator;
    ``after_step()`` marks the end of each step's queued work; ``interval()`` reads the finished
    CUDA event pairs (at a log interval); ``finish(...)`` combines the ranks' figures."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.samples = 0
        self.wait_s = 0.0         # host wait (CPU) or summed device wait (CUDA), seconds
        self.loop_s = 0.0
        self.pending: list = []   # CUDA: (end of previous step, batch ready) event pairs, unread
        self.last_end = None      # CUDA: the event after the previous step's work
        self.start = time.perf_counter()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def batches(self, loader, start: int):
        """``enumerate(loader, start)``, timing each wait for the next batch."""
        t = time.perf_counter()
        it = iter(loader)  # with workers, starting them is waiting for data too
        b = start
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            if not self.cuda:
                self.wait_s += time.perf_counter() - t
            self.samples += len(batch[0])
            yield b, batch
            b += 1
            t = time.perf_counter()

    def batch_ready(self) -> None:
        """After the batch's copies to the device are queued (CUDA: the device's wait ends here)."""
        if self.cuda and self.last_end is not None:
            ready = torch.cuda.Event(enable_timing=True)
            ready.record()
            self.pending.append((self.last_end, ready))

    def after_step(self) -> None:
        if self.cuda:
            self.last_end = torch.cuda.Event(enable_timing=True)
            self.last_end.record()

    def interval(self) -> None:
        """Add the device waits whose events have completed (no blocking: ``query``)."""
        done = 0
        for begin, ready in self.pending:
            if not ready.query():
                break
            self.wait_s += begin.elapsed_time(ready) / 1000
            done += 1
        del self.pending[:done]

    def end_loop(self) -> None:
        """The step loop is over (its last reduction has been read, so the device is idle)."""
        self.loop_s = time.perf_counter() - self.start
        if self.cuda:
            for begin, ready in self.pending:
                ready.synchronize()
                self.wait_s += begin.elapsed_time(ready) / 1000
            self.pending.clear()

    def finish(self, group, val_s: float | None) -> dict[str, float]:
        """Every rank calls this (one collective): the epoch's telemetry columns."""
        memory = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else peak_rss_mb()
        mine = torch.tensor([float(self.samples), self.loop_s, self.wait_s, memory], dtype=torch.float64)
        if torch.distributed.is_initialized():
            parts = [torch.empty_like(mine) for _ in range(torch.distributed.get_world_size(group))]
            torch.distributed.all_gather(parts, mine, group=group)
            table = torch.stack(parts)
        else:
            table = mine[None]
        samples = float(table[:, 0].sum())
        loop_s = float(table[:, 1].max())
        row = {C.SAMPLES_PER_SECOND: samples / loop_s if loop_s > 0 else float("nan"),
               C.DATA_SECONDS: float(table[:, 2].max())}
        if val_s is not None:
            row[C.VAL_SECONDS] = val_s
        row[C.PEAK_MEMORY_MB] = float(table[:, 3].max())
        return row
