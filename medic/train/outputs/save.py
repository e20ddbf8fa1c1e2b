"""What a run saves as it trains (rank 0): checkpoints and the sidecar's start record; and the state
they restore (``build_state``). (The best epoch's picture comes from the validation's own
predictions: ``medic.train.outputs.writer``.)

    checkpoints/<id>/model_epoch_N.pth   every --save_interval epochs
    checkpoints/<id>/best_model.pth      when the monitored value improves
    checkpoints/<id>/top_k/epoch_N_<metric>_<value>.pth   with --save_top_k K: the K best
    checkpoints/<id>/last.pth            every epoch, written last (the resume point)
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from medic.config import TrainConfig
from medic.errors import MedicError
from medic.store.files import write_atomic, write_json_atomic
from medic.store.paths import Project
from medic.procs import hostname, pid_scope
from medic.store.control import heartbeat_interval
from medic.store.sidecar import mark_resumed, now_str, read_sidecar, sweep_tags
from medic.train.outputs import checkpoint as ckpt
from medic.train import dist
from medic.train.outputs.casefiles import save_top_k
from medic.train.console import Console
from medic.train.models import build_model, build_optimizer, make_scheduler
from medic.train.selection import selected_name
from medic.train.sync import EpochState


@dataclass
class TrainState:
    """What a checkpoint restores besides the config: the model (the bare module, never its DDP
    wrapper), its optimizer and LR schedule, the best monitored value and the epoch times."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    best: float | None = None
    best_epoch: int = 0
    epoch_times: list[float] = field(default_factory=list)
    selection: dict = field(default_factory=dict)  # the monitor's EMA (medic.train.selection)

    def restore(self, state: dict, path) -> None:
        """Load a checkpoint's state (model, optimizer, scheduler, best, epoch times, RNG)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise MedicError(f"checkpoint {path} does not fit this model "
                             f"({str(err).splitlines()[0][:160]})") from err
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.best, self.best_epoch = best_on_disk(Path(path).parent, state.get("best"), state.get("best_epoch", 0))
        self.epoch_times = list(state.get("epoch_times", []))
        self.selection = dict(state.get("selection") or {})
        ckpt.set_rng_state(state.get("rng", {}))

    def checkpoint(self, run_id: str, cfg: TrainConfig, epoch: int, partial: dict | None = None) -> dict:
        """One dict of plain data: everything a resume needs (docs/reference/files.md, "Checkpoints and results")."""
        state = {"format": ckpt.FORMAT, "run_id": run_id, "epoch": epoch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "best": self.best, "best_epoch": self.best_epoch, "config": cfg.to_dict(),
                 "rng": ckpt.rng_state(), "epoch_times": list(self.epoch_times),
                 "world_size": dist.ranks().world_size,
                 "selection": dict(self.selection)}
        if partial is not None:
            state["partial"] = partial
        return state


def best_on_disk(folder: Path, best: float | None, best_epoch: int) -> tuple[float | None, int]:
    """The best a resumed run goes on from. With best masks, ``best_model.pth`` is written behind
    the training, after every process's masks (``medic.train.outputs.best``): a run killed in
    between recorded a best epoch in ``last.pth`` whose model is not on disk. Then the best is the
    one that is, and the next validated epoch better than it writes both again."""
    path = folder / "best_model.pth"
    try:
        saved = ckpt.load(path, mmap=True) if best_epoch and path.is_file() else None  # its record, not its weights
    except MedicError:  # a damaged one guides no better than last.pth
        saved = None
    if saved is not None and saved["epoch"] < best_epoch:
        return saved.get("best"), saved["epoch"]
    return best, best_epoch


def build_state(cfg: TrainConfig, data, device: torch.device, resumed: dict | None,
                resume_path) -> TrainState:
    """The model (seeded alike on every rank), optimizer and schedule; restored when resuming."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, in_channels=data.in_channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    ts = TrainState(model, optimizer, make_scheduler(cfg, optimizer))
    if resumed:
        ts.restore(resumed, resume_path)
    return ts


