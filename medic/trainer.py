"""The training loop of one process (one rank). Read it top to bottom:

    setup      process group, device, run id and resume point agreed from rank 0
    data       dataset → train/val split → DistributedSampler → DataLoader
    model      UNet (or plug-in), Dice+CE loss, Adam (fused kernel), optional LR schedule, DDP
    resume     model/optimizer/scheduler/best/RNG from the checkpoint; CSV rows after it cut
    loop       for each epoch: train steps → (val) → epoch row → checkpoints → sidecar
               each step: forward, backward, step; its loss stays on the device
               each log interval: its per-step losses reduced without waiting, with the
               stop vote (StepSync, about every 0.25 s) → batch rows, a progress line
    finish     sidecar status completed / stopped / failed

Metrics are global (DESIGN.md): a batch's loss is the sample-weighted mean over ranks of that
step, Avg_Loss is the per-sample mean over all ranks, Min/Max are over the global batch losses.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from medic import checkpoint as ckpt
from medic import dist
from medic.config import TrainConfig
from medic.console import Console
from medic.data import build_dataset, split
from medic.errors import MedicError
from medic.logger import MetricsLogger
from medic.models import build_loss, build_model, build_optimizer, dice_per_sample
from medic.paths import Project
from medic.sidecar import now_str, update_sidecar, write_json_atomic


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"non-finite loss {value} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.value = epoch, batch, value


class StopFlag:
    """SIGINT/SIGTERM only set a flag; the loop agrees on it across ranks at a step boundary
    (``StepSync``). A third signal gives up on the graceful path. Under torchrun, the agent's
    death counts too.

    One stop can reach a worker several times within milliseconds (a scheduler signals every
    process of the job, and the launcher and torchrun's agent each pass the signal on), so
    signals less than ``BURST`` seconds after the last counted one count as the same request."""

    BURST = 1.0

    def __init__(self):
        self.requested = False
        self.signals = 0
        self._counted_at = -math.inf
        self._parent = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        now = time.monotonic()
        if now - self._counted_at >= self.BURST:
            self.signals += 1
            self._counted_at = now
        self.requested = True
        if self.signals >= 3:
            raise KeyboardInterrupt

    def local(self) -> bool:
        if self._parent is not None and os.getppid() != self._parent:
            self.requested = True
        return self.requested


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way (after a graceful mid-epoch stop)."""

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return super().__len__() - self.skip


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


def run(cfg: TrainConfig, decide) -> int:
    """Train on this rank. ``decide()`` runs on rank 0 once the process group exists and returns
    ``(config dict, run id, checkpoint path or None)`` or raises ``MedicError``; every rank gets
    its answer."""
    r = dist.ranks()
    stop = StopFlag()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.pick_device(cfg.device, r.local_rank)
    control = dist.init(r, device, cfg.dist_timeout)
    plan = None
    if r.is_main:
        try:
            plan = decide()
        except MedicError as err:
            plan = ("error", str(err), None)
    plan = dist.broadcast_object(plan)
    if plan[0] == "error":
        if r.is_main:
            print(f"medic: error: {plan[1]}", file=sys.stderr, flush=True)
        dist.shutdown()
        return 2
    cfg = TrainConfig.from_dict(plan[0], strict=False)
    run_id, resume_path = plan[1], plan[2]
    project = Project.at(cfg.output_dir or None)
    con = Console(cfg.lang, enabled=r.is_main)
    sidecar = project.sidecar(run_id)
    logger = None
    # only a process that (re)wrote the sidecar reports in it: a resume refused before it
    # started (a checkpoint that does not fit) leaves the run's record as it was
    owns_sidecar = False
    status, message, code = "failed", "", 1
    start_wall = time.time()
    try:
        # ---- resume point and data ------------------------------------------------------------
        state = ckpt.load(resume_path) if resume_path else None
        start_epoch = state["epoch"] + 1 if state else 1
        partial = state.get("partial") if state else None
        torch.manual_seed(cfg.seed)
        dataset = build_dataset(cfg)
        train_ds, val_ds = split(dataset, cfg.val_fraction, cfg.seed)
        sample_image = train_ds[0][0]
        sampler = ResumableSampler(train_ds, num_replicas=r.world_size, rank=r.rank, shuffle=True,
                                   seed=cfg.seed, drop_last=False)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=cfg.num_workers > 0)
        steps = len(loader)
        val_loader = None
        if val_ds is not None:  # unpadded shards: each validation sample counted exactly once
            shard = torch.utils.data.Subset(val_ds, list(range(r.rank, len(val_ds), r.world_size)))
            val_loader = DataLoader(shard, batch_size=cfg.batch_size, num_workers=cfg.num_workers)

        # ---- model, loss, optimizer -----------------------------------------------------------
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, in_channels=sample_image.shape[0]).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        loss_fn = build_loss()
        optimizer = build_optimizer(model, cfg)
        scheduler = make_scheduler(cfg, optimizer)
        best, best_epoch = None, 0
        if state:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as err:
                raise MedicError(f"checkpoint {resume_path} does not fit this model "
                                 f"({str(err).splitlines()[0][:160]})") from err
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            best, best_epoch = state.get("best"), state.get("best_epoch", 0)
            ckpt.set_rng_state(state.get("rng", {}))
        raw_model = model
        if r.distributed:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

        # ---- files (rank 0) -------------------------------------------------------------------
        extra = (["Val_Loss", "Val_Dice"] if val_loader is not None else []) + \
                (["Nonfinite_Batches"] if cfg.nonfinite == "skip" else [])
        if r.is_main:
            project.make_dirs()
            if state:  # a killed run may have left half-written checkpoint files behind
                ckpt.remove_stale_temporaries(project.checkpoint_dir(run_id))
            logger = MetricsLogger(project.root, run_id, log_batch_metrics=cfg.log_batch_metrics,
                                   extra_columns=extra, monitor_mode=cfg.monitor_mode,
                                   resume_epoch=state["epoch"] if state else None,
                                   resume_partial=(partial["epoch"], partial["batch"]) if partial else None,
                                   best_so_far=best, rank=0)
            con.open_log(project.log_file(run_id))
            write_sidecar_start(sidecar, cfg, run_id, r, steps, extra, state, resume_path)
            owns_sidecar = True
            con.startup(root=project.root, dirs={"ckpt_dir": project.checkpoint_dir(run_id),
                        "results_dir": project.results_dir(run_id), "log_dir": project.log,
                        "metrics_dir": project.metrics},
                        settings=settings_lines(cfg, r, device, len(train_ds), val_ds, steps, run_id),
                        log_interval=cfg.log_interval, log_batch=cfg.log_batch_metrics,
                        epoch_file=logger.epoch_path, batch_file=logger.batch_path)
            if state:
                con.say("resumed", id=run_id, path=resume_path, e=state["epoch"])

        # ---- the loop -------------------------------------------------------------------------
        epoch_times: list[float] = list(state.get("epoch_times", [])) if state else []
        done_epoch = start_epoch - 1
        stopped = False
        for epoch in range(start_epoch, cfg.epochs + 1):
            es = EpochState(**partial["state"]) if partial and partial["epoch"] == epoch else EpochState()
            first = len(es.losses)
            sampler.set_epoch(epoch)
            sampler.skip = first * cfg.batch_size
            t0 = time.perf_counter() - es.elapsed
            model.train()
            stopped = train_epoch(cfg, model, loader, loss_fn, optimizer, device, control, stop, es,
                                  epoch, first, steps, logger, con)
            if stopped:
                es.elapsed = time.perf_counter() - t0
                if r.is_main:
                    save_partial(project, run_id, cfg, raw_model, optimizer, scheduler, best, best_epoch,
                                 done_epoch, epoch_times, epoch, es)
                    con.say("stopped_mid", e=epoch, k=done_epoch, id=run_id)
                break
            metrics = {}
            if val_loader is not None:
                metrics.update(validate(raw_model, val_loader, loss_fn, device, cfg))
            seconds = time.perf_counter() - t0
            epoch_times.append(seconds)
            avg = es.loss_sum / es.count if es.count else float("nan")
            finite = [v for v in es.losses if math.isfinite(v)]
            lo, hi = (min(finite), max(finite)) if finite else (float("nan"), float("nan"))
            lr = es.lrs[0] if es.lrs else optimizer.param_groups[0]["lr"]
            if cfg.nonfinite == "skip":
                metrics["Nonfinite_Batches"] = es.skipped
            value = avg if cfg.monitor == "Avg_Loss" else metrics[cfg.monitor]
            previous = best
            is_best = is_improvement(value, best, cfg.monitor_mode)
            if is_best:
                best, best_epoch = value, epoch
            if r.is_main:
                logger.log_epoch(epoch, avg_loss=avg, min_batch_loss=lo, max_batch_loss=hi, learning_rate=lr,
                                 epoch_time=seconds, best_so_far=best if best is not None else float("nan"),
                                 is_best=is_best, **metrics)
                con.epoch_summary(epoch, cfg.epochs, avg, lo, hi, lr, seconds,
                                  eta_hours(epoch_times, cfg.epochs - epoch), metrics)
            if scheduler is not None:
                scheduler.step(value) if cfg.lr_scheduler == "plateau" else scheduler.step()
            done_epoch = epoch
            if r.is_main:
                save_epoch(project, run_id, cfg, raw_model, optimizer, scheduler, best, best_epoch, epoch,
                           epoch_times, is_best, previous, value, con)
                if is_best and val_loader is not None:
                    save_snapshot(project, run_id, raw_model, val_loader, device, epoch, cfg)
                update_sidecar(sidecar, epochs_done=epoch, best=best, best_epoch=best_epoch,
                               updated=now_str())
            if agree(stop.local(), control):
                stopped = True
                if r.is_main:
                    con.say("stopped", e=epoch, id=run_id)
                break
        status = "stopped" if stopped else "completed"
        code = 130 if stopped else 0
        if r.is_main and not stopped:
            con.say("finished", n=done_epoch, h=(time.time() - start_wall) / 3600,
                    metric=cfg.monitor, v=f"{best:.6f}" if best is not None else "-", be=best_epoch)
    except NonFiniteLoss as err:
        message = f"non-finite loss ({err.value}) at epoch {err.epoch}, batch {err.batch}"
        key = "nan_stop" if err.epoch > 1 else "nan_stop_none"  # nothing is saved before epoch 1 ends
        con.error(con.t[key].format(v=err.value, e=err.epoch, b=err.batch, k=err.epoch - 1))
        code = 3
    except MedicError as err:
        message = str(err)
        con.error(f"medic: error: {err}")
        code = 2
    except KeyboardInterrupt:
        status, message, code = "stopped", "interrupted", 130
    except BaseException as err:
        message = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        if r.distributed:
            lost_peer = "peer" in message.lower()  # a consequence of another rank's failure
            report_failure(r.rank, message, lost_peer)
            if not lost_peer:
                message += " (this or another process failed; see the log of each rank)"
        if owns_sidecar:
            update_sidecar(sidecar, status="failed", end_time=now_str(), message=message)
        raise
    finally:
        if logger is not None:
            logger.close()
        elif r.is_main and not resume_path:
            release_run_id(project, run_id)
        con.close()
    if owns_sidecar:
        update_sidecar(sidecar, status=status, end_time=now_str(), message=message,
                       total_time=round(time.time() - start_wall, 3))
    dist.shutdown()
    return code


