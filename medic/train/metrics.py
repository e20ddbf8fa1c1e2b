"""Segmentation metrics that do not depend on the number of processes, with stated definitions.

Each validation case gives, for each foreground class, its true positives, false positives and
false negatives (voxel counts), and, when asked, its HD95 and NSD. Those per-case rows are
gathered from every rank and sorted by case, so every case counts once and the result is the
same with 1 process or 8. The per-class value is the mean over the cases in which the class is
present in the ground truth or in the prediction:

- present in either: Dice = 2·TP / (2·TP + FP + FN); a class predicted where the truth has none
  scores 0 (it is not dropped, as MONAI's ``ignore_empty`` would drop it);
- absent from both: the case is left out for that class (never counted as 1, nor as 0);
- absent from every case: the class is NaN, and ``Val_Dice`` (the mean of the defined
  per-class values) leaves it out.

HD95 (MONAI's ``HausdorffDistanceMetric``, 95th percentile) and NSD (``SurfaceDiceMetric``)
follow the same rule. A class in only one of truth and prediction has no finite HD95: it is
capped at the image diagonal, in the same unit (mm from the spacing, pixels without one), and
its NSD is 0. Everything here works on N×C×H×W and on N×C×D×H×W.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from medic.store import columns as C
from medic.train.selection import COLUMN_PREFIX, METRICS, column_safe

CASE_PREFIX = {"dice": "Dice_", "hd95": "HD95_", "nsd": "NSD_"}


def class_names(dataset, num_classes: int) -> list[str]:
    """The foreground classes' names: ``dataset.label_names`` (indexed by label value, the
    background at 0) when the dataset has them, else ``class_1``, ``class_2``, ..."""
    names = getattr(base_dataset(dataset)[0], "label_names", None)
    if names and len(names) >= num_classes:
        return [column_safe(n) for n in list(names)[1:num_classes]]
    return [f"class_{i}" for i in range(1, num_classes)]


def base_dataset(ds) -> tuple[object, list[int]]:
    """The dataset under nested ``Subset``s, and the positions in it of ``ds``'s items."""
    positions = list(range(len(ds)))
    while hasattr(ds, "indices") and hasattr(ds, "dataset"):
        positions = [ds.indices[i] for i in positions]
        ds = ds.dataset
    return ds, positions


def case_ids(loader) -> tuple[list[int], list[str]]:
    """Each item of a (non-shuffled) validation loader: its index in the whole dataset, and its
    name (``dataset_cases``)."""
    return dataset_cases(loader.dataset)


def dataset_cases(ds) -> tuple[list[int], list[str]]:
    """Each item of ``ds``: its position in the whole data set (the order of the per-case rows,
    whatever the number of processes), and its name. A set that names its own items says so
    (``case_order``/``case_names``: the volume sets, by ``Case.name``); under ``Subset``s, the
    whole set's ``case_ids`` (a 2D folder's file names) when it has them, else the index."""
    if hasattr(ds, "case_names") and hasattr(ds, "case_order"):
        return list(ds.case_order), [str(n) for n in ds.case_names]
    base, positions = base_dataset(ds)
    names = getattr(base, "case_ids", None)
    return positions, [str(names[p]) if names is not None else str(p) for p in positions]


