"""A dataset plug-in whose samples take a known time to load (telemetry tests)."""

import time

import torch

DELAY_S = 0.01


class SlowSquares(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int):
        self.masks = torch.zeros(n, 1, size, size, dtype=torch.long)
        for i in range(n):
            self.masks[i, 0, i % (size // 2):i % (size // 2) + size // 3, 2:2 + size // 3] = 1
        self.images = self.masks.float() + 0.1 * torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        time.sleep(DELAY_S)
        return self.images[i], self.masks[i]


def slow_squares(cfg):
    return SlowSquares(cfg.num_samples, cfg.image_size)
