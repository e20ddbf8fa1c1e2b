"""Plug-ins that fail on purpose, for the fault-injection tests (``tests/test_faults_*.py``).

    --dataset faulty:dataset   small synthetic discs-on-noise set (no MONAI needed); on the ranks
                               in FAULTY_FAIL_RANKS it raises once FAULTY_FAIL_AFTER samples
                               have been read by this process; each read takes
                               FAULTY_READ_DELAY seconds (a slow disk), which widens the
                               windows the tests aim their signals and kills at
    --model faulty:model       a two-layer conv net; on the ranks in FAULTY_NONFINITE_RANKS its
                               logits become NaN (FAULTY_NONFINITE=nan) or huge, so that the
                               Dice+CE loss is +Inf (FAULTY_NONFINITE=inf), at the training steps
                               listed in FAULTY_NONFINITE_STEPS (1-based, counted per process)

Both write a line to FAULTY_MARKER (when set) at the moment they misbehave, so a test can
time how long the job takes to react. Ranks default to all; FAULTY_WIDTH sets the conv width
(so one checkpoint can be made not to fit another run's model).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _ranks(name: str) -> set[int] | None:
    text = os.environ.get(name, "")
    return {int(x) for x in text.split(",") if x.strip()} if text else None


def _selected(name: str) -> bool:
    chosen = _ranks(name)
    return chosen is None or _rank() in chosen


def _mark(what: str) -> None:
    marker = os.environ.get("FAULTY_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{time.time():.3f} rank={_rank()} {what}\n")


class Discs(torch.utils.data.Dataset):
    """Bright discs on noise with their masks; sample i depends only on (seed, i)."""

    def __init__(self, n: int, size: int, seed: int):
        yy, xx = np.mgrid[:size, :size]
        images, masks = [], []
        for i in range(n):
            rs = np.random.RandomState(seed * 7919 + i)
            mask = np.zeros((size, size), bool)
            for _ in range(3):
                cy, cx = rs.randint(size // 4, 3 * size // 4, 2)
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rs.randint(2, max(3, size // 6)) ** 2
            images.append(mask + rs.rand(size, size) * 0.5)
            masks.append(mask)
        self.images = torch.tensor(np.stack(images)[:, None], dtype=torch.float32)
        self.masks = torch.tensor(np.stack(masks)[:, None], dtype=torch.int64)
        self.fail_after = int(os.environ.get("FAULTY_FAIL_AFTER", "-1"))
        self.fail_here = self.fail_after >= 0 and _selected("FAULTY_FAIL_RANKS")
        self.reads = 0
        self.delay = float(os.environ.get("FAULTY_READ_DELAY", "0"))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail_here and self.reads > self.fail_after:
            _mark("dataset raises")
            raise RuntimeError(f"injected data failure on rank {_rank()} after {self.fail_after} samples")
        return self.images[i], self.masks[i]


def dataset(cfg):
    return Discs(cfg.num_samples, cfg.image_size, cfg.seed)


class Net(nn.Module):
    def __init__(self, classes: int, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, classes, 1))
        self.steps = 0
        text = os.environ.get("FAULTY_NONFINITE_STEPS", "")
        self.bad_steps = {int(x) for x in text.split(",") if x.strip()} if _selected("FAULTY_NONFINITE_RANKS") else set()
        self.kind = os.environ.get("FAULTY_NONFINITE", "nan")

    def forward(self, x):
        logits = self.body(x)
        if not self.training:
            return logits
        self.steps += 1
        if self.steps not in self.bad_steps:
            return logits
        _mark(f"{self.kind} logits at step {self.steps}")
        if self.kind == "inf":
            # finite logits so large that cross-entropy overflows: the loss is +Inf, not NaN
            offset = torch.zeros(logits.shape[1], device=logits.device)
            offset[-1] = 3e38
            return logits + offset.view(1, -1, 1, 1)
        return logits * float("nan")


def model(cfg):
    return Net(cfg.num_classes, int(os.environ.get("FAULTY_WIDTH", "8")))