@torch.no_grad()
def confusion_counts(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``pred``, ``truth``: N×1×... (or N×...) class indices. Returns N×(C−1)×3 int64: TP, FP, FN
    of each foreground class in each case."""
    # one pass: a per-case confusion matrix (truth × prediction) by bincount, about a fifth of
    # the time of three boolean masks and sums per class; a truth value outside 0..C-1 gets a
    # row of its own, so it still counts as a false positive of the class predicted there
    n = pred.shape[0]
    p, t = pred.reshape(n, -1).long(), truth.reshape(n, -1).long()
    t = torch.where((t < 0) | (t >= num_classes), num_classes, t)
    rows = num_classes + 1
    idx = (torch.arange(n, device=p.device)[:, None] * rows + t) * num_classes + p.clamp(0, num_classes - 1)
    cm = torch.bincount(idx.reshape(-1), minlength=n * rows * num_classes).reshape(n, rows, num_classes)
    tp = torch.diagonal(cm[:, :num_classes], dim1=1, dim2=2)
    out = torch.stack([tp, cm.sum(1) - tp, cm[:, :num_classes].sum(2) - tp], dim=-1)[:, 1:]
    return out.cpu()  # one copy to the host per batch


def case_dice(counts: np.ndarray) -> np.ndarray:
    """Per case and class: 2·TP/(2·TP+FP+FN), NaN where the class is in neither truth nor prediction."""
    tp, fp, fn = (counts[..., i].astype(np.float64) for i in range(3))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def nan_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The mean of the defined (non-NaN) values along ``axis``; NaN where there are none."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    count = ok.sum(axis=axis)
    total = np.where(ok, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def voxel_size(affine, ndim: int) -> tuple[float, ...] | None:
    """The voxel size in mm along each array axis, from an affine (None: no affine)."""
    if affine is None:
        return None
    return tuple(float(v) for v in np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))[:ndim])


class Distances:
    """HD95 and NSD of each case and foreground class with the empty-class rules (MONAI's metrics)."""

    def __init__(self, num_classes: int, which: tuple[str, ...], spacing=None, tolerance: float = 1.0):
        self.num_classes, self.which, self.spacing, self.tolerance = num_classes, which, spacing, tolerance

    def diagonal(self, shape: tuple[int, ...]) -> float:
        spacing = self.spacing if self.spacing is not None else [1.0] * len(shape)
        return math.sqrt(sum((s * float(sp)) ** 2 for s, sp in zip(shape, spacing)))

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, truth: torch.Tensor, counts: torch.Tensor,
                 spacings: list | None = None) -> dict[str, np.ndarray]:
        """Per case and class; ``spacings`` (one voxel size per case, e.g. from each volume's
        affine) measures each case in its own mm, else the data set's ``spacing`` is used."""
        if spacings is not None and any(sp is not None for sp in spacings):
            parts = [Distances(self.num_classes, self.which, sp, self.tolerance)(
                pred[i:i + 1], truth[i:i + 1], counts[i:i + 1]) for i, sp in enumerate(spacings)]
            return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric
        from monai.networks.utils import one_hot
        pred = pred if pred.dim() == truth.dim() and pred.shape[1] == 1 else pred.unsqueeze(1)
        truth = truth if truth.shape[1] == 1 else truth.unsqueeze(1)
        p, t = one_hot(pred.cpu(), self.num_classes), one_hot(truth.cpu(), self.num_classes)
        c = counts.numpy()
        gt, pr = c[..., 0] + c[..., 2] > 0, c[..., 0] + c[..., 1] > 0  # class in truth / in prediction
        both, one = gt & pr, gt ^ pr
        out = {}
        with warnings.catch_warnings():  # "the ground truth of class 1 is all 0": handled below
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)  # MONAI calling its own deprecated argument
            if "hd95" in self.which:
                hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
                v = hd(p, t, spacing=self.spacing).double().numpy()
                out["hd95"] = np.where(both, v, np.where(one, self.diagonal(tuple(truth.shape[2:])), np.nan))
            if "nsd" in self.which:
                nsd = SurfaceDiceMetric([self.tolerance] * (self.num_classes - 1), include_background=False,
                                        reduction="none")
                v = nsd(p, t, spacing=self.spacing).double().numpy()
                out["nsd"] = np.where(both, v, np.where(one, 0.0, np.nan))
        return out


@dataclass
class CaseRows:
    """The per-case rows of one validation, in case order once gathered."""

    order: list[int] = field(default_factory=list)          # index in the whole dataset
    ids: list[str] = field(default_factory=list)            # file name, or the index
    counts: list[np.ndarray] = field(default_factory=list)  # per case: (C−1)×3 TP, FP, FN
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)  # "hd95"/"nsd": per case (C−1)

    def add(self, order: list[int], ids: list[str], counts: torch.Tensor, values: dict[str, np.ndarray]) -> None:
        self.order += order
        self.ids += ids
        self.counts += list(counts.numpy())
        for k, v in values.items():
            self.values.setdefault(k, []).extend(list(v))

    def gathered(self) -> "CaseRows":
        """Every rank's rows, sorted by case: the same on every rank (all ranks must call)."""
        mine = (self.order, self.ids, self.counts, self.values)
        if torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, mine)
        else:
            parts = [mine]
        rows = CaseRows()
        for order, ids, counts, values in parts:
            rows.order += order
            rows.ids += ids
            rows.counts += counts
            for k, v in values.items():
                rows.values.setdefault(k, []).extend(v)
        sort = sorted(range(len(rows.order)), key=rows.order.__getitem__)
        pick = lambda seq: [seq[i] for i in sort]  # noqa: E731
        return CaseRows(pick(rows.order), pick(rows.ids), pick(rows.counts),
                        {k: pick(v) for k, v in rows.values.items()})

    def per_case(self) -> dict[str, np.ndarray]:
        """Cases × classes arrays: ``dice``, ``hd95``, ``nsd`` (NaN where left out), ``gt``, ``pred``."""
        counts = np.stack(self.counts) if self.counts else np.zeros((0, 0, 3), dtype=np.int64)
        out = {"dice": case_dice(counts), "gt": counts[..., 0] + counts[..., 2],
               "pred": counts[..., 0] + counts[..., 1]}
        for k, v in self.values.items():
            out[k] = np.stack(v) if v else np.zeros(counts.shape[:2])
        return out

    def summary(self, names: list[str]) -> dict[str, float]:
        """``Val_Dice`` and the per-class columns: means over the cases where a class is defined."""
        cases = self.per_case()
        out: dict[str, float] = {}
        per_class = {m: nan_mean(cases[m]) if len(self.counts) else np.full(len(names), np.nan)
                     for m in METRICS if m in cases}
        dice = per_class["dice"]
        out[C.VAL_DICE] = float(nan_mean(dice)) if not np.all(np.isnan(dice)) else float("nan")
        for m in METRICS:
            if m in per_class:
                out.update({COLUMN_PREFIX[m] + n: float(v) for n, v in zip(names, per_class[m])})
        return out
