"""DDP scaling inside one pair of processes: 2 processes against 1, phase by phase.

    torchrun --nproc_per_node 2 benchmarks/scaling_ab.py --rounds 6 --out scaling.json

Separate runs of 1 and 2 processes land on a noisy machine at different moments: on a small VM the
same run's speed swings by more than the effect being measured. Here two processes alternate four
phases of the bare training loop (the default model, synthetic data, batch size and loss of
``medic train``), each phase one epoch's worth of samples, the order rotating every round:

- ``2x1``: both ranks, one thread each, a DDP model (gradient all-reduce over gloo), each rank half
  of the samples;
- ``1x2`` and ``1x1``: rank 0 alone with two threads or one on a model of its own, all the samples,
  while rank 1 waits in a barrier (its CPU time over the phase is recorded, to show it is idle);
- ``independent``: both ranks, one thread each, models of their own, no communication at all, each
  on all the samples: the ceiling for two processes on this machine.

Rank 0 writes every phase's samples/s per round to ``--out``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from common import same_process_parser  # noqa: E402

PHASES = ("2x1", "1x2", "1x1", "independent")


def main(argv: list[str] | None = None) -> int:
    p = same_process_parser(__doc__, rounds=6)
    args = p.parse_args(argv)
    import monai  # here, before the deep imports below (see bare_loop.py)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader

    from medic.config import TrainConfig
    from medic.train.data.sets import build_dataset
    from medic.train.models import build_loss, build_model, build_optimizer
    from medic.train.data.sets import ResumableSampler

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world != 2:
        print("scaling_ab.py: run it under torchrun --nproc_per_node 2", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    cfg = TrainConfig(batch_size=args.batch_size, num_samples=args.num_samples, image_size=args.image_size).validate()
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg)
    loss_fn = build_loss()
    shard = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    whole = ResumableSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed + rank)
    loaders = {"shard": DataLoader(dataset, batch_size=cfg.batch_size, sampler=shard, num_workers=0),
               "whole": DataLoader(dataset, batch_size=cfg.batch_size, sampler=whole, num_workers=0)}

    def fresh():
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, in_channels=dataset[0][0].shape[0])
        return model, build_optimizer(model, cfg)

    ddp_model, ddp_opt = fresh()
    ddp_model = DDP(ddp_model)
    own_model, own_opt = fresh()  # rank 0's single-process model and each rank's independent one

    def epoch(model, optimizer, loader) -> int:
        n = 0
        for images, masks in loader:
            loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += images.shape[0]
        return n

    rates: dict[str, list[float]] = {ph: [] for ph in PHASES}
    idle_cpu: list[float] = []  # rank 1's CPU seconds per wall second while rank 0 ran alone
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        shard.set_epoch(r)
        whole.set_epoch(r)
        for phase in PHASES[r % len(PHASES):] + PHASES[:r % len(PHASES)]:
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            samples = 0
            if phase == "2x1":
                samples = epoch(ddp_model, ddp_opt, loaders["shard"])
            elif phase == "independent":
                samples = epoch(own_model, own_opt, loaders["whole"])
            elif rank == 0:
                torch.set_num_threads(2 if phase == "1x2" else 1)
                samples = epoch(own_model, own_opt, loaders["whole"])
                torch.set_num_threads(1)
            seconds, seconds_cpu = time.perf_counter() - t0, 0.0
            if phase in ("1x2", "1x1"):
                dist.barrier()  # rank 1 waits here for the whole phase
                if rank == 1:
                    seconds, seconds_cpu = time.perf_counter() - t0, time.process_time() - c0
            # every rank's samples and seconds, to rank 0
            mine = torch.tensor([float(samples), seconds, seconds_cpu], dtype=torch.float64)
            both = [torch.zeros_like(mine) for _ in range(world)]
            dist.all_gather(both, mine)
            if r == 0:
                continue
            if phase == "2x1":  # DDP keeps the ranks in step: the slower rank's time is the phase's
                rates[phase].append(sum(float(t[0]) for t in both) / max(float(t[1]) for t in both))
            elif phase == "independent":
                rates[phase].append(sum(float(t[0]) / float(t[1]) for t in both))
            else:
                rates[phase].append(float(both[0][0]) / float(both[0][1]))
                idle_cpu.append(float(both[1][2]) / float(both[1][1]))
    if rank == 0 and args.out:
        Path(args.out).write_text(json.dumps({"samples_per_s": rates, "idle_rank_cpu": idle_cpu,
                                              "num_samples": len(dataset), "batch_size": cfg.batch_size,
                                              "image_size": cfg.image_size, "rounds": args.rounds,
                                              "monai": monai.__version__}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from medic.train.launch.roles import end_process  # a rank ends as medic's own ranks do
    end_process(main)
