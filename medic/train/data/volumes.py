"""Volumes of a Decathlon or nnU-Net data set, through MONAI's transforms.

    preprocess   load (with the affine) → channels first → orient to RAS → resample to --spacing
                 → normalise (z-score on the foreground, or the CT window): deterministic, so
                 cached — in memory (--cache_rate) or on disk (--cache_dir); the rest read lazily
    train        a random patch (--patch_size, foreground oversampled 2:1) → flips, 90° turns,
                 intensity scale and shift (--augment); seeded by (seed, epoch, case), so a case
                 gets the same patch whatever the number of processes or loader workers
    validation   whole volumes, one per step, sharded over the ranks (each case counted once),
                 inferred with sliding windows (``infer.sliding_window_logits``)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.transforms import LoadImaged
from torch.utils.data import DataLoader, Dataset

from medic.config import TrainConfig
from medic.errors import MedicError, one_line
from medic.train import dist
from medic.train.data.sets import Data, ResumableSampler, split_indices
from medic.train.data.heap import keep_working_buffers, return_freed_buffers
from medic.train.data.layouts import Layout, read_layout
from medic.train.data.splits import fold_cases, uses_folds

CT_WINDOW = (-175.0, 250.0)  # HU: the soft-tissue window of MONAI's abdominal CT tutorials
FOREGROUND_RATIO = (2.0, 1.0)  # patches centred on foreground : on background


class NamedLoad(LoadImaged):
    """MONAI's loader (with the affine); a file it cannot read is an error naming the case. (A
    MONAI transform, so that ``CacheDataset`` caches what follows it.)"""

    def __call__(self, data, reader=None):
        try:
            return super().__call__(data, reader)
        except Exception as err:  # nibabel, gzip and MONAI's readers raise many types
            raise MedicError(f"case {data.get('case', '?')}: cannot be read "
                             f"({one_line(str(err), tail=True) or type(err).__name__})") from err


def medic_error_in(err: BaseException) -> MedicError | None:
    """The ``MedicError`` that caused ``err`` (MONAI wraps a transform's error in its own)."""
    while err is not None:
        if isinstance(err, MedicError):
            return err
        err = err.__cause__ or err.__context__
    return None


def preprocess(cfg: TrainConfig):
    """The deterministic part: MONAI transforms on {"image", "label"} (the label may be absent)."""
    from monai import transforms as T
    keys = ("image", "label")
    dims = int(cfg.spatial_dims)
    steps = [NamedLoad(keys, image_only=True, allow_missing_keys=True),
             T.EnsureChannelFirstd(keys, allow_missing_keys=True)]
    if dims == 3:
        steps.append(T.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")),
                                   allow_missing_keys=True))
    if cfg.spacing:
        steps.append(T.Spacingd(keys, pixdim=[float(v) for v in cfg.spacing.split()],
                                mode=("bilinear", "nearest"), allow_missing_keys=True))
    kind = cfg.normalize  # "auto" is settled from dataset.json before the start (layouts.plan_volumes)
    if kind in ("zscore", "auto"):
        steps.append(T.NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    elif kind == "ct":
        steps.append(T.ScaleIntensityRanged("image", *CT_WINDOW, 0.0, 1.0, clip=True))
    else:
        steps.append(T.ScaleIntensityd("image", channel_wise=True))
    steps += [T.EnsureTyped("image", dtype=torch.float32),  # labels cached as bytes: a quarter of float32
              T.EnsureTyped("label", dtype=torch.uint8, allow_missing_keys=True)]
    return T.Compose(steps)


def augmentation(cfg: TrainConfig):
    """The random part: a patch with foreground oversampling, then the cheap augmentations."""
    from monai import transforms as T
    keys = ("image", "label")
    patch = cfg.patch
    steps = [T.SpatialPadd(keys, spatial_size=patch),  # only where resampling rounded a size down
             T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=FOREGROUND_RATIO[0],
                                      neg=FOREGROUND_RATIO[1], num_samples=1)]
    if cfg.augment:
        steps += [T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(patch))]
        if patch[0] == patch[1]:
            steps.append(T.RandRotate90d(keys, prob=0.5, spatial_axes=(0, 1)))
        steps += [T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
                  T.RandShiftIntensityd("image", offsets=0.1, prob=0.5)]
    return T.Compose(steps)


def cached(cfg: TrainConfig, records: list[dict], pre):
    """All cases preprocessed: on disk under --cache_dir, else --cache_rate of them in memory."""
    return_freed_buffers()
    from monai.data import CacheDataset, PersistentDataset
    from monai.data.utils import pickle_hashing
    if cfg.cache_dir:
        return PersistentDataset(records, transform=pre, cache_dir=cfg.cache_dir, hash_transform=pickle_hashing)
    return CacheDataset(records, transform=pre, cache_rate=cfg.cache_rate, num_workers=1, progress=False)


