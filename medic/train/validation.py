"""One validation pass over every rank's shard: the loss, the per-case rows, the epoch's columns.

Validation calls ``predict(images) -> logits`` (the bare model by default), so a sliding-window
predictor for large volumes plugs in without changing anything here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from medic.store import columns as C
from medic.train import dist
from medic.train.infer import classes_of
from medic.train.metrics import CaseRows, Distances, base_dataset, case_ids, confusion_counts

STRIP_CASES = 3  # validation cases shown in the prediction strip


@dataclass
class Validation:
    """What one validation found: the epoch columns, the gathered per-case rows, and (rank 0)
    the first cases' image, truth and prediction for the strip."""

    metrics: dict[str, float]
    cases: CaseRows
    strip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def spacing_of(loader) -> tuple[float, ...] | None:
    """The voxel spacing in mm when the dataset states one (``dataset.spacing``), else None (pixels)."""
    spacing = getattr(base_dataset(loader.dataset)[0], "spacing", None)
    return tuple(float(s) for s in spacing) if spacing is not None else None


@torch.no_grad()
def validate(model: torch.nn.Module, loader, loss_fn, device: torch.device, num_classes: int,
             names: list[str], val_metrics: tuple[str, ...] = ("dice",), nsd_tolerance: float = 1.0,
             predict: Callable[[torch.Tensor], torch.Tensor] | None = None, keep: Callable | None = None) -> Validation:
    """Val_Loss (per-sample mean), Val_Dice and the per-class columns over all ranks' shards.
    Every rank must call it (the rows are gathered); every rank gets the same result. ``keep``
    (optional) is given each batch's case infos (None for plain batches), images, truth and
    predicted classes: the best epoch's outputs come from them, not from a second inference."""
    predict = predict or model
    was_training = model.training
    model.eval()
    order, ids = case_ids(loader)
    distances = Distances(num_classes, tuple(m for m in val_metrics if m != "dice"), spacing_of(loader),
                          nsd_tolerance)
    rows, strip = CaseRows(), []
    acc = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, samples
    at = 0
    for images, masks, *infos in loader:  # the bare module: shards differ in length, so no collectives here
        images, masks = images.to(device), masks.to(device)
        logits = predict(images)
        n = images.shape[0]
        acc[0] += loss_fn(logits, masks).double() * n
        acc[1] += n
        pred = classes_of(logits)
        counts = confusion_counts(pred, masks, num_classes)
        values = distances(pred, masks, counts) if distances.which else {}
        rows.add(order[at:at + n], ids[at:at + n], counts, values)
        at += n
        if keep is not None:
            keep(infos[0] if infos else None, images, masks, pred)
        if len(strip) < STRIP_CASES:
            strip += [(middle(images[i, 0]), middle(masks[i, 0]), middle(pred[i, 0]))
                      for i in range(min(n, STRIP_CASES - len(strip)))]
    loss_sum, n = dist.all_reduce_sum(acc).tolist()
    model.train(was_training)
    cases = rows.gathered()
    return Validation({C.VAL_LOSS: loss_sum / n if n else float("nan"), **cases.summary(names)}, cases, strip)


def middle(t: torch.Tensor) -> np.ndarray:
    """A 2D picture of one case: itself, or the middle slice of a volume."""
    while t.dim() > 2:
        t = t[t.shape[0] // 2]
    return t.float().cpu().numpy()
