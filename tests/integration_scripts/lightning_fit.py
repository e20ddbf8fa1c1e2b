"""A tiny real Lightning fit with medic's logger (run as a script: Lightning's ddp launcher
re-runs sys.argv). Segmentation of 8x8 images by one convolution; seeded, unshuffled."""

import argparse
import glob
import json
import os

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from medic.integrations.lightning import MedicAttach, MedicCallback, MedicLogger


def data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    masks = (images[:, 0] > 0.5).long()
    return TensorDataset(images, masks)


class Seg(pl.LightningModule):
    def __init__(self, lr: float = 0.5, fail_at: int = 0, late_metric: bool = False, broken: bool = False):
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(1, 2, 3, padding=1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.fail_at and self.current_epoch + 1 == self.hparams.fail_at:
            raise RuntimeError("the data loader broke")
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if self.hparams.late_metric and self.current_epoch >= 1:
            self.log("late_metric", 1.0, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        pred = logits.argmax(1)
        inter = ((pred == 1) & (y == 1)).sum().float()
        dice = 2 * inter / ((pred == 1).sum() + (y == 1).sum()).clamp(min=1)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y), sync_dist=True)
        self.log("val_dice", dice, sync_dist=True)

    def configure_optimizers(self):
        if self.hparams.broken:
            raise RuntimeError("no optimizer for this model")
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class SidecarProbe(pl.Callback):
    """Prints the run's sidecar status as the second epoch starts (rank 0): the run is live."""

    def on_train_epoch_start(self, trainer, pl_module):
        logger = trainer.logger
        if trainer.current_epoch == 1 and trainer.global_rank == 0:
            side = json.loads(logger.project.sidecar(logger.recorder.run_id).read_text())
            print("SIDECAR", side["status"], side["pid"] == os.getpid(), flush=True)


def fit(a, epochs: int, ckpt_path=None, fail_at: int = 0, late_metric: bool = False, broken: bool = False,
        logger: MedicLogger | None = None, own: tuple = ()) -> str:
    """One fit; returns the medic run id (rank 0)."""
    logger = logger or MedicLogger(output_dir=a.output_dir, log_batch_metrics=True, flush_every=4,
                                   hparams={"batch_size": a.batch_size})
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=a.devices,
                         strategy="ddp" if a.devices > 1 else "auto", logger=logger,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                         use_distributed_sampler=False, callbacks=[SidecarProbe(), *own])
    attached = any(isinstance(c, MedicAttach) for c in trainer.callbacks)  # by the entry point
    # Lightning's own sampler would shuffle the training data; unshuffled, one process with batch N
    # sees the same samples per step as two with batch N/2
    train_set = data(a.samples)
    sampler = DistributedSampler(train_set, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                 shuffle=False)
    train = DataLoader(train_set, batch_size=a.batch_size, sampler=sampler)
    val = DataLoader(data(16, seed=1), batch_size=a.batch_size, shuffle=False)
    try:
        trainer.fit(Seg(fail_at=fail_at, late_metric=late_metric, broken=broken), train, val, ckpt_path=ckpt_path)
    except RuntimeError as err:
        print("FAILED", err, flush=True)
    if trainer.global_rank == 0:
        count = sum(isinstance(c, MedicCallback) for c in trainer.callbacks)
        print("RUN", logger.recorder.run_id or "-", "CALLBACK", "entry point" if attached else "logger",
              "COUNT", count, flush=True)
    return logger.recorder.run_id


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("output_dir")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--stages", default="fit", help="fit, resume (one epoch more), fail, late, broken, reuse, own: in order")
    p.add_argument("--without_entry_point", action="store_true",
                   help="as where medic is on the path but not installed: Lightning finds no entry point")
    a = p.parse_args()
    if a.without_entry_point:
        from lightning.pytorch.trainer.connectors import callback_connector
        callback_connector._load_external_callbacks = lambda group: []
    run_id = None
    for stage in a.stages.split(","):
        if stage == "fit":
            run_id = fit(a, a.epochs)
        elif stage == "resume":
            ckpt = sorted(glob.glob(f"{a.output_dir}/checkpoints/{run_id}/checkpoints/*.ckpt"))[-1]
            fit(a, a.epochs + 1, ckpt_path=ckpt)
        elif stage == "fail":
            fit(a, a.epochs, fail_at=2)
        elif stage == "late":
            fit(a, 2, late_metric=True)
        elif stage == "broken":  # fails before its first step
            fit(a, 2, broken=True)
        elif stage == "reuse":  # one logger, two fits: two runs
            logger = MedicLogger(output_dir=a.output_dir, flush_every=4)
            fit(a, 1, logger=logger)
            fit(a, 1, logger=logger)
        elif stage == "own":  # the user passes the callback too: still one
            fit(a, 1, own=(MedicCallback(),))


if __name__ == "__main__":
    main()