def report_failure(rank: int, message: str, consequence: bool) -> None:
    """Leave this rank's error, with the time to the microsecond, where ``medic train``'s
    launcher looks for the error that started a failure: when one rank raises, the others
    fail a moment later only because their peer vanished, often within the same second, and
    torchrun's own record (whole seconds, ties to the lowest rank) then names a bystander."""
    from medic.train import FAILURE_DIR_ENV
    folder = os.environ.get(FAILURE_DIR_ENV)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        write_json_atomic(os.path.join(folder, f"rank{rank}.json"),
                          {"rank": rank, "time": time.time(), "message": message, "consequence": consequence})
    except OSError:
        pass  # the launcher falls back on torchrun's record


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


def train_epoch(cfg, model, loader, loss_fn, optimizer, device, control, stop, es: EpochState,
                epoch: int, first: int, steps: int, logger, con) -> bool:
    """Train one epoch (from batch ``first``). Returns True when a stop was agreed on."""
    r = dist.ranks()
    sums = torch.zeros(steps, device=device)    # per step: sum of this rank's sample losses
    counts = torch.zeros(steps, device=device)  # per step: this rank's samples
    pending = first
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    sync = StepSync(sums, counts, control, device,
                    lambda packed, windows: record_windows(packed, windows, es, epoch, steps, cfg, logger, con))
    for b, (images, masks) in enumerate(loader, start=first):
        if sync.poll(stop.local()):
            sync.close(pending, b, progress=False)
            sync.drain()
            return True
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = optimizer.param_groups[0]["lr"]
        es.lrs.append(lr)
        with amp:
            loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync.after_backward()
        if cfg.nonfinite == "skip" and agree(not torch.isfinite(loss).item(), control):
            # a non-finite loss on any rank poisons the averaged gradients on all: all skip
            # (this check is one host sync per step, paid only with --nonfinite skip)
            es.skipped += 1
            if r.is_main:
                con.error(con.t["nan_skip"].format(e=epoch, b=b))
        else:
            optimizer.step()
        n = images.shape[0]
        sums[b] = loss.detach().float() * n  # stays on the device: no sync here
        counts[b] = n
        if b % cfg.log_interval == 0 or b == steps - 1:
            sync.close(pending, b + 1, progress=b % cfg.log_interval == 0)
            pending = b + 1
    sync.drain()  # the epoch's last steps are recorded before its epoch row
    return False


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


