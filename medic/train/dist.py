"""Rank facts and the few collectives the trainer needs.

Rank facts come from torchrun's environment, so they are right before the process group exists
(and are 0/1 for a plain single process). Every collective here is called by every rank; callers
never put one inside ``if is_main``.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medic.errors import MedicError


@dataclass(frozen=True)
class Ranks:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks() -> Ranks:
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise MedicError("device 'cuda' was asked for but CUDA is not available; use --device cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(r: Ranks, device: torch.device, timeout_s: float):
    """Join the process group (nccl on CUDA, gloo on CPU). Returns a gloo group for the per-step
    control flags: on CUDA this keeps them off the device, so agreeing on a stop costs no
    host-device sync."""
    if not r.distributed:
        return None
    timeout = datetime.timedelta(seconds=timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timeout, **kwargs)
    return dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, group=None) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


def broadcast_object(obj, src: int = 0):
    """Send a small picklable object from ``src`` to every rank (through a byte tensor, so the
    same call works on gloo and nccl)."""
    if not dist.is_initialized():
        return obj
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    if dist.get_rank() == src:
        payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)
        size = torch.tensor([payload.numel()], dtype=torch.long, device=device)
    else:
        size = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(size, src)
    if dist.get_rank() != src:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src)
    return pickle.loads(payload.cpu().numpy().tobytes()) if dist.get_rank() != src else obj


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
