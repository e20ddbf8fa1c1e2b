"""Validation pictures, drawn by ``medic.train.outputs.overlay``: the best epoch's picture (rank 0;
a few validation cases, a volume by its slice with the most foreground: image, ground truth and
prediction over it) with every validation case's predicted mask as NIfTI on the case's own grid
and affine, for ITK-SNAP or 3D Slicer (each process writes its own shard's); and the strip of
every validation (rank 0). All come from the predictions the validation made.

    results/<id>/best_epoch_N.png
    results/<id>/best_masks/<case>.nii.gz     (replaced at each new best)
    results/<id>/strip/epoch_N.png
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from medic.store.files import write_atomic
from medic.train.metrics import class_names
from medic.train.outputs.gate import pause
from medic.train.outputs.overlay import Shown, best_picture, save, strip_picture
from medic.train.sliding import to_source

PICTURE_CASES = 4


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


def write_best_masks(folder: Path, cases, pre, records: list[dict]) -> list[str]:
    """The masks a validation predicted (``cases``: (case info, uint8 classes) of this process's
    shard), each mapped back onto its case's own grid and affine (MONAI's ``Invertd``, as
    ``medic predict`` does), as ``best_masks/<case>.nii.gz``; only for NIfTI inputs. Returns the
    cases written."""
    written = []
    for info, classes in cases:
        pause()  # a writer's job: each case between two training loops
        record = records[info["index"]]
        first = record["image"] if isinstance(record["image"], str) else record["image"][0]
        if first.lower().endswith((".nii", ".nii.gz")):
            source = to_source(classes, info["meta"], info["ops"], pre)
            write_mask(folder / "best_masks" / f"{record['case']}.nii.gz", source, first)
            written.append(record["case"])
    return written


def save_best_picture(folder: Path, epoch: int, rows: list[Shown], label_names: list[str], n_classes: int,
                      title: str, orientation: str = "image") -> None:
    """``results/<id>/best_epoch_N.png`` from the rows the validation kept (``shown``): drawn as
    the strip is, same plane, same colours."""
    save(folder / f"best_epoch_{epoch}.png", best_picture, rows, label_names, n_classes, title, orientation)


def label_names(data, cfg) -> list[str]:
    """The label names by value, background first (``class_N`` where the data set names none)."""
    return ["background"] + class_names(data.train_ds, cfg.num_classes)


def save_validation_strip(results: Path, run_id: str, epoch: int, val, data, cfg) -> None:
    """``results/<id>/strip/epoch_N.png``: the first validation cases, as the best epoch's picture
    shows them (same plane, same colours)."""
    save(results / "strip" / f"epoch_{epoch}.png", strip_picture, val.strip, label_names(data, cfg), cfg.num_classes,
               f"Run {run_id}, epoch {epoch}: validation", orientation(cfg) if data.volumes is not None else "image")


def orientation(cfg) -> str:
    """How a volume data set's slices are shown (``medic.train.outputs.overlay``)."""
    return "ras" if cfg.spatial_dims == "3" else "columns"