@torch.no_grad()
def validate(model, loader, loss_fn, device, cfg) -> dict[str, float]:
    """Val_Loss (per-sample mean) and Val_Dice (mean foreground Dice) over all ranks' shards."""
    model.eval()
    acc = torch.zeros(3, device=device)  # loss sum, dice sum, samples
    for images, masks in loader:  # the bare module: shards differ in length, so no collectives here
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        n = images.shape[0]
        acc[0] += loss_fn(logits, masks).float() * n
        acc[1] += dice_per_sample(logits, masks, cfg.num_classes).sum()
        acc[2] += n
    loss_sum, dice_sum, n = dist.all_reduce_sum(acc).tolist()
    model.train()
    return {"Val_Loss": loss_sum / n, "Val_Dice": dice_sum / n}


def agree(flag: bool, group) -> bool:
    """True on every rank when it is True on any (one tiny collective on the control group)."""
    if not torch.distributed.is_initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)  # CPU: the control group is gloo
    return bool(dist.all_reduce_max(t, group=group).item())


def is_improvement(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    return value < best if mode == "min" else value > best


def eta_hours(epoch_times: list[float], remaining: int) -> float:
    """Remaining epochs × the mean of the recent epochs (the first, warm-up epoch left out once
    there are others)."""
    recent = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
    return remaining * (sum(recent[-5:]) / len(recent[-5:])) / 3600 if recent else 0.0


def make_scheduler(cfg: TrainConfig, optimizer):
    if cfg.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    if cfg.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=cfg.monitor_mode, factor=cfg.lr_gamma)
    return None


