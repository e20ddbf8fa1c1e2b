"""The bare DDP loop medic is measured against: the same MONAI UNet, synthetic data, loss,
optimizer, sampler, batch size and threads as ``medic train``, with no logging at all — no loss
is ever read back, no collective beyond DDP's own gradient all-reduce, nothing written per step.

    python benchmarks/bare_loop.py --epochs 3 --num_samples 192 --out times.json
    torchrun --nproc_per_node 2 benchmarks/bare_loop.py --threads 1 --out times.json

Rank 0 writes ``{"epoch_times": [...], "samples": N, "world_size": W, ...}`` to ``--out``. An
epoch's time is taken the way the trainer takes ``Epoch_Time_Seconds``: from just before the
first batch to just after the last step (synchronised with the device on CUDA, where the trainer's
end-of-epoch reduction is a sync point too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num_samples", type=int, default=192)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--amp", action="store_true", help="bf16 autocast, as medic train --amp")
    p.add_argument("--channels_last", action="store_true", help="as medic train --channels_last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="JSON file for the epoch times (rank 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # import monai at this depth, not lazily deep inside build_dataset: there, on CPython 3.11, its
    # recursive grammar compiling (rfc3987_syntax, via monai's imports) happened to sit on a
    # frame-stack chunk boundary and mmap/munmap'd a 16 KiB chunk 320k times — 2 s of start-up
    # (start-up only: epoch times were unaffected)
    import monai
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, DistributedSampler

    from medic.config import TrainConfig
    from medic.train.data.sets import build_dataset
    from medic.train.models import build_loss, build_model, build_optimizer

    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1:
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, num_samples=args.num_samples,
                      image_size=args.image_size, seed=args.seed).validate()
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=0,
                        pin_memory=device.type == "cuda")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, in_channels=dataset[0][0].shape[0]).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss()
    optimizer = build_optimizer(model, cfg)  # the trainer's own optimizer, fused Adam
    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    times = []
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        model.train()
        for images, masks in loader:
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)

    if rank == 0 and args.out:
        Path(args.out).write_text(json.dumps({
            "epoch_times": times, "samples": len(dataset), "world_size": world,
            "threads": torch.get_num_threads(), "device": device.type, "batch_size": cfg.batch_size,
            "image_size": cfg.image_size, "torch": torch.__version__, "monai": monai.__version__}))
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from medic.train.launch.roles import end_process  # a rank ends as medic's own ranks do
    end_process(main)