@dataclass
class Saver:
    """Where and how one run saves (rank 0 only)."""

    project: Project
    run_id: str
    cfg: TrainConfig
    con: Console

    @property
    def folder(self) -> Path:
        return self.project.checkpoint_dir(self.run_id)

    def epoch(self, ts: TrainState, epoch: int, is_best: bool, previous: float | None,
              value: float) -> list[tuple[Callable[[], None], str | None]]:
        """The epoch's checkpoint writes as ``(job, key)``, to be run in their order: model_epoch_N
        (every save_interval), best_model (on improvement), the top k, then last.pth — last, so
        that when last.pth is intact nothing newer exists. The state is serialised here, once,
        and the same bytes go to each file."""
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        data = ckpt.serialize(ts.checkpoint(self.run_id, self.cfg, epoch))
        jobs: list[tuple[Callable[[], None], str | None]] = []
        if epoch % self.cfg.save_interval == 0:
            jobs.append((partial(ckpt.write_checkpoint, folder / f"model_epoch_{epoch}.pth", data), None))
            self.con.say("saved", name=f"model_epoch_{epoch}.pth")
        if is_best:
            self.con.new_best(selected_name(self.cfg.monitor, self.cfg.monitor_ema), value, previous)
            jobs.append((partial(ckpt.write_checkpoint, folder / "best_model.pth", data), "best_model.pth"))
            self.con.say("saved_best", name="best_model.pth")
        if self.cfg.save_top_k:
            jobs.append((partial(save_top_k, folder / "top_k", self.cfg.save_top_k, epoch,
                                 selected_name(self.cfg.monitor, self.cfg.monitor_ema), value,
                                 self.cfg.monitor_direction, data, ckpt.write_checkpoint), None))
        jobs.append((partial(ckpt.write_checkpoint, folder / "last.pth", data), "last.pth"))
        return jobs

    def partial(self, ts: TrainState, done_epoch: int, epoch: int, es: EpochState) -> None:
        """After a graceful stop mid-epoch: last.pth holds the exact position, so --resume
        continues with the next batch of the same epoch."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = {"epoch": epoch, "batch": len(es.losses), "state": es.to_dict()}
        ckpt.write_checkpoint(self.folder / "last.pth",
                          ckpt.serialize(ts.checkpoint(self.run_id, self.cfg, done_epoch, partial)))

    def sidecar_start(self, r: dist.Ranks, steps: int, extra: list[str], state: dict | None,
                      resume_path, labels: list[str] | None = None, split: dict | None = None) -> float:
        """The sidecar as the run starts: a new record (over the claim that reserved the id, whose
        start time it keeps), or the resumed run's record updated. ``split``: the cases trained
        on and validated, and the data's fingerprint (``medic.train.data.caseinfo``). Returns the
        seconds of background outputs the run had before (``background_output_s``)."""
        path = self.project.sidecar(self.run_id)
        cfg = self.cfg
        where = {"pid": os.getpid(), "agent_pid": os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None,
                 "host": hostname(), "pid_scope": pid_scope(), "heartbeat_s": heartbeat_interval()}
        if state:
            record = mark_resumed(path, {"from_epoch": state["epoch"], "checkpoint": str(resume_path)},
                                  status="running", end_time=None, message="", config=cfg.to_dict(), requeued=None,
                                  epochs=cfg.epochs, world_size=r.world_size, **where, **(split or {}))
            before = record.get("background_output_s")
            return float(before) if isinstance(before, (int, float)) else 0.0
        import monai
        from medic import __version__
        claim = read_sidecar(path) or {}  # the claim; a scheduler's (SLURM) keeps its job and request
        write_json_atomic(path, {**{k: claim[k] for k in ("launcher", "slurm", "requeues") if k in claim},
            "run_id": self.run_id, "status": "running", "start_time": claim.get("start_time") or now_str(),
            "start_epoch": claim.get("start_epoch") or round(time.time(), 3), "end_time": None,
            "epochs": cfg.epochs, "epochs_done": 0, "batches_per_epoch": steps, "world_size": r.world_size,
            "monitor": selected_name(cfg.monitor, cfg.monitor_ema),  # the column Best_Loss_So_Far tracks
            "monitor_mode": cfg.monitor_direction, "extra_columns": extra,
            "log_batch_metrics": cfg.log_batch_metrics, "best": None, "best_epoch": None, **where,
            "message": "", "config": cfg.to_dict(), "labels": labels, **(split or {}), **sweep_tags(),
            "versions": {"medic": __version__, "torch": torch.__version__, "monai": monai.__version__,
                         "python": sys.version.split()[0]},
        })
        return 0.0
