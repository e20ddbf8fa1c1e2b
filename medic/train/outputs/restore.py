"""A trained run's model for a notebook: ``medic.load_model(run, checkpoint)``."""

from __future__ import annotations

import os

import torch

from medic.config import TrainConfig
from medic.store.paths import Project
from medic.train.predict import find_checkpoint, load_model as load_checkpoint_model


def load_model(run: str = "latest", checkpoint: str = "best", root: str | os.PathLike | None = None,
               device: str = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """The trained ``nn.Module`` of a run, in eval mode, and the run's ``TrainConfig``.

    Args:
        run: a run id, or ``latest`` (the newest run with checkpoints).
        checkpoint: ``best`` (``best_model.pth``), ``last`` (``last.pth``) or a ``.pth`` path.
        root: the project root (default: the working directory).
        device: where the weights go (``cpu``, ``cuda``, ``cuda:1``, ...).

    Returns:
        ``(model, config)``: the model built as the run built it, with the checkpoint's weights.
    """
    path = find_checkpoint(Project.at(root), run, checkpoint)
    cfg, model, _ = load_checkpoint_model(path, torch.device(device))
    return model.eval(), cfg