def checkpoint_state(run_id, cfg, model, optimizer, scheduler, best, best_epoch, epoch, epoch_times,
                     partial=None) -> dict:
    state = {"format": ckpt.FORMAT, "run_id": run_id, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "best": best, "best_epoch": best_epoch, "config": cfg.to_dict(), "rng": ckpt.rng_state(),
             "epoch_times": list(epoch_times), "world_size": dist.ranks().world_size}
    if partial is not None:
        state["partial"] = partial
    return state


def save_epoch(project, run_id, cfg, model, optimizer, scheduler, best, best_epoch, epoch, epoch_times,
               is_best, previous, value, con) -> None:
    """model_epoch_N (every save_interval), best_model (on improvement), then last.pth — last, so
    that when last.pth is intact nothing newer exists."""
    folder = project.checkpoint_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    data = ckpt.serialize(checkpoint_state(run_id, cfg, model, optimizer, scheduler, best, best_epoch,
                                           epoch, epoch_times))
    if epoch % cfg.save_interval == 0:
        ckpt.write_atomic(folder / f"model_epoch_{epoch}.pth", data)
        con.say("saved", name=f"model_epoch_{epoch}.pth")
    if is_best:
        con.new_best(cfg.monitor, value, previous)
        ckpt.write_atomic(folder / "best_model.pth", data)
        con.say("saved_best", name="best_model.pth")
    ckpt.write_atomic(folder / "last.pth", data)


