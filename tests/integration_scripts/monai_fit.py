"""A tiny real MONAI SupervisedTrainer run (Ignite) with medic's handler: 1 process, or N under
ignite.distributed with gloo (``--plain``: Ignite's own supervised engines, no MONAI import).
Segmentation of 8x8 images by one convolution; seeded, unshuffled."""

import argparse
import json
import os
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint
from ignite.metrics import Loss
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from medic.integrations.monai import MedicHandler


def data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    return TensorDataset(images, (images[:, 0] > 0.5).long())


def loader(ds: TensorDataset, batch_size: int) -> DataLoader:
    sampler = DistributedSampler(ds, num_replicas=idist.get_world_size(), rank=idist.get_rank(), shuffle=False)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler)


def training(local_rank: int, a, fail_at: int = 0, resume: bool = False) -> None:
    torch.manual_seed(0)
    net = idist.auto_model(torch.nn.Conv2d(1, 2, 3, padding=1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    ce = torch.nn.CrossEntropyLoss()
    epoch = {"now": 0}

    def loss_fn(pred, label):
        if fail_at and epoch["now"] == fail_at:
            raise RuntimeError("the data loader broke")
        return ce(pred, label)

    train_loader, val_loader = loader(data(a.samples), a.batch_size), loader(data(16, seed=1), a.batch_size)
    handler = MedicHandler(output_dir=a.output_dir, hparams={"lr": 0.5, "batch_size": a.batch_size},
                           log_batch_metrics=True, flush_every=4, optimizer=optimizer if a.plain else None)
    if a.plain:
        from ignite.engine import create_supervised_evaluator, create_supervised_trainer
        trainer = create_supervised_trainer(net, optimizer, loss_fn)
        evaluator = create_supervised_evaluator(net, metrics={"val_loss": Loss(ce)})
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val_loader))
        handler.attach(trainer)
        handler.attach(evaluator, evaluator=True)
        run = lambda: trainer.run(train_loader, max_epochs=a.epochs)  # noqa: E731
    else:
        from monai.engines import SupervisedEvaluator, SupervisedTrainer
        from monai.handlers import ValidationHandler
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"), val_data_loader=val_loader, network=net, decollate=False,
            key_val_metric={"val_loss": Loss(ce, output_transform=lambda o: (o["pred"], o["label"]))})
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=a.epochs, train_data_loader=train_loader, network=net,
            optimizer=optimizer, loss_function=loss_fn, decollate=False,
            train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)])
        handler.attach(trainer)
        handler.attach(evaluator)
        run = trainer.run
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epoch.update(now=e.state.epoch))

    @trainer.on(Events.EPOCH_STARTED(once=2))
    def probe(engine):  # the run's sidecar while it trains (rank 0)
        if idist.get_rank() == 0:
            side = json.loads(Path(a.output_dir, "metrics", f"run_{handler.recorder.run_id}.json").read_text())
            print("SIDECAR", side["status"], side["pid"] == os.getpid(), flush=True)
    saved = {"trainer": trainer, "medic": handler, "net": net, "optimizer": optimizer}
    ckpt = f"{a.output_dir}/monai_fit_{'ignite' if a.plain else 'monai'}_{a.nproc}.pt"
    if resume:  # one epoch more, from the end of the first fit (Ignite's Checkpoint.load_objects)
        Checkpoint.load_objects(saved, torch.load(ckpt, weights_only=False))
        trainer.state.max_epochs = a.epochs + 1
    try:
        run()
    except RuntimeError as err:
        print("FAILED", err, flush=True)
    if idist.get_rank() == 0 and not resume and not fail_at:
        torch.save({k: v.state_dict() for k, v in saved.items()}, ckpt)
    if idist.get_rank() == 0:
        print("RUN", handler.state_dict()["run_id"], flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("output_dir")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--plain", action="store_true", help="Ignite's own engines instead of MONAI's")
    p.add_argument("--stages", default="fit", help="fit, resume (one epoch more), fail: in order")
    a = p.parse_args()
    for stage in a.stages.split(","):
        fail_at = 2 if stage == "fail" else 0
        if a.nproc > 1:
            with idist.Parallel(backend="gloo", nproc_per_node=a.nproc) as parallel:
                parallel.run(training, a, fail_at, stage == "resume")
        else:
            training(0, a, fail_at, stage == "resume")


if __name__ == "__main__":
    main()
