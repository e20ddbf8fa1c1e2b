"""Data: the built-in synthetic segmentation set, a folder of image/mask files, or a plug-in;
split into training and validation, and sharded over the ranks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from medic.config import TrainConfig
from medic.errors import MedicError
from medic.train import dist
from medic.train.data.splits import fold_cases, uses_folds


class SyntheticSegmentation(Dataset):
    """Deterministic 2D images of bright discs on noise, with their masks (MONAI's
    ``create_test_image_2d``). Sample ``i`` depends only on (seed, i), so every rank builds the
    same set without talking to the others. Each sample is made when first read and kept: a rank
    makes only the samples it trains on, and its first step need not wait for the whole set."""

    def __init__(self, num_samples: int, image_size: int, num_classes: int = 2, seed: int = 0,
                 spatial_dims: int = 2):
        self.n, self.size, self.num_classes, self.seed = num_samples, image_size, num_classes, seed
        self.spatial_dims = spatial_dims  # 3: volumes of image_size^3 (a cube's edge)
        self.label_names = ["background"] + [f"class_{c}" for c in range(1, num_classes)]
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def make(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.data.synthetic import create_test_image_2d, create_test_image_3d
        make = create_test_image_3d if self.spatial_dims == 3 else create_test_image_2d
        size = self.size
        rs = np.random.RandomState((self.seed * 1_000_003 + i) % 2**32)
        im, seg = make(
            *[size] * self.spatial_dims, num_objs=max(2, size // 16), rad_max=max(5, size // 6),
            rad_min=max(2, size // 24), noise_max=0.5, num_seg_classes=self.num_classes - 1, random_state=rs)
        return torch.from_numpy(im[None].astype(np.float32)), torch.from_numpy(seg[None].astype(np.int64))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        if i not in self.cache:
            self.cache[i] = self.make(i)
        return self.cache[i]


class FolderSegmentation(Dataset):
    """``images/`` and ``masks/`` of matching names, read once with MONAI's loaders, scaled to
    [0, 1], resized to ``image_size`` (masks with nearest neighbour)."""

    def __init__(self, root: str, image_size: int, num_classes: int):
        from monai.transforms import Resize, ScaleIntensity
        from medic.train.data.folders import pairs, read_array
        resize_img = Resize((image_size, image_size), mode="bilinear")
        resize_mask = Resize((image_size, image_size), mode="nearest")
        scale = ScaleIntensity()
        self.label_names = ["background"] + [f"class_{c}" for c in range(1, num_classes)]
        images, masks = [], []
        self.case_ids = []  # the file names: the per-case validation table names each case by it
        self.case_shapes = []  # as read, before resizing (the sidecar's data fingerprint)
        for image_path, mask_path in pairs(root):
            self.case_ids.append(image_path.name)
            array = read_array(image_path)
            self.case_shapes.append(tuple(array.shape))
            img = torch.as_tensor(array.astype(np.float32))[None]
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
        from medic.train.plugins import load_plugin
        ds = load_plugin(cfg.dataset, "dataset")(cfg)
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise MedicError(f"--dataset {cfg.dataset!r} returned {type(ds).__name__}, not a Dataset")
        if len(ds) == 0:
            raise MedicError(f"--dataset {cfg.dataset!r} returned an empty dataset")
        return ds
    if cfg.data:
        return FolderSegmentation(cfg.data, cfg.image_size, cfg.num_classes)
    return SyntheticSegmentation(cfg.num_samples, cfg.image_size, cfg.num_classes, cfg.seed,
                                 spatial_dims=3 if cfg.spatial_dims == "3" else 2)


def split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """A seeded train/validation split (the same on every rank)."""
    if val_fraction <= 0:
        return ds, None
    train_idx, val_idx = split_indices(len(ds), val_fraction, seed)
    return Subset(ds, train_idx), Subset(ds, val_idx)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Sorted training and validation indices of a seeded split (no validation when 0)."""
    if val_fraction <= 0:
        return list(range(n)), []
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise MedicError(f"val_fraction {val_fraction} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way (after a graceful mid-epoch stop)."""

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return super().__len__() - self.skip


@dataclass
class Data:
    """The loaders of one rank: its shard of the training set, and of the validation set."""

    train_ds: Dataset
    val_ds: Dataset | None
    sampler: ResumableSampler
    loader: DataLoader
    val_loader: DataLoader | None
    in_channels: int
    steps: int = 0  # batches in a whole epoch (fixed: the sampler skips batches when resuming mid-epoch)
    # 3D volumes: the label names (indexed by label value) and what volume validation needs
    label_names: list[str] | None = None
    volumes: object = None

    def __post_init__(self):
        self.steps = self.steps or len(self.loader)


def build_data(cfg: TrainConfig, r: dist.Ranks, device: torch.device) -> Data:
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg)
    train_ds, val_ds = split(dataset, cfg.val_fraction, cfg.seed)
    if uses_folds(cfg):  # --folds/--fold/--splits: the fold's cases instead (medic.train.data.splits)
        names = [str(n) for n in getattr(dataset, "case_ids", range(len(dataset)))]
        train_idx, val_idx = fold_cases(cfg, names)
        train_ds, val_ds = Subset(dataset, train_idx), Subset(dataset, val_idx)
    sampler = ResumableSampler(train_ds, num_replicas=r.world_size, rank=r.rank, shuffle=True,
                               seed=cfg.seed, drop_last=False)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    val_loader = None
    if val_ds is not None:  # unpadded shards: each validation sample counted exactly once
        shard = Subset(val_ds, list(range(r.rank, len(val_ds), r.world_size)))
        val_loader = DataLoader(shard, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return Data(train_ds, val_ds, sampler, loader, val_loader, in_channels=train_ds[0][0].shape[0],
                label_names=getattr(dataset, "label_names", None))


def loader_message(text: str) -> str:
    """A ``MedicError`` raised in a loader worker comes back with the worker's traceback as its
    text; its last line holds the message."""
    if text.startswith("Caught MedicError"):
        return text.strip().splitlines()[-1].split("MedicError: ", 1)[-1]
    return text
