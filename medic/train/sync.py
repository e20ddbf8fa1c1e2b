"""What the ranks agree on, and how: the stop vote (a rank's wish to stop is ``medic.train.stopping``),
the global losses of the log intervals, and the epoch's accumulated values.

Every rank joins every collective here; rank 0 alone writes what they produce.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from medic.train import dist


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"non-finite loss {value} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.value = epoch, batch, value


@dataclass
class EpochState:
    """What one epoch has accumulated so far (host floats, reduced over ranks)."""

    losses: list[float] = field(default_factory=list)   # global batch losses, in batch order
    lrs: list[float] = field(default_factory=list)
    loss_sum: float = 0.0                               # sum of per-sample losses (finite batches)
    count: float = 0.0
    skipped: int = 0
    elapsed: float = 0.0

    def to_dict(self) -> dict:
        return dict(losses=self.losses, lrs=self.lrs, loss_sum=self.loss_sum, count=self.count,
                    skipped=self.skipped, elapsed=self.elapsed)


class StepSync:
    """What the ranks agree on during an epoch, off the critical path: the stop flag, and the
    global losses of the finished log intervals.

    A *vote* is one all-reduce started without waiting and read at the next step, long finished
    by then. It carries this rank's stop flag and mean step time, and its result sets when the
    next vote starts: about every ``EVERY_S`` seconds of steps (every step when steps are slower
    than that). Every rank reads the same result at the same step and so computes the same
    schedule: all stop together, at a step boundary, at most about ``EVERY_S`` plus one step
    after the signal. On CPU, where the losses and the flag share the gloo group, the finished
    log intervals ride on the next vote (one collective for both); on CUDA each interval's
    losses are reduced on the device as soon as it ends (NCCL) and recorded during the next
    step, while the vote runs on a CPU gloo group (no host-device sync).

    Why: a blocking all-reduce per step (a rendezvous of the ranks) cost about 5% of the step
    time on a 2-core CPU machine, and even an asynchronous one per step 1-3%, its messages
    competing with the computation for the cores. Batch rows and progress lines so appear up
    to about ``EVERY_S`` late; the epoch's last interval is always recorded before its epoch
    row, and a stop records every step taken."""

    EVERY_S = 0.25

    def __init__(self, sums, counts, control, device, record):
        self.sums, self.counts, self.group, self.record = sums, counts, control, record
        self.distributed = torch.distributed.is_initialized()
        self.world = torch.distributed.get_world_size() if self.distributed else 1
        self.merged = self.distributed and control is None and device.type == "cpu"
        self.closed: list[tuple[int, int, bool]] = []  # finished log intervals, not yet reduced
        self.flight = None   # (work, tensor, intervals) of the vote in flight
        self.window = None   # (work, tensor, intervals) of a device reduction in flight (CUDA)
        self.steps = 0       # polls so far (one per step, the same count on every rank)
        self.due = 1         # the poll at which the next vote starts
        self.started = 0     # the poll at which the vote in flight started
        self.mark = None     # (perf_counter, polls) when the last vote started

    def packed(self, intervals) -> torch.Tensor:
        lo, hi = intervals[0][0], intervals[-1][1]
        return torch.cat([self.sums[lo:hi], self.counts[lo:hi]])

    def poll(self, flag: bool) -> bool:
        """At the start of each step: True on every rank once a stop has been agreed on."""
        if not self.distributed:
            return bool(flag)
        self.steps += 1
        agreed = False
        head = self.land()
        if head is not None:
            agreed = head[0] > 0
            step_s = head[1] / self.world  # the ranks' mean step time: the same on every rank
            self.due = self.started + (max(1, int(self.EVERY_S / step_s)) if step_s > 0 else 1)
        if not agreed and self.steps >= self.due:
            now = time.perf_counter()
            step_s = (now - self.mark[0]) / (self.steps - self.mark[1]) if self.mark else 0.0
            self.mark, self.started = (now, self.steps), self.steps
            t = torch.tensor([1.0 if flag else 0.0, step_s])
            intervals = []
            if self.merged and self.closed:
                intervals, self.closed = self.closed, []
                t = torch.cat([t, self.packed(intervals)])
            self.flight = (torch.distributed.all_reduce(t, group=self.group, async_op=True), t, intervals)
        return agreed

    def land(self) -> list[float] | None:
        """Complete the vote in flight, if any: record the intervals it carried and return its
        head (the summed stop flags and step times; a CPU tensor, so no device sync)."""
        if self.flight is None:
            return None
        work, t, intervals = self.flight
        self.flight = None
        work.wait()
        if intervals:
            self.record(t[2:], intervals)
        return t[:2].tolist()

    def close(self, start: int, end: int, progress: bool) -> None:
        """The log interval of steps [start, end) has ended."""
        if end <= start:
            return
        interval = [(start, end, progress)]
        if not self.distributed:
            self.record(self.packed(interval), interval)
        elif self.merged:
            self.closed += interval
        else:
            self.after_backward()
            t = self.packed(interval)
            self.window = (torch.distributed.all_reduce(t, async_op=True), t, interval)

    def after_backward(self) -> None:
        """Record a device reduction started a step earlier (finished by now: no wait)."""
        if self.window is not None:
            work, t, intervals = self.window
            self.window = None
            work.wait()
            self.record(t, intervals)

    def drain(self) -> None:
        """At the end of the epoch or on a stop, on every rank: record every ended interval, in
        order (the vote in flight is completed; its answer is left to the caller)."""
        self.land()
        self.after_backward()
        if self.closed:
            intervals, self.closed = self.closed, []
            self.record(dist.all_reduce_sum(self.packed(intervals)), intervals)


def record_windows(packed: torch.Tensor, intervals: list[tuple[int, int, bool]], es: EpochState, epoch: int,
                   steps: int, cfg, logger, con) -> None:
    """Record consecutive log intervals from their reduced losses ``packed`` (the per-step loss
    sums, then the per-step sample counts): batch rows, progress lines, epoch sums. Reading
    ``packed`` is the one host sync per log interval."""
    values = packed.tolist()
    lo, hi = intervals[0][0], intervals[-1][1]
    w = hi - lo
    for start, end, progress in intervals:
        for i in range(start, end):
            s, c = values[i - lo], values[w + i - lo]
            loss = s / c if c else float("nan")
            es.losses.append(loss)
            if math.isfinite(loss):
                es.loss_sum += s
                es.count += c
            elif cfg.nonfinite == "stop":
                if logger is not None:
                    logger.log_batches(epoch, start, es.losses[start:i + 1], es.lrs[start:i + 1])
                raise NonFiniteLoss(epoch, i, loss)
        if logger is not None:
            logger.log_batches(epoch, start, es.losses[start:end], es.lrs[start:end])
            if progress:
                con.progress(epoch, cfg.epochs, end - 1, steps, es.losses[end - 1], es.lrs[end - 1])


def agree(flag: bool, group) -> bool:
    """True on every rank when it is True on any (one tiny collective on the control group)."""
    if not torch.distributed.is_initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)  # CPU: the control group is gloo
    return bool(dist.all_reduce_max(t, group=group).item())
