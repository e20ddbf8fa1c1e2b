"""medic's training loop against the bare loop inside the same processes, epoch by epoch.

    torchrun --nproc_per_node 2 benchmarks/inproc_ab.py --rounds 8 --out ab.json

Separate runs of ``medic train`` and ``bare_loop.py`` differ by more than the cost being measured
(each process lands differently on the machine: ±10% between identical runs on a small VM). Here
one set of processes — one model, optimizer, sampler and data loader — alternates whole epochs of
the bare step loop with epochs of medic's own ``medic.train.loop.train_epoch`` (stop vote, device
bookkeeping, reductions, batch CSV rows and progress lines on rank 0, the timing columns), rotating the order every
round, so both see the same machine at nearly the same time. Rank 0 writes each variant's epoch
times to ``--out``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from common import same_process_parser  # noqa: E402

VARIANTS = ("bare", "medic", "medic_batch")


def main(argv: list[str] | None = None) -> int:
    p = same_process_parser(__doc__, rounds=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import monai  # here, before the deep imports below (see bare_loop.py)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader

    from medic.config import TrainConfig
    from medic.train.console import Console
    from medic.train.data.sets import build_dataset
    from medic.store.logger import MetricsLogger
    from medic.train.models import build_loss, build_model, build_optimizer
    from medic.train.data.sets import ResumableSampler
    from medic.train.loop import Step, train_epoch
    from medic.train.stopping import StopFlag
    from medic.train.sync import EpochState
    from medic.train.telemetry import EpochTimer

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("gloo")
    device = torch.device("cpu")
    configs = {
        "medic": TrainConfig(batch_size=args.batch_size, num_samples=args.num_samples, image_size=args.image_size),
        "medic_batch": TrainConfig(batch_size=args.batch_size, num_samples=args.num_samples,
                                   image_size=args.image_size, log_interval=1, log_batch_metrics=True),
    }
    cfg = configs["medic"].validate()
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=0)
    steps = len(loader)
    model = build_model(cfg, in_channels=dataset[0][0].shape[0])
    loss_fn = build_loss()
    optimizer = build_optimizer(model, cfg)
    if world > 1:
        model = DDP(model)
    folder = Path(tempfile.mkdtemp(prefix="medic-ab-"))
    # as in a run: rank 0 has the logger (the batch CSV only with --log_batch_metrics), others none
    loggers = {v: MetricsLogger(folder, f"20250101_00000{i}", log_batch_metrics=configs[v].log_batch_metrics,
                                rank=rank) if rank == 0 else None for i, v in enumerate(configs)}
    con = Console("en", enabled=rank == 0, stream=open(folder / "console.txt", "a", buffering=1))
    con.open_log(folder / "training.log")
    stop = StopFlag()

    def bare_epoch() -> None:
        for images, masks in loader:
            loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def medic_epoch(variant: str, epoch: int) -> None:
        step = Step(configs[variant], model, loss_fn, optimizer, device, None, stop, loggers[variant], con)
        timer = EpochTimer(device)  # the timing columns on, as in every run: data wait, samples, memory
        train_epoch(step, loader, EpochState(), epoch, 0, steps, timer)
        timer.finish(None, None)  # their one collective per epoch

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    epoch = 0
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for variant in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
            epoch += 1
            sampler.set_epoch(epoch)
            model.train()
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            bare_epoch() if variant == "bare" else medic_epoch(variant, epoch)
            if r:
                times[variant].append(time.perf_counter() - t0)
    for logger in loggers.values():
        if logger is not None:
            logger.close()
    con.close()
    if rank == 0 and args.out:
        Path(args.out).write_text(json.dumps({"epoch_times": times, "samples": len(dataset), "world_size": world,
                                              "steps": steps, "monai": monai.__version__}))
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from medic.train.launch.roles import end_process  # a rank ends as medic's own ranks do
    end_process(main)
