"""Benchmark: what the validation metrics cost per epoch — one validation pass with Dice only,
with Dice + HD95, and with Dice + HD95 + NSD, side by side (interleaved rounds, one process),
next to one training epoch of the same run.

    python benchmarks/bench_val_metrics.py                    # 2D, 64x64, 3 classes
    python benchmarks/bench_val_metrics.py --image_size 128 --rounds 5 --out val.json

The model is trained for one epoch first, so that its predictions have the shape of a model
learning (noise everywhere would give every case thousands of surface points).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("dice", "dice,hd95", "dice,hd95,nsd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_samples", type=int, default=160)
    p.add_argument("--val_fraction", type=float, default=0.2)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--num_classes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    import torch

    from medic.config import TrainConfig
    from medic.train import dist
    from medic.train.data.sets import build_data
    from medic.train.metrics import class_names
    from medic.train.models import build_loss, build_model, build_optimizer
    from medic.train.validation import validate

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(num_samples=args.num_samples, val_fraction=args.val_fraction, image_size=args.image_size,
                      num_classes=args.num_classes, device="cpu").validate()
    device = torch.device("cpu")
    data = build_data(cfg, dist.ranks(), device)
    torch.manual_seed(0)
    model = build_model(cfg, data.in_channels)
    loss_fn, opt = build_loss(), build_optimizer(model, cfg)
    names = class_names(data.train_ds, cfg.num_classes)

    def train_epoch() -> float:
        t0 = time.perf_counter()
        model.train()
        for images, masks in data.loader:
            loss = loss_fn(model(images), masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    train_epoch()  # warm-up, and predictions shaped like a learning model's
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    times["train_epoch"] = []
    for _ in range(args.rounds):
        times["train_epoch"].append(train_epoch())
        for v in VARIANTS:
            t0 = time.perf_counter()
            validate(model, data.val_loader, loss_fn, device, cfg.num_classes, names, tuple(v.split(",")))
            times[v].append(time.perf_counter() - t0)
    cases = len(data.val_loader.dataset)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{cases} validation cases, {len(data.train_ds)} training samples, {args.image_size}x{args.image_size}, "
          f"{args.num_classes} classes, {args.threads} thread(s), median of {args.rounds} interleaved rounds\n")
    print("| pass | seconds | ms per case | vs training epoch |")
    print("|---|---|---|---|")
    print(f"| training epoch | {med['train_epoch']:.3f} | | 100% |")
    for v in VARIANTS:
        print(f"| validation, --val_metrics {v} | {med[v]:.3f} | {1000 * med[v] / cases:.1f} | "
              f"{100 * med[v] / med['train_epoch']:.0f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "cases": cases, "seconds": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
