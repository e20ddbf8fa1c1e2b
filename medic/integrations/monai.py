"""medic's files from a MONAI (Ignite) training: ``MedicHandler``, attached as MONAI's
``StatsHandler`` is.

    from medic.integrations.monai import MedicHandler
    medic_handler = MedicHandler(output_dir=".", hparams={"lr": 1e-3})
    medic_handler.attach(trainer)      # a monai.engines.SupervisedTrainer (or any Ignite Engine)
    medic_handler.attach(evaluator)    # optional: its metrics become columns (val_mean_dice, ...)
    trainer.run()

The epoch CSV has the nine columns of docs/reference/files.md from the step losses (the ``loss`` in the trainer's
output, averaged over the ranks under ``ignite.distributed``), then the trainer's and the
evaluator's ``state.metrics`` (named in ``metrics=``, else those of the first epoch). An epoch's
row is written once its validation has run (whichever handler order the engines have), or at the
next epoch's start when the evaluator did not run that epoch. The handler has ``state_dict`` and
``load_state_dict``: saved by Ignite's ``Checkpoint`` (MONAI's ``CheckpointSaver``) and loaded
back, a resumed training continues the same medic run.
"""

from __future__ import annotations

import atexit
import math
from typing import Any, Callable, Mapping

import ignite.distributed as idist
from ignite.engine import Engine, Events

from medic.integrations.recorder import Recorder
from medic.store.record import exit_status


def loss_of(output: Any):
    """The loss in an engine's output: MONAI's dict (``"loss"``), a list of decollated dicts (the
    first), or the loss itself."""
    if isinstance(output, Mapping):
        return output.get("loss")
    if isinstance(output, (list, tuple)) and output:
        return loss_of(output[0])
    return output


class MedicHandler:
    """Writes medic's epoch CSV, batch CSV and sidecar for an Ignite run, as MONAI's
    ``StatsHandler`` prints one.

    Attach it to the trainer and, optionally, to the evaluator, whose metrics join the epoch rows.
    Its ``state_dict()`` / ``load_state_dict()`` travel with Ignite's ``Checkpoint`` (MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader``), so a resumed training continues the same run.

    Args:
        output_dir: the project root; files go to ``<output_dir>/metrics/``.
        hparams: the run's options, stored in the sidecar.
        log_batch_metrics: also write the batch CSV (every step's loss and learning rate).
        metrics: the metric names to record as extra columns; default: those of the first epoch.
        output_transform: takes the step loss from the engine's output (default ``loss_of``: the
            ``loss`` of MONAI's output dict, or the output itself).
        flush_every: steps between batch-row writes (one collective under ``ignite.distributed``).
        optimizer: where the learning rate is read; default: the trainer's ``optimizer``, as
            MONAI's trainers have.

    Example::

        import torch
        from ignite.engine import Engine
        from medic.integrations.monai import MedicHandler

        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(engine, batch):
            x, y = batch
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            return {"loss": loss.item()}

        trainer = Engine(step)
        MedicHandler(output_dir=".", log_batch_metrics=True, optimizer=optimizer).attach(trainer)
        trainer.run([(torch.randn(8, 4), torch.randn(8, 1))] * 4, max_epochs=2)
    """

    def __init__(self, output_dir: str = ".", hparams: Mapping[str, Any] | None = None,
                 log_batch_metrics: bool = False, metrics=None,
                 output_transform: Callable[[Any], Any] = loss_of, flush_every: int = 10, optimizer=None):
        self.recorder = Recorder(output_dir, log_batch_metrics=log_batch_metrics, metrics=metrics,
                                 flush_every=flush_every, source="monai")
        self.hparams = dict(hparams or {})
        self.output_transform = output_transform
        self.optimizer = optimizer
        self.trainer: Engine | None = None
        self.evaluator: Engine | None = None
        self.lr = math.nan
        self.pending: int | None = None     # an epoch whose row waits for its validation
        self.val_metrics: dict[str, Any] = {}
        self.val_epoch = 0
        self.resume: dict[str, Any] = {}

    def attach(self, engine: Engine, evaluator: bool | None = None) -> "MedicHandler":
        """Attach to the trainer, or to an evaluator (a ``monai.engines.Evaluator``, or
        ``evaluator=True``) whose metrics join the trainer's epoch rows."""
        if evaluator is None:  # MONAI's evaluators, told apart without importing MONAI
            evaluator = any(c.__name__ == "Evaluator" and c.__module__.startswith("monai.")
                            for c in type(engine).__mro__)
        if evaluator:
            self.evaluator = engine
            engine.add_event_handler(Events.COMPLETED, self._validated)
            return self
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception)
        return self

    # --- the trainer's events --------------------------------------------------------------
    def _started(self, engine: Engine) -> None:
        state = engine.state
        resumed = bool(self.resume.get("run_id")) and state.epoch > 0
        self.recorder.open(run_id=self.resume.get("run_id") if resumed and idist.get_rank() == 0 else None,
                           resume_epoch=state.epoch if resumed else None, hparams=self.hparams,
                           epochs_planned=state.max_epochs,
                           info={"batches_per_epoch": state.epoch_length, "world_size": idist.get_world_size()})
        atexit.register(self._ended_early)

    def _epoch_started(self, engine: Engine) -> None:
        self._write_pending()
        self.recorder.start_epoch(engine.state.epoch)

    def _iteration_started(self, engine: Engine) -> None:
        optimizer = self.optimizer or getattr(engine, "optimizer", None)
        if optimizer is not None:
            self.lr = optimizer.param_groups[0]["lr"]

    def _iteration_completed(self, engine: Engine) -> None:
        self.recorder.step(self.output_transform(engine.state.output), self.lr)

    def _epoch_completed(self, engine: Engine) -> None:
        self.pending = engine.state.epoch
        if self.evaluator is None or self.val_epoch == self.pending:  # no validation, or it ran already
            self._write_pending()

    def _completed(self, engine: Engine) -> None:
        self._write_pending()
        self._close("completed")

    def _exception(self, engine: Engine, err: BaseException) -> None:
        self._close(*exit_status(type(err), err))
        raise err  # Ignite hands exceptions to this event's handlers instead of raising them

    # --- the evaluator -----------------------------------------------------------------------
    def _validated(self, evaluator: Engine) -> None:
        self.val_metrics = dict(evaluator.state.metrics)
        # the trainer's epoch (MONAI's evaluators count the same; a plain Ignite one counts its own)
        self.val_epoch = self.trainer.state.epoch if self.trainer is not None else evaluator.state.epoch
        if self.pending == self.val_epoch:
            self._write_pending()

    def _write_pending(self) -> None:
        if self.pending is None:
            return
        metrics = dict(self.trainer.state.metrics) if self.trainer is not None else {}
        if self.val_epoch == self.pending:
            metrics.update(self.val_metrics)
        self.pending = None
        self.recorder.end_epoch(metrics, self.lr)

    def _close(self, status: str, message: str = "") -> None:
        atexit.unregister(self._ended_early)
        self.recorder.close(status, message)

    def _ended_early(self) -> None:
        self.recorder.close("failed", "the process ended before the run completed")

    # --- Ignite's Checkpoint -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.recorder.run_id, "epoch": self.recorder.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.resume = dict(state)