def save_partial(project, run_id, cfg, model, optimizer, scheduler, best, best_epoch, done_epoch,
                 epoch_times, epoch, es: EpochState) -> None:
    """After a graceful stop mid-epoch: last.pth holds the exact position, so --resume continues
    with the next batch of the same epoch."""
    folder = project.checkpoint_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    partial = {"epoch": epoch, "batch": len(es.losses), "state": es.to_dict()}
    data = ckpt.serialize(checkpoint_state(run_id, cfg, model, optimizer, scheduler, best, best_epoch,
                                           done_epoch, epoch_times, partial))
    ckpt.write_atomic(folder / "last.pth", data)


@torch.no_grad()
def save_snapshot(project, run_id, model, val_loader, device, epoch, cfg) -> None:
    from medic.snapshots import save_predictions
    images, masks = next(iter(val_loader))
    images, masks = images[:4], masks[:4]
    was_training = model.training
    model.eval()
    preds = model(images.to(device)).argmax(dim=1).cpu()
    model.train(was_training)
    save_predictions(project.results_dir(run_id) / f"best_epoch_{epoch}.png", images[:, 0].float().numpy(),
                     masks[:, 0].numpy(), preds.numpy(), f"Run {run_id}, epoch {epoch} (new best)")


def settings_lines(cfg, r, device, n_train, val_ds, steps, run_id) -> list[tuple[str, object]]:
    data = cfg.data or (f"plug-in {cfg.dataset}" if cfg.dataset else
                        f"synthetic ({cfg.num_samples} samples, {cfg.image_size}x{cfg.image_size})")
    lines = [("Epochs", cfg.epochs), ("Batch Size (per GPU)", cfg.batch_size), ("Learning Rate", cfg.lr),
             ("LR Scheduler", cfg.lr_scheduler), ("Processes (world size)", r.world_size),
             ("Device", f"{device.type}" + (f" ({torch.distributed.get_backend()})" if r.distributed else "")),
             ("Model", cfg.model or "MONAI UNet (2D)"), ("Data", data),
             ("Training samples", n_train), ("Batches per epoch", steps)]
    if val_ds is not None:
        lines.append(("Validation samples", len(val_ds)))
    lines += [("Monitor", cfg.monitor), ("Checkpoint every", f"{cfg.save_interval} epochs"),
              ("Seed", cfg.seed), ("Run id", run_id)]
    return lines


def write_sidecar_start(path, cfg, run_id, r, steps, extra, state, resume_path) -> None:
    import monai
    from medic import __version__
    if state:
        update_sidecar(path, status="running", end_time=None, message="", config=cfg.to_dict(),
                       epochs=cfg.epochs, world_size=r.world_size, pid=os.getpid(),
                       resumed=(_read_list(path, "resumed") +
                                [{"time": now_str(), "from_epoch": state["epoch"], "checkpoint": str(resume_path)}]))
        return
    write_json_atomic(path, {
        "run_id": run_id, "status": "running", "start_time": now_str(), "end_time": None,
        "epochs": cfg.epochs, "epochs_done": 0, "batches_per_epoch": steps, "world_size": r.world_size,
        "monitor": cfg.monitor, "monitor_mode": cfg.monitor_mode, "extra_columns": extra,
        "log_batch_metrics": cfg.log_batch_metrics, "best": None, "best_epoch": None,
        "pid": os.getpid(), "agent_pid": os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None,
        "host": socket.gethostname(), "message": "", "config": cfg.to_dict(),
        "versions": {"medic": __version__, "torch": torch.__version__, "monai": monai.__version__,
                     "python": sys.version.split()[0]},
    })


def _read_list(path, key) -> list:
    from medic.sidecar import read_sidecar
    value = (read_sidecar(path) or {}).get(key)
    return value if isinstance(value, list) else []
