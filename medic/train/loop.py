"""The training of one process (one rank). ``run`` reads top to bottom:

    setup      process group, device; run id and resume point decided on rank 0, shared
    data       dataset → train/val split → DistributedSampler → DataLoader
    model      UNet (or plug-in), Dice+CE loss, Adam (fused kernel), optional LR schedule, DDP
    resume     model/optimizer/scheduler/best/RNG from the checkpoint; CSV rows after it cut
    files      (rank 0) the CSVs, the log, the sidecar, the startup block
    epochs     for each epoch: train steps → (val) → epoch row → checkpoints → sidecar
               each step: forward, backward, step; its loss stays on the device
               each log interval: its per-step losses reduced without waiting, with the
               stop vote (``sync.StepSync``, about every 0.25 s) → batch rows, a progress line
    finish     sidecar status completed / stopped / failed (a requeue: ``RankRun.requeue``)

Metrics are global (docs/reference/files.md, "Metrics are global"): a batch's loss is the sample-weighted mean over ranks of that
step, Avg_Loss is the per-sample mean over all ranks, Min/Max are over the global batch losses.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from medic.config import TrainConfig
from medic.errors import MedicError
from medic.store import columns as C
from medic.store.control import clear_stop_request
from medic.store.logger import MetricsLogger, improves
from medic.store.paths import Project, release_run_id
from medic.store.sidecar import now_str, update_sidecar
from medic.store.stages import hold_at
from medic.train import dist
from medic.train.console import Console, eta_hours, settings_lines
from medic.train.data import monai_loader as imports
from medic.train.data.caseinfo import split_record
from medic.train.data.sets import Data, loader_message
from medic.train.launch.torchrun import report_failure
from medic.train.metrics import class_names
from medic.train.models import build_loss
from medic.train.outputs import checkpoint as ckpt
from medic.train.outputs.pictures import PICTURE_CASES
from medic.train.outputs.save import Saver, TrainState, build_state
from medic.train.outputs.best import best_jobs
from medic.train.outputs.writer import Outputs, Predictions, rank0_jobs
from medic.train.selection import Selector, check_monitor, selected_name, validation_columns
from medic.train.sliding import predictor
from medic.train.stopping import StopFlag
from medic.train.sync import EpochState, NonFiniteLoss, StepSync, agree, record_windows
from medic.train.telemetry import EpochTimer, columns as telemetry_columns
from medic.train.validation import Validation, validate


def run(cfg: TrainConfig, decide) -> int:
    """Train on this rank. ``decide()`` runs on rank 0 once the process group exists and returns
    ``(config dict, run id, checkpoint path or None)`` or raises ``MedicError``; every rank gets
    its answer. Returns the exit code."""
    r = dist.ranks()
    stop = StopFlag()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.pick_device(cfg.device, r.local_rank)
    monai = imports.load(cfg)  # in a thread, while the ranks meet
    control = dist.init(r, device, cfg.dist_timeout)
    hold_at("rendezvous")
    plan = agree_on_plan(decide, r)
    monai.join()
    if plan is None:
        dist.shutdown()
        return 2
    cfg, run_id, resume_path = plan
    code = RankRun(cfg, run_id, resume_path, r, device, control, stop).train()
    dist.shutdown()
    return code


def agree_on_plan(decide, r: dist.Ranks) -> tuple[TrainConfig, str, str | None] | None:
    """Rank 0 decides the config, run id and resume point; every rank gets the answer. None
    (the error printed once) when the input is refused."""
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
        return None
    return TrainConfig.from_dict(plan[0], strict=False), plan[1], plan[2]


@dataclass
class Step:
    """What each training step needs, fixed for the run."""

    cfg: TrainConfig
    model: torch.nn.Module            # the DDP wrapper when distributed
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    control: object                   # the gloo group of the stop vote on CUDA, else None
    stop: StopFlag
    logger: MetricsLogger | None      # rank 0 only
    con: Console


class RankRun:
    """One rank's run: ``train`` is the whole of it, in named steps; the failure paths record
    the outcome in the sidecar (rank 0) and leave no half-reserved run behind."""

    def __init__(self, cfg: TrainConfig, run_id: str, resume_path: str | None, r: dist.Ranks,
                 device: torch.device, control, stop: StopFlag):
        self.cfg, self.run_id, self.resume_path, self.r = cfg, run_id, resume_path, r
        self.device, self.control, self.stop = device, control, stop
        self.project = Project.at(cfg.output_dir or None)
        self.con = Console(cfg.lang, enabled=r.is_main)
        self.saver = Saver(self.project, run_id, cfg, self.con)
        self.sidecar = self.project.sidecar(run_id)
        self.logger: MetricsLogger | None = None
        # only a process that (re)wrote the sidecar reports in it: a resume refused before it
        # started (a checkpoint that does not fit) leaves the run's record as it was
        self.owns_sidecar = False
        self.start_wall = time.time()
        self.selector: Selector | None = None
        self.early_stop = ""  # the message, once patience has run out
        self.outputs = Outputs(self.project.results_dir(run_id), r.rank)  # written while the next epoch trains
        self.row_at = 0.0  # when the last epoch row was written (perf_counter)

    def train(self) -> int:
        status, message, code = "failed", "", 1
        try:
            resumed = ckpt.load(self.resume_path) if self.resume_path else None
            from medic.train.data.volumes import build_any_data  # MONAI loads here, not at import
            data = build_any_data(self.cfg, self.r, self.device)
            check_monitor(self.cfg.monitor, extra_columns(self.cfg, data))  # before any file is written
            ts = build_state(self.cfg, data, self.device, resumed, self.resume_path)
            self.selector = Selector(self.cfg.monitor, self.cfg.monitor_direction, self.cfg.monitor_ema,
                                     self.cfg.patience, self.cfg.min_delta, ts.selection)
            model = DDP(ts.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
                if self.r.distributed else ts.model
            if self.r.is_main:
                self.open_files(data, resumed)
            step = Step(self.cfg, model, build_loss(), ts.optimizer, self.device, self.control, self.stop,
                        self.logger, self.con)
            stopped = self.epochs(step, ts, data, resumed)
            self.outputs.join()  # every output on disk before the run says it ended
            status, code = ("stopped", 130) if stopped else ("completed", 0)
            message = self.early_stop
            if stopped and self.stop.action == "requeue":
                status, message = None, "checkpoint saved for a requeue"
        except NonFiniteLoss as err:
            message = f"non-finite loss ({err.value}) at epoch {err.epoch}, batch {err.batch}"
            key = "nan_stop" if err.epoch > 1 else "nan_stop_none"  # nothing is saved before epoch 1 ends
            self.con.error(self.con.t[key].format(value=err.value, epoch=err.epoch, batch=err.batch,
                                                  checkpoint_epoch=err.epoch - 1))
            code = 3
        except MedicError as err:
            message = loader_message(str(err))
            self.con.error(f"medic: error: {message}")
            code = 2
        except KeyboardInterrupt:
            status, message, code = "stopped", "interrupted", 130
        except BaseException as err:
            self.failed(err)
            raise
        finally:
            try:  # whatever happened, the files being written are finished (each one whole)
                self.outputs.join(ended=True)
            except Exception as err:  # noqa: BLE001 - the first failure is the one reported
                self.con.error(f"medic: error: an output could not be written ({type(err).__name__}: {err})")
            if self.logger is not None:
                self.logger.close()
            elif self.r.is_main and not self.resume_path:
                release_run_id(self.project, self.run_id)
            self.con.close()
        if self.owns_sidecar and status is None:
            self.requeue(message)
        elif self.owns_sidecar:  # total_time: the process's wall time; the run's duration is its epochs' sum
            update_sidecar(self.sidecar, status=status, end_time=now_str(), message=message,
                           total_time=round(time.time() - self.start_wall, 3),
                           background_output_s=round(self.outputs.busy_s(), 3))
        if self.r.is_main:
            clear_stop_request(self.project, self.run_id)  # acted on, or moot now that the run ended
        return code

    def requeue(self, message: str) -> None:
        """The end of a run asked to checkpoint for a requeue (stop request ``action="requeue"``:
        a scheduler's time limit or preemption): the checkpoint is saved as for any stop, but the
        run is not marked stopped. Its status stays resumable; ``requeued`` (the time) tells the
        launcher not to mark it failed, and the scheduler to continue it from that checkpoint."""
        update_sidecar(self.sidecar, requeued=now_str(), message=message,
                       total_time=round(time.time() - self.start_wall, 3))

    def open_files(self, data: Data, resumed: dict | None) -> None:
        """Rank 0: the CSVs (cut after the resume point), the log, the sidecar, the startup block."""
        cfg, project, run_id, con = self.cfg, self.project, self.run_id, self.con
        project.make_dirs()
        if resumed:  # a killed run may have left half-written checkpoint files behind
            ckpt.remove_stale_temporaries(project.checkpoint_dir(run_id))
        partial = resumed.get("partial") if resumed else None
        extra = extra_columns(cfg, data)
        self.logger = MetricsLogger(project.root, run_id, log_batch_metrics=cfg.log_batch_metrics,
                                    extra_columns=extra, monitor_mode=cfg.monitor_direction,
                                    resume_epoch=resumed["epoch"] if resumed else None,
                                    resume_partial=(partial["epoch"], partial["batch"]) if partial else None,
                                    best_so_far=resumed.get("best") if resumed else None, rank=0,
                                    sidecar=False)  # the trainer writes its own (Saver.sidecar_start)
        hold_at("header")
        con.open_log(project.log_file(run_id))
        self.outputs.before_s = self.saver.sidecar_start(self.r, data.steps, extra, resumed, self.resume_path,
                                                         data.label_names, split_record(cfg, data))
        self.owns_sidecar = True
        self.stop.watch(project, run_id)  # its stop requests and heartbeat: the run is this one's now
        con.startup(root=project.root, dirs={"ckpt_dir": project.checkpoint_dir(run_id),
                    "results_dir": project.results_dir(run_id), "log_dir": project.log,
                    "metrics_dir": project.metrics},
                    settings=settings_lines(cfg, self.r, self.device, data, run_id),
                    log_interval=cfg.log_interval, log_batch=cfg.log_batch_metrics,
                    epoch_file=self.logger.epoch_path, batch_file=self.logger.batch_path)
        if resumed:
            con.say("resumed", run_id=run_id, path=self.resume_path, epoch=resumed["epoch"])

    def epochs(self, step: Step, ts: TrainState, data: Data, resumed: dict | None) -> bool:
        """Train the remaining epochs; True when a stop was agreed on."""
        cfg, r, con = self.cfg, self.r, self.con
        start_epoch = resumed["epoch"] + 1 if resumed else 1
        partial = resumed.get("partial") if resumed else None
        done_epoch = start_epoch - 1
        self.row_at = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs + 1):
            es = EpochState(**partial["state"]) if partial and partial["epoch"] == epoch else EpochState()
            first = len(es.losses)
            data.sampler.set_epoch(epoch)
            data.sampler.skip = first * cfg.batch_size
            t0 = time.perf_counter() - es.elapsed
            step.model.train()
            timer = EpochTimer(self.device)
            self.outputs.gate.close()  # the writers wait while the steps run
            stopped = train_epoch(step, data.loader, es, epoch, first, data.steps, timer)
            self.outputs.gate.open()
            if stopped:
                es.elapsed = time.perf_counter() - t0
                self.outputs.join()  # before the resume point that follows them
                if r.is_main:
                    self.saver.partial(ts, done_epoch, epoch, es)
                    con.say("stopped_mid", epoch=epoch, checkpoint_epoch=done_epoch, run_id=self.run_id)
                return True
            v0 = time.perf_counter()
            val = kept = None
            if data.val_loader is not None and epoch % cfg.val_interval == 0:  # --val_interval
                kept = Predictions(pictures=PICTURE_CASES if r.is_main else 0)
                val = validate(ts.model, data.val_loader, step.loss_fn, self.device, cfg.num_classes,
                               class_names(data.train_ds, cfg.num_classes), tuple(cfg.val_metrics.split(",")),
                               cfg.nsd_tolerance, predict=predictor(ts.model, cfg), keep=kept)
            val_s = time.perf_counter() - v0 if val is not None else None
            seconds = time.perf_counter() - t0
            self.end_epoch(step, ts, data, es, epoch, seconds, val, timer.finish(self.control, val_s), kept)
            done_epoch = epoch
            # every rank reaches the same early-stop decision from the same gathered values;
            # it still goes through the stop agreement, so that no rank can be left waiting
            if agree(self.stop.local() or bool(self.early_stop), self.control):
                if self.early_stop:
                    con.say("early_stop", message=self.early_stop, epoch=epoch)
                    break
                if r.is_main:
                    con.say("stopped", epoch=epoch, run_id=self.run_id)
                return True
        if r.is_main:
            con.say("finished", epochs_done=done_epoch, duration=C.format_duration(C.training_seconds(ts.epoch_times)),
                    metric=selected_name(cfg.monitor, cfg.monitor_ema),
                    value=f"{ts.best:.6f}" if ts.best is not None else "-", best_epoch=ts.best_epoch)
        return False

    def end_epoch(self, step: Step, ts: TrainState, data: Data, es: EpochState, epoch: int, seconds: float,
                  val: Validation | None, telemetry: dict[str, float] | None = None,
                  kept: Predictions | None = None) -> None:
        """The epoch's summary, LR step and row (``telemetry`` last in it; Output_Seconds: the time
        since the previous row that is neither training nor validation); its outputs (checkpoints,
        best masks and picture from ``kept``, case table, sidecar) go to the background writers."""
        cfg = self.cfg
        metrics = dict(val.metrics) if val is not None else {}
        ts.epoch_times.append(seconds)
        avg = es.loss_sum / es.count if es.count else float("nan")
        finite = [v for v in es.losses if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (float("nan"), float("nan"))
        lr = es.lrs[0] if es.lrs else ts.optimizer.param_groups[0]["lr"]
        if cfg.nonfinite == "skip":
            metrics[C.NONFINITE_BATCHES] = es.skipped
        raw = avg if cfg.monitor == C.AVG_LOSS else metrics.get(cfg.monitor, float("nan"))
        unvalidated = cfg.monitor != C.AVG_LOSS and val is None  # --val_interval > 1
        if unvalidated:  # an epoch without validation selects nothing and does not count for patience
            value = ts.best if ts.best is not None else float("nan")
        else:
            decision = self.selector.update(raw)  # on the selected value: smoothed when the EMA is on
            value, ts.selection, self.early_stop = decision.selected, self.selector.state(), decision.stop
            if decision.smoothed is not None:
                metrics[C.ema_of(cfg.monitor)] = decision.smoothed
        previous = ts.best
        # with validation data, only a validated epoch can be the best: best_model.pth comes with its masks
        is_best = improves(value, ts.best, cfg.monitor_direction) and (val is not None or data.val_loader is None)
        if is_best:
            ts.best, ts.best_epoch = value, epoch
        if self.r.is_main:
            self.con.epoch_summary(epoch, cfg.epochs, avg, lo, hi, lr, seconds,
                                   eta_hours(ts.epoch_times, cfg.epochs - epoch), metrics)
        if ts.scheduler is not None and not (cfg.lr_scheduler == "plateau" and unvalidated):
            ts.scheduler.step(value) if cfg.lr_scheduler == "plateau" else ts.scheduler.step()
        results = self.project.results_dir(self.run_id)
        saves = self.saver.epoch(ts, epoch, is_best, previous, value) if self.r.is_main else []
        masks, saves = best_jobs(kept, data, cfg, results, self.run_id, epoch, saves, self.r, self.outputs.ended,
                                 self.con.error) if is_best and kept is not None else ([], saves)
        jobs = rank0_jobs(results, self.run_id, epoch, ts, val, data, cfg, self.sidecar,
                          self.outputs.busy_s()) if self.r.is_main else []
        if self.r.is_main:
            # a resumed mid-epoch's seconds began before this process: never below 0
            outputs_s = max(0.0, time.perf_counter() - self.row_at - seconds)
            telemetry = {**(telemetry or {}), C.OUTPUT_SECONDS: outputs_s}
            self.logger.log_epoch(epoch, avg_loss=avg, min_batch_loss=lo, max_batch_loss=hi, learning_rate=lr,
                                  epoch_time=seconds, best_so_far=ts.best if ts.best is not None else float("nan"),
                                  is_best=is_best, **metrics, **telemetry)
        self.row_at = time.perf_counter()
        for save, _ in saves:  # after the row: no checkpoint without its row; before the next epoch:
            save()             # a process killed in it resumes from this one
        self.outputs.submit(jobs, masks)

    def failed(self, err: BaseException) -> None:
        """A bug or a lost peer: record it (the launcher names the rank that started it), mark
        the run failed; the caller re-raises."""
        message = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        if self.r.distributed:
            lost_peer = "peer" in message.lower()  # a consequence of another rank's failure
            report_failure(self.r.rank, message, lost_peer)
            if not lost_peer:
                message += " (this or another process failed; see the log of each rank)"
        if self.owns_sidecar:
            update_sidecar(self.sidecar, status="failed", end_time=now_str(), message=message)


def extra_columns(cfg: TrainConfig, data: Data) -> list[str]:
    """The epoch CSV's columns after the nine, in their one order: validation (Val_Loss, Val_Dice,
    per-class Dice, HD95, NSD), the monitor's EMA, Nonfinite_Batches, then the time and memory
    columns."""
    val = validation_columns(class_names(data.train_ds, cfg.num_classes), cfg.val_metrics) \
        if data.val_loader is not None else []
    return val + ([C.ema_of(cfg.monitor)] if cfg.monitor_ema else []) + \
        ([C.NONFINITE_BATCHES] if cfg.nonfinite == "skip" else []) + telemetry_columns(data.val_loader is not None)


def train_epoch(step: Step, loader, es: EpochState, epoch: int, first: int, steps: int,
                timer: EpochTimer | None = None) -> bool:
    """Train one epoch (from batch ``first``). Returns True when a stop was agreed on."""
    timer = timer or EpochTimer(step.device)
    cfg, model, optimizer, device, con = step.cfg, step.model, step.optimizer, step.device, step.con
    is_main = dist.ranks().is_main
    sums = torch.zeros(steps, device=device)    # per step: sum of this rank's sample losses
    counts = torch.zeros(steps, device=device)  # per step: this rank's samples
    pending = first
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    sync = StepSync(sums, counts, step.control, device,
                    lambda packed, windows: record_windows(packed, windows, es, epoch, steps, cfg, step.logger, con))
    for b, (images, masks) in timer.batches(loader, first):
        if sync.poll(step.stop.local()):
            sync.close(pending, b, progress=False)
            sync.drain()
            return True
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        timer.batch_ready()
        es.lrs.append(optimizer.param_groups[0]["lr"])
        with amp:
            loss = step.loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync.after_backward()
        if cfg.nonfinite == "skip" and agree(not torch.isfinite(loss).item(), step.control):
            # a non-finite loss on any rank poisons the averaged gradients on all: all skip
            # (this check is one host sync per step, paid only with --nonfinite skip)
            es.skipped += 1
            if is_main:
                con.error(con.t["nan_skip"].format(epoch=epoch, batch=b))
        else:
            optimizer.step()
        n = images.shape[0]
        sums[b] = loss.detach().float() * n  # stays on the device: no sync here
        counts[b] = n
        timer.after_step()
        if b % cfg.log_interval == 0 or b == steps - 1:
            sync.close(pending, b + 1, progress=b % cfg.log_interval == 0)
            timer.interval()
            pending = b + 1
    sync.drain()  # the epoch's last steps are recorded before its epoch row
    timer.end_loop()
    return False