def case_seed(seed: int, epoch: int, case: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + case) % 2**31


def plain(t) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


class Cases(Dataset):
    """Some cases of the preprocessed set. Training (``augment`` given): item ``(j, epoch)`` is a
    random patch of case j, seeded by (seed, epoch, case); validation: the whole volume."""

    def __init__(self, base, records: list[dict], indices: list[int], seed: int, augment=None):
        self.base, self.records, self.indices, self.seed, self.augment = base, records, indices, seed, augment

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def case_order(self) -> list[int]:
        """Each item's position in the whole data set (``metrics.dataset_cases``)."""
        return list(self.indices)

    @property
    def case_names(self) -> list[str]:
        """Each item's case name, as ``best_masks/`` names its file."""
        return [str(self.records[i]["case"]) for i in self.indices]

    def load(self, j: int) -> dict:
        i = self.indices[j]
        try:
            return self.base[i]
        except Exception as err:  # a corrupt file is found only when it is read
            raise medic_error_in(err) or MedicError(f"case {self.records[i]['case']}: cannot be preprocessed "
                                                    f"({type(err).__name__}: {one_line(str(err))})") from err

    def __getitem__(self, key):
        j, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.load(j)
        if self.augment is not None:
            self.augment.set_random_state(seed=case_seed(self.seed, epoch, self.indices[j]))
            item = self.augment(item)
            item = item[0] if isinstance(item, list) else item
        return plain(item["image"]).float(), plain(item["label"]).long()


class ValidationCases(Cases):
    """A validation shard: each whole volume with what maps its prediction back onto the case's
    own grid (its index, metadata and the preprocessing's applied operations)."""

    def __getitem__(self, j):
        item = self.load(j)
        image = item["image"]
        info = {"index": self.indices[j], "meta": dict(getattr(image, "meta", {})),
                "ops": list(getattr(image, "applied_operations", []))}
        return plain(image).float(), plain(item["label"]).long(), info


def collate_cases(batch):
    """Images and labels stacked, the cases' infos as a list."""
    images, labels, infos = zip(*batch)
    return torch.stack(images), torch.stack(labels), list(infos)


class EpochSampler(ResumableSampler):
    """The training shard as (case, epoch) pairs, so a case's patch depends on the epoch."""

    def __iter__(self):
        return ((i, self.epoch) for i in super().__iter__())


@dataclass
class VolumeSet:
    """What the best epoch's masks need besides the validation's predictions: the preprocessing
    (to undo it) and the cases' records."""

    cfg: TrainConfig
    layout: Layout
    pre: object
    val: Cases | None


def build_volume_data(cfg: TrainConfig, r: dist.Ranks, device: torch.device) -> Data:
    layout = read_layout(cfg.data)
    records = layout.records()
    pre = preprocess(cfg)
    try:  # --cache_rate > 0 reads and preprocesses the cached cases here
        base = cached(cfg, records, pre)
    except Exception as err:
        raise medic_error_in(err) or MedicError(f"the volumes cannot be preprocessed ({type(err).__name__}: "
                                                f"{one_line(str(err))})") from err
    finally:
        keep_working_buffers()
    train_idx, val_idx = fold_cases(cfg, [r["case"] for r in records], layout.kind) if uses_folds(cfg) else \
        split_indices(len(records), cfg.val_fraction, cfg.seed)
    train_ds = Cases(base, records, train_idx, cfg.seed, augmentation(cfg))
    sampler = EpochSampler(train_ds, num_replicas=r.world_size, rank=r.rank, shuffle=True, seed=cfg.seed,
                           drop_last=False)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    val_ds = val_loader = None
    if val_idx:  # unpadded shards, one whole volume a step: each case counted exactly once
        val_ds = Cases(base, records, val_idx, cfg.seed)
        shard = ValidationCases(base, records, val_idx[r.rank::r.world_size], cfg.seed)
        val_loader = DataLoader(shard, batch_size=1, num_workers=cfg.num_workers, collate_fn=collate_cases)
    data = Data(train_ds, val_ds, sampler, loader, val_loader, in_channels=len(layout.modalities))
    data.label_names = layout.label_names
    data.volumes = VolumeSet(cfg, layout, pre, val_ds)
    train_ds.label_names = layout.label_names
    return data


def build_any_data(cfg: TrainConfig, r: dist.Ranks, device: torch.device) -> Data:
    """Volumes for a Decathlon or nnU-Net data set; else the 2D data of ``data.build_data``."""
    from medic.train.data.sets import build_data
    from medic.train.data.layouts import is_layout
    if cfg.data and is_layout(cfg.data):
        return build_volume_data(cfg, r, device)
    return build_data(cfg, r, device)
