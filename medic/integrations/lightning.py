"""medic's files from a PyTorch Lightning fit: ``MedicLogger`` is all a user adds.

    from medic.integrations.lightning import MedicLogger
    trainer = lightning.Trainer(max_epochs=20, logger=MedicLogger(output_dir="."))
    trainer.fit(model, train_loader, val_loader)

A Lightning logger sees only what the module logs, and only every ``log_every_n_steps``; the
epoch CSV needs every step's loss, the learning rate and the epoch time. ``MedicCallback``
collects those. It is attached without the user's help: by ``MedicAttach``, which the
``lightning.pytorch.callbacks_factory`` entry point (declared in medic's package metadata) adds to
every trainer and which acts only when a ``MedicLogger`` is among the trainer's loggers and no
``MedicCallback`` is there yet; or, where the entry point is not installed, by the logger itself
when Lightning hands it the model (``log_graph``).

Rows: the nine columns (docs/reference/files.md) from the step losses (``loss`` returned by ``training_step``, averaged
over the ranks by the callback), then the module's epoch-level metrics (``val_dice`` stays
``val_dice``): those named in ``metrics=``, else those logged by the end of the first epoch,
including the sanity-check validation. Files go to ``<output_dir>/metrics/`` as for ``medic
train``; Lightning's checkpoints to ``<output_dir>/checkpoints/<run id>/``. A fit resumed with
``ckpt_path=`` continues the same run: the callback keeps the run id in the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from medic.integrations.recorder import Recorder
from medic.store.paths import Project, release_run_id, reserve_run_id
from medic.store.record import exit_status


class MedicLogger(Logger):
    """A Lightning logger writing medic's epoch CSV, batch CSV and sidecar.

    The epoch rows come from every training step's loss (the ``loss`` that ``training_step``
    returns), averaged over the processes by medic under DDP; the metrics the module logs per epoch
    become extra columns under their own names. A fit resumed from a Lightning checkpoint
    (``ckpt_path=``) continues the same medic run.

    Args:
        output_dir: the project root; files go to ``<output_dir>/metrics/`` and Lightning's
            checkpoints to ``<output_dir>/checkpoints/<run id>/checkpoints/``.
        log_batch_metrics: also write the batch CSV (every step's loss and learning rate).
        metrics: the epoch-level metric names to record as extra columns; default: those logged
            by the end of the first epoch (the sanity-check validation counts).
        hparams: options for the sidecar, besides the module's ``save_hyperparameters()``.
        flush_every: steps between batch-row writes (one collective under DDP).

    Example::

        import lightning
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from medic.integrations.lightning import MedicLogger

        class Tiny(lightning.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.mse_loss(self.layer(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
        logger = MedicLogger(output_dir=".", log_batch_metrics=True)
        trainer = lightning.Trainer(max_epochs=2, logger=logger, enable_progress_bar=False)
        trainer.fit(Tiny(), data)
        print(logger.run_id())    # medic runs, medic analyze --run <id> read it
    """

    def __init__(self, output_dir: str = ".", log_batch_metrics: bool = False, metrics=None,
                 hparams: Mapping[str, Any] | None = None, flush_every: int = 10):
        super().__init__()
        self.project = Project.at(output_dir)
        self.recorder = Recorder(self.project.root, log_batch_metrics=log_batch_metrics, metrics=metrics,
                                 flush_every=flush_every, source="lightning")
        self.hparams: dict[str, Any] = dict(hparams or {})
        self._run_id: str | None = None
        self._resume = False
        self._trainer = None
        self._opened = False
        self.failure: tuple[str, str] | None = None

    # --- Lightning's Logger interface --------------------------------------------------------
    @property
    def name(self) -> str:
        return "checkpoints"

    @property
    def version(self) -> str | None:
        return self.run_id()

    @property
    def save_dir(self) -> str:
        return str(self.project.root)

    @property
    def experiment(self) -> "MedicLogger":
        return self

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """The module's logged values reach the epoch CSV through ``trainer.callback_metrics``
        at the end of each epoch (the callback), so nothing is written here."""

    def log_hyperparams(self, params, *args: Any, **kwargs: Any) -> None:
        params = vars(params) if hasattr(params, "__dict__") and not isinstance(params, Mapping) else params
        self.hparams = {**dict(params or {}), **self.hparams}
        self.recorder.update(config=self.hparams)

    def log_graph(self, model, input_array=None) -> None:
        """Lightning calls this at the start of every fit with the module: where the entry point
        did not attach ``MedicCallback``, the logger attaches it here."""
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            attach(trainer, model)

    def finalize(self, status: str) -> None:
        """Lightning's end of a fit: ``success`` (completed), ``finished`` (stopped by a signal,
        e.g. SLURM's before a requeue) or ``failed`` (the exception ``on_exception`` saw)."""
        if not self._opened:  # nothing written (a failure before training, or no fit at all)
            if self._run_id is not None and not self._resume:
                release_run_id(self.project, self._run_id)
                self._run_id = None
            return
        if status == "success":
            self.recorder.close("completed")
        elif status == "finished":
            self.recorder.close("stopped", "stopped by a signal")
        else:
            self.recorder.close(*(self.failure or ("failed", "")))

    # --- the run -------------------------------------------------------------------------------
    def bind(self, trainer) -> None:
        """The trainer this logger records; where the fit was resumed from a checkpoint already
        restored (the logger attached its callback late), the run id is read from that file."""
        self._trainer = trainer
        if self._opened and self.recorder.logger is None:  # a logger reused for another fit: a new run
            self._opened, self._resume, self.failure = False, False, None
            old, self._run_id = self._run_id, None
            if trainer.global_rank == 0:
                self._follow(old, self.run_id(), release=False)
        if trainer.ckpt_path:
            self.adopt(callback_state(trainer.ckpt_path))

    def adopt(self, state: Mapping[str, Any]) -> None:
        """Continue the run named in a checkpoint's ``MedicCallback`` state (rank 0). An id handed
        out before (Lightning asks for ``version`` early) is given back, and the checkpoint
        folder follows the run."""
        run_id = str(state.get("run_id") or "")
        if (self._trainer is None or self._trainer.global_rank != 0 or self._opened or not run_id
                or run_id == self._run_id or not self.project.epoch_csv(run_id).is_file()):
            return
        self._follow(self._run_id, run_id, release=True)
        self._run_id, self._resume = run_id, True

    def _follow(self, old: str | None, new: str, release: bool) -> None:
        """Lightning's checkpoint folder, resolved from an earlier id, follows the run to ``new``;
        with ``release``, the earlier id (nothing written under it) is given back."""
        if old is None:
            return
        old_dir = self.project.checkpoint_dir(old) / "checkpoints"
        for callback in self._trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) and Path(callback.dirpath) == old_dir:
                callback.dirpath = str(self.project.checkpoint_dir(new) / "checkpoints")
        if release:
            release_run_id(self.project, old)

    def run_id(self) -> str | None:
        """The medic run id (reserved on first use, rank 0; None on other ranks)."""
        rank = self._trainer.global_rank if self._trainer is not None else getattr(rank_zero_only, "rank", 0)
        if self._run_id is None and rank == 0:
            self.project.metrics.mkdir(parents=True, exist_ok=True)
            self._run_id = reserve_run_id(self.project)
        return self._run_id

    @property
    def resuming(self) -> bool:
        return self._resume

    def open(self, trainer) -> None:
        """The files and the sidecar; a resumed fit keeps the rows of the epochs before the
        one it starts with."""
        if self._opened:
            return
        self._opened = True
        run_id = self.run_id() if trainer.global_rank == 0 else None
        planned = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.recorder.open(run_id=run_id, resume_epoch=trainer.current_epoch if self._resume else None,
                           hparams=self.hparams, epochs_planned=planned)


class MedicCallback(Callback):
    """Per-step losses, learning rate and epoch times for the trainer's ``MedicLogger``; does
    nothing for a trainer without one."""

    def __init__(self):
        self.logger: MedicLogger | None = None
        self.lr = math.nan

    @property
    def recorder(self) -> Recorder | None:
        return self.logger.recorder if self.logger is not None else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.logger is None:
            self.logger = next((lg for lg in trainer.loggers if isinstance(lg, MedicLogger)), None)
            if self.logger is not None:
                self.logger.bind(trainer)

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        if self.logger is not None and not self.logger.resuming:  # a resumed fit's position is
            self.logger.open(trainer)                               # known when its epoch starts

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        if self.logger is not None:
            self.recorder.note(trainer.callback_metrics)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.logger is None:
            return
        self.logger.open(trainer)
        self.recorder.start_epoch(trainer.current_epoch + 1)
        batches = trainer.num_training_batches
        if isinstance(batches, int) and batches > 0:
            self.recorder.update(batches_per_epoch=batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.logger is None:
            return
        rec = self.recorder
        if batch_idx and not rec.losses and not rec.pending:  # a fit resumed part-way through an epoch
            rec.first_batch = batch_idx
        self.lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.logger is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) or isinstance(loss, (int, float)):
            self.recorder.step(loss, self.lr)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.logger is not None:
            self.recorder.end_epoch(trainer.callback_metrics, self.lr)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.logger is not None:
            self.logger.failure = exit_status(type(exception), exception)

    def state_dict(self) -> dict[str, Any]:
        if self.logger is None or self.logger.run_id() is None:
            return {}
        return {"run_id": self.logger.run_id(), "epoch": self.recorder.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.adopt(state_dict)


def callback_state(ckpt_path) -> dict[str, Any]:
    """The ``MedicCallback`` state saved in a Lightning checkpoint, or {}."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, RuntimeError, ValueError):
        return {}
    state = (ckpt.get("callbacks") or {}).get(MedicCallback.__qualname__) if isinstance(ckpt, dict) else None
    return state if isinstance(state, dict) else {}


class MedicAttach(Callback):
    """What the entry point adds to every trainer: at ``setup`` of a fit that has a ``MedicLogger``
    and no ``MedicCallback`` yet (the user's own, or one attached by an earlier ``MedicAttach``
    where the entry point is declared twice), it attaches one. It keeps no state itself, so it
    never clashes with a ``MedicCallback`` the user passes in ``callbacks=``; ``setup`` runs before
    a checkpoint's callback states are restored, so a resumed fit's run id still reaches the
    attached callback."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and any(isinstance(lg, MedicLogger) for lg in trainer.loggers):
            attach(trainer, pl_module)


def attach(trainer, pl_module) -> None:
    """Give ``trainer`` a ``MedicCallback`` (set up for the fit) unless it has one already."""
    if not any(isinstance(c, MedicCallback) for c in trainer.callbacks):
        callback = MedicCallback()
        trainer.callbacks.append(callback)
        callback.setup(trainer, pl_module, "fit")


def callbacks_factory() -> list[Callback]:
    """The ``lightning.pytorch.callbacks_factory`` entry point: one ``MedicAttach`` per trainer."""
    return [MedicAttach()]
