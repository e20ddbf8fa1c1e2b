"""Small generated volumes in the Decathlon and nnU-Net layouts, with a non-identity affine."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (40, 36, 20)
# voxels of 1.5 × 1.2 × 2.5 mm, the first axis flipped (LAS-like), shifted: not the identity
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -12.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])


def volume(i: int, shape=SHAPE, classes: int = 2, seed: int = 0):
    """A noisy volume with a few bright balls, and its label (classes - 1 foreground values)."""
    rs = np.random.RandomState(seed * 1000 + i)
    grid = np.indices(shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for k in range(3):
        centre = [rs.uniform(6, s - 6) for s in shape]
        radius = rs.uniform(3, 6)
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2
        label[ball] = 1 + k % (classes - 1)
    image = label.astype(np.float32) * 100.0 + 40.0 + rs.normal(0, 20.0, shape).astype(np.float32)
    return image, label


def save(path: Path, data: np.ndarray, affine=AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def make_decathlon(root: Path, n: int = 4, shape=SHAPE, modalities=("MRI",)) -> Path:
    """imagesTr/, labelsTr/ and dataset.json of a Decathlon task (several modalities: 4D, channels last)."""
    training = []
    for i in range(n):
        image, label = volume(i, shape)
        if len(modalities) > 1:
            image = np.stack([image * (c + 1) for c in range(len(modalities))], axis=-1)
        name = f"case_{i:03d}.nii.gz"
        save(root / "imagesTr" / name, image)
        save(root / "labelsTr" / name, label)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Task01_Test", "labels": {"0": "background", "1": "tumour"},
            "modality": {str(k): m for k, m in enumerate(modalities)}, "numTraining": n, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_nnunet(root: Path, n: int = 4, shape=SHAPE, channels=("T1", "T2")) -> Path:
    """imagesTr/<case>_000c.nii.gz per channel, labelsTr/<case>.nii.gz, dataset.json (3 labels)."""
    for i in range(n):
        image, label = volume(i, shape, classes=3, seed=1)
        for c in range(len(channels)):
            save(root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz", image + 10.0 * c)
        save(root / "labelsTr" / f"case_{i:03d}.nii.gz", label)
    meta = {"channel_names": {str(k): m for k, m in enumerate(channels)},
            "labels": {"background": 0, "organ": 1, "tumour": 2}, "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
