"""The best epoch's pictures of volumes (rank 0): a PNG of the slice through the largest
foreground of a few validation cases (image, ground truth, prediction), and every validation
case's predicted mask as NIfTI on the case's own grid and affine, for ITK-SNAP or 3D Slicer.

    results/<id>/best_epoch_N.png
    results/<id>/best_masks/<case>.nii.gz     (replaced at each new best)
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from medic.store.files import write_atomic
from medic.train.infer import predict_volume
from medic.train.save import save_predictions

PICTURE_CASES = 4


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


@torch.no_grad()
def save_volume_snapshot(volumes, model: torch.nn.Module, folder: Path, epoch: int, device: torch.device) -> None:
    cfg, val = volumes.cfg, volumes.val
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for j, i in enumerate(val.indices):
        record = val.records[i]
        out = predict_volume(model, volumes.pre, dict(record), cfg, device)
        first = record["image"] if isinstance(record["image"], str) else record["image"][0]
        if first.lower().endswith((".nii", ".nii.gz")):
            write_mask(folder / "best_masks" / f"{record['case']}.nii.gz", out["source"], first)
        if j < PICTURE_CASES:
            label = out["label"][0].numpy()
            if label.ndim == 3:
                k = largest_foreground_slice(label)
                rows.append((out["image"][0, ..., k].numpy(), label[..., k], out["pred"][..., k].numpy()))
            else:
                rows.append((out["image"][0].numpy(), label, out["pred"].numpy()))
    if rows:
        images, masks, preds = ([r[n] for r in rows] for n in range(3))
        save_predictions(folder / f"best_epoch_{epoch}.png", images, masks, preds,
                         f"Run {folder.name}, epoch {epoch} (new best): slice of most foreground")
