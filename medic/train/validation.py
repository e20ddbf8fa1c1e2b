"""One validation pass over every rank's shard: the loss, the per-case rows, the epoch's columns.

Validation calls ``predict(images) -> logits`` (the bare model by default), so a sliding-window
predictor for large volumes plugs in without changing anything here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from medic.store import columns as C
from medic.train import dist
from medic.train.metrics import CaseRows, Distances, base_dataset, case_ids, confusion_counts, voxel_size
from medic.train.outputs.overlay import Shown, shown
from medic.train.sliding import classes_of

STRIP_CASES = 3  # validation cases shown in the prediction strip


@dataclass
class Validation:
    """What one validation found: the epoch columns, the gathered per-case rows, and (rank 0)
    the first cases' image, truth and prediction for the strip (``medic.train.outputs.overlay``)."""

    metrics: dict[str, float]
    cases: CaseRows
    strip: list[Shown] = field(default_factory=list)


def spacing_of(loader) -> tuple[float, ...] | None:
    """The voxel spacing in mm when the dataset states one (``dataset.spacing``), else None (pixels)."""
    spacing = getattr(base_dataset(loader.dataset)[0], "spacing", None)
    return tuple(float(s) for s in spacing) if spacing is not None else None


def case_spacings(infos: list, ndim: int) -> list | None:
    """Each volume's voxel size in mm on the grid validated (its affine after orientation and
    resampling), so HD95 and NSD are in mm as ``medic evaluate`` measures them; None for plain
    batches."""
    cases = infos[0] if infos else None
    if not isinstance(cases, list):
        return None
    return [voxel_size(info.get("meta", {}).get("affine"), ndim) if isinstance(info, dict) else None
            for info in cases]


@torch.no_grad()
def validate(model: torch.nn.Module, loader, loss_fn, device: torch.device, num_classes: int,
             names: list[str], val_metrics: tuple[str, ...] = ("dice",), nsd_tolerance: float = 1.0,
             predict: Callable[[torch.Tensor], torch.Tensor] | None = None, keep: Callable | None = None) -> Validation:
    """Val_Loss (per-sample mean), Val_Dice and the per-class columns over all ranks' shards.
    Every rank must call it (the rows are gathered); every rank gets the same result. ``keep``
    (optional) is given each batch's case infos (None for plain batches), images, truth,
    predicted classes and case names: the best epoch's outputs come from them, not from a second
    inference."""
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
        values = distances(pred, masks, counts, case_spacings(infos, pred.dim() - 2)) if distances.which else {}
        rows.add(order[at:at + n], ids[at:at + n], counts, values)
        at += n
        names_of = [strip_name(loader, ids[at - n + i]) for i in range(n)]
        if keep is not None:
            keep(infos[0] if infos else None, images, masks, pred, names_of)
        if len(strip) < STRIP_CASES:  # a volume by its slice of most foreground, as the best epoch's
            strip += [shown(names_of[i], *(t[i, 0].float().cpu().numpy() for t in (images, masks, pred)))
                      for i in range(min(n, STRIP_CASES - len(strip)))]
    loss_sum, n = dist.all_reduce_sum(acc).tolist()
    model.train(was_training)
    cases = rows.gathered()
    return Validation({C.VAL_LOSS: loss_sum / n if n else float("nan"), **cases.summary(names)}, cases, strip)


def strip_name(loader, case_id: str) -> str:
    """A case's name in the strip: its id, or the record's name of a volume data set when the id
    is only a position."""
    records = getattr(loader.dataset, "records", None)
    indices = getattr(loader.dataset, "indices", None)
    if case_id.isdigit() and records is not None and indices is not None:
        return str(records[indices[int(case_id)]].get("case", case_id))
    return case_id
