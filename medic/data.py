"""Data: the built-in synthetic segmentation set, a folder of image/mask files, or a plug-in."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from medic.config import TrainConfig
from medic.errors import MedicError


class SyntheticSegmentation(Dataset):
    """Deterministic 2D images of bright discs on noise, with their masks (MONAI's
    ``create_test_image_2d``). Sample ``i`` depends only on (seed, i), so every rank builds the
    same set without talking to the others."""

    def __init__(self, num_samples: int, image_size: int, num_classes: int = 2, seed: int = 0):
        from monai.data.synthetic import create_test_image_2d
        images, masks = [], []
        for i in range(num_samples):
            rs = np.random.RandomState((seed * 1_000_003 + i) % 2**32)
            im, seg = create_test_image_2d(
                image_size, image_size, num_objs=max(2, image_size // 16), rad_max=max(5, image_size // 6),
                rad_min=max(2, image_size // 24), noise_max=0.5, num_seg_classes=num_classes - 1,
                random_state=rs)
            images.append(im)
            masks.append(seg)
        self.images = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        self.masks = torch.from_numpy(np.stack(masks)[:, None].astype(np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


class FolderSegmentation(Dataset):
    """``images/`` and ``masks/`` of matching names, read once with MONAI's loaders, scaled to
    [0, 1], resized to ``image_size`` (masks with nearest neighbour)."""

    def __init__(self, root: str, image_size: int, num_classes: int):
        from monai.transforms import Resize, ScaleIntensity
        from medic.folders import pairs, read_array
        resize_img = Resize((image_size, image_size), mode="bilinear")
        resize_mask = Resize((image_size, image_size), mode="nearest")
        scale = ScaleIntensity()
        images, masks = [], []
        for image_path, mask_path in pairs(root):
            img = torch.as_tensor(read_array(image_path).astype(np.float32))[None]
            mask = read_array(mask_path)
            values = np.unique(mask)
            if num_classes == 2 and len(values) <= 2:
                mask = (mask > 0).astype(np.int64)  # 0/1, 0/255, False/True all mean background/object
            elif values.min() < 0 or values.max() >= num_classes or not np.allclose(values, values.round()):
                raise MedicError(f"{mask_path.name}: mask values {values[:8].tolist()} are not class "
                                 f"indices 0..{num_classes - 1} (set --num_classes)")
            images.append(_plain(scale(resize_img(img))).float())
            masks.append(_plain(resize_mask(torch.as_tensor(mask.astype(np.float32))[None])).round().long())
        self.images = torch.stack(images)
        self.masks = torch.stack(masks)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


def _plain(t) -> torch.Tensor:
    """MONAI transforms return MetaTensors; training wants plain tensors."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def build_dataset(cfg: TrainConfig) -> Dataset:
    if cfg.dataset:
        from medic.plugins import load_plugin
        ds = load_plugin(cfg.dataset, "dataset")(cfg)
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise MedicError(f"--dataset {cfg.dataset!r} returned {type(ds).__name__}, not a Dataset")
        if len(ds) == 0:
            raise MedicError(f"--dataset {cfg.dataset!r} returned an empty dataset")
        return ds
    if cfg.data:
        return FolderSegmentation(cfg.data, cfg.image_size, cfg.num_classes)
    return SyntheticSegmentation(cfg.num_samples, cfg.image_size, cfg.num_classes, cfg.seed)


def split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """A seeded train/validation split (the same on every rank)."""
    if val_fraction <= 0:
        return ds, None
    n = len(ds)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise MedicError(f"val_fraction {val_fraction} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(ds, sorted(order[n_val:])), Subset(ds, sorted(order[:n_val]))
