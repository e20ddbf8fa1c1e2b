"""The default model (a MONAI 2D UNet) and the loss, or the user's model plug-in."""

from __future__ import annotations

import torch
from torch import nn

from medic.config import TrainConfig
from medic.errors import MedicError


def build_model(cfg: TrainConfig, in_channels: int) -> nn.Module:
    if cfg.model:
        from medic.train.plugins import load_plugin
        model = load_plugin(cfg.model, "model")(cfg)
        if not isinstance(model, nn.Module):
            raise MedicError(f"--model {cfg.model!r} returned {type(model).__name__}, not an nn.Module")
        return model
    from monai.networks.nets import UNet
    return UNet(spatial_dims=3 if cfg.spatial_dims == "3" else 2, in_channels=in_channels, out_channels=cfg.num_classes,
                channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam at ``cfg.lr``, with torch's fused kernel (one pass over all parameters: about a third
    of the per-parameter loop's time per step on CPU) where torch has one for the parameters'
    device and dtype, else the plain loop. Same update rule either way."""
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def build_loss() -> nn.Module:
    """Dice + cross-entropy, per sample then averaged: the loss of a batch is the mean of its
    samples' losses, so a global batch split over ranks has the same loss as in one process."""
    from monai.losses import DiceCELoss
    return DiceCELoss(to_onehot_y=True, softmax=True)


def make_scheduler(cfg, optimizer):
    """The LR schedule of ``--lr_scheduler`` (None: a constant rate)."""
    if cfg.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    if cfg.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=cfg.monitor_direction, factor=cfg.lr_gamma)
    return None
