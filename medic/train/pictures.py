"""The best epoch's pictures of volumes (rank 0): a PNG of the slice through the largest
foreground of a few validation cases (image, ground truth, prediction), and every validation
case's predicted mask as NIfTI on the case's own grid and affine, for ITK-SNAP or 3D Slicer
(each process writes its own shard's). Both come from the predictions the validation made.

    results/<id>/best_epoch_N.png
    results/<id>/best_masks/<case>.nii.gz     (replaced at each new best)
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from medic.store.files import write_atomic
from medic.train.infer import to_source
from medic.train.save import save_predictions


def largest_foreground_slice(label: np.ndarray) -> int:
    """The index along the last axis of the slice with the most foreground (the middle if none)."""
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(counts.argmax()) if counts.any() else label.shape[-1] // 2


def write_mask(path: Path, mask: np.ndarray, like: str) -> None:
    """``mask`` as NIfTI with the affine of the file ``like``; as PNG when ``path`` is one (MONAI
    reads a picture's columns first, so it is transposed back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith(".png"):
        from PIL import Image
        write_atomic(path, lambda f: Image.fromarray(mask.astype(np.uint8).T).save(f, format="PNG"))
        return
    import nibabel as nib
    source = nib.load(like)
    out = nib.Nifti1Image(mask.astype(np.uint8), source.affine)
    out.set_qform(source.affine, code=1)
    out.set_sform(source.affine, code=1)
    data = out.to_bytes()
    write_atomic(path, lambda f: f.write(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data))


def picture_row(image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """One case of the best epoch's picture: a 2D case as it is, a volume's slice of most foreground."""
    if label.ndim == 3:
        k = largest_foreground_slice(label)
        return image[..., k], label[..., k], pred[..., k]
    return image, label, pred


def write_best_masks(folder: Path, cases, pre, records: list[dict]) -> None:
    """The masks a validation predicted (``cases``: (case info, uint8 classes) of this process's
    shard), each mapped back onto its case's own grid and affine (MONAI's ``Invertd``, as
    ``medic predict`` does), as ``best_masks/<case>.nii.gz``; only for NIfTI inputs."""
    for info, classes in cases:
        record = records[info["index"]]
        first = record["image"] if isinstance(record["image"], str) else record["image"][0]
        if first.lower().endswith((".nii", ".nii.gz")):
            source = to_source(classes, info["meta"], info["ops"], pre)
            write_mask(folder / "best_masks" / f"{record['case']}.nii.gz", source, first)


def save_best_picture(folder: Path, epoch: int, rows, title: str) -> None:
    """``results/<id>/best_epoch_N.png`` from the validation's picture rows."""
    if rows:
        images, masks, preds = ([r[n] for r in rows] for n in range(3))
        save_predictions(folder / f"best_epoch_{epoch}.png", images, masks, preds, title)
