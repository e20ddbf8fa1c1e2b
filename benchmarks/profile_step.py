"""``medic train`` with timers around the per-step parts that the bare loop does not have.

    python benchmarks/profile_step.py --epochs 3 --log_batch_metrics --log_interval 1 ...
    torchrun --nproc_per_node 2 benchmarks/profile_step.py --threads 1 ...   (as medic starts it)

It runs the real trainer (``medic.train.launch.roles.main``) unchanged; only the module attributes the loop
calls through are wrapped with ``perf_counter`` timers (about a microsecond each):

    sync           the per-step agreement (``StepSync.poll``, ``.after_backward``, ``.close``,
                   ``.drain``): the stop vote (a tiny all-reduce about every 0.25 s, read a step
                   later) that on CPU also carries the finished log intervals' losses, and
                   recording them when they arrive, of which:
      all_reduce     a blocking reduction of the intervals left at the end of an epoch
      record         recording the reduced intervals (``record_windows``), of which:
      log_batches    writing the batch CSV rows
      progress       printing the progress line (and appending it to the log file)
    save_epoch     the checkpoint written after each epoch (rank 0; outside Epoch_Time_Seconds)

Each rank writes ``<MEDIC_PROFILE_OUT>.rank<N>.json``: per epoch, the wall time of ``train_epoch``,
its steps, and the time and calls of each part; plus a micro-benchmark of the on-device
bookkeeping every step does (storing the step's loss and sample count in the per-epoch tensors),
and of an Adam step with medic's fused optimizer against torch's per-parameter loop.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PARTS = ("sync", "all_reduce", "record", "log_batches", "progress")


def install() -> tuple[list[dict], dict]:
    """Wrap the timed parts; returns the list that fills with one dict per epoch, and the running
    totals (``save_epoch`` happens between epochs, so only its total is kept)."""
    from medic.train import dist, loop, sync
    from medic.train.outputs.save import Saver
    from medic.train.console import Console
    from medic.store.logger import MetricsLogger

    totals = {name: [0.0, 0] for name in PARTS + ("save_epoch",)}
    epochs: list[dict] = []

    def timer(owner, attr: str, key: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[key][0] += time.perf_counter() - t0
                totals[key][1] += 1

        setattr(owner, attr, wrapper)

    for method in ("poll", "after_backward", "close", "drain"):
        timer(sync.StepSync, method, "sync")
    timer(dist, "all_reduce_sum", "all_reduce")
    timer(loop, "record_windows", "record")
    timer(MetricsLogger, "log_batches", "log_batches")
    timer(Console, "progress", "progress")
    timer(Saver, "epoch", "save_epoch")

    original_epoch = loop.train_epoch
    signature = inspect.signature(original_epoch)

    def train_epoch(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        es, first, epoch = bound.arguments["es"], bound.arguments["first"], bound.arguments["epoch"]
        before = {k: list(v) for k, v in totals.items()}
        t0 = time.perf_counter()
        stopped = original_epoch(*args, **kwargs)
        wall = time.perf_counter() - t0
        parts = {k: {"seconds": totals[k][0] - before[k][0], "calls": totals[k][1] - before[k][1]} for k in PARTS}
        epochs.append({"epoch": epoch, "seconds": wall, "steps": len(es.losses) - first, "parts": parts})
        return stopped

    loop.train_epoch = train_epoch
    return epochs, totals


def bookkeeping_us(repeats: int = 2000) -> float:
    """Microseconds per step of the trainer's on-device bookkeeping (``sums[b] = loss * n``,
    ``counts[b] = n``, the learning-rate append), measured on a loss with a graph, as in a step."""
    import torch
    steps = 200
    sums, counts = torch.zeros(steps), torch.zeros(steps)
    lrs: list[float] = []
    w = torch.ones(4, requires_grad=True)
    loss = (w * 0.5).mean()
    t0 = time.perf_counter()
    for i in range(repeats):
        b = i % steps
        lrs.append(0.001)
        sums[b] = loss.detach().float() * 4
        counts[b] = 4
    return (time.perf_counter() - t0) / repeats * 1e6


def optimizer_us(repeats: int = 50, rounds: int = 3) -> dict[str, float]:
    """Microseconds per Adam step on the default model with a gradient on every parameter:
    medic's optimizer (``build_optimizer``: the fused kernel) and the per-parameter loop that
    ``torch.optim.Adam(model.parameters(), lr)`` gives a hand-written loop; the two alternate
    and the fastest round of each is kept."""
    import torch

    from medic.config import TrainConfig
    from medic.train.models import build_model, build_optimizer
    cfg = TrainConfig()
    model = build_model(cfg, in_channels=1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizers = {"fused": build_optimizer(model, cfg), "loop": torch.optim.Adam(model.parameters(), lr=cfg.lr)}
    best = {name: float("inf") for name in optimizers}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            opt.step()
            t0 = time.perf_counter()
            for _ in range(repeats):
                opt.step()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeats * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    epochs, totals = install()
    from medic.train.launch.roles import main as train_main
    code = train_main(argv)
    out = os.environ.get("MEDIC_PROFILE_OUT")
    if out:
        rank = int(os.environ.get("RANK", 0))
        Path(f"{out}.rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "epochs": epochs, "bookkeeping_us": bookkeeping_us(), "optimizer_us": optimizer_us(),
             "exit": code,
             "save_epoch": dict(zip(("seconds", "calls"), totals["save_epoch"]))}))
    return code


if __name__ == "__main__":
    from medic.train.launch.roles import end_process
    end_process(main)
