"""Which cases a run trained on and validated, and what data they were: recorded in the sidecar.

    train_cases / val_cases   the case names, in the data set's order (``metrics.dataset_cases``):
                              a volume set's case names (``Case.name``, as in ``best_masks/``),
                              a 2D folder's image file names, the built-in set's indices
    data_fingerprint          ``sha256`` over ``dataset.json`` and each case's name, shape and
                              file size: two runs that used different data under the same case
                              names differ in it; with ``kind``, ``cases`` and
                              ``dataset_json_sha256``

Reading it costs a file header and a stat per case (no image is decoded for volumes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medic.config import TrainConfig
from medic.train.data.sets import Data
from medic.train.metrics import dataset_cases


def split_record(cfg: TrainConfig, data: Data) -> dict[str, Any]:
    """``train_cases`` and ``val_cases`` (for a run that validates) and ``data_fingerprint``."""
    out: dict[str, Any] = {}
    if data.val_ds is not None:
        out["train_cases"] = dataset_cases(data.train_ds)[1]
        out["val_cases"] = dataset_cases(data.val_ds)[1]
    out["data_fingerprint"] = fingerprint(cfg, data)
    return out


def fingerprint(cfg: TrainConfig, data: Data) -> dict[str, Any]:
    """What identifies the data set (see the module docstring)."""
    from medic.train.data.layouts import header, is_layout, read_layout
    digest = hashlib.sha256()
    meta_hash = None
    rows: list[tuple[str, tuple[int, ...], int]] = []
    if cfg.data and is_layout(cfg.data):
        layout = read_layout(cfg.data)
        kind = layout.kind
        meta = Path(cfg.data) / "dataset.json"
        if meta.is_file():
            meta_hash = hashlib.sha256(meta.read_bytes()).hexdigest()
        for case in layout.cases:
            files = case.images + [case.label]
            rows.append((case.name, header(case.label, case.name)[0], sum(_size(f) for f in files)))
    elif cfg.data:
        kind = "folder"
        from medic.train.data.folders import pairs
        shapes = getattr(_base(data.train_ds), "case_shapes", None) or []
        for i, (image, mask) in enumerate(pairs(cfg.data)):
            rows.append((image.name, tuple(shapes[i]) if i < len(shapes) else (), _size(image) + _size(mask)))
    else:
        kind = "plugin" if cfg.dataset else "builtin"
        base = _base(data.train_ds)
        _, names = dataset_cases(base)
        shape = tuple(base[0][0].shape) if len(base) else ()
        rows = [(name, shape if kind == "builtin" else (), 0) for name in names]
        settings = {"dataset": cfg.dataset} if cfg.dataset else \
            {k: getattr(cfg, k) for k in ("num_samples", "image_size", "num_classes", "seed", "spatial_dims")}
        digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update((meta_hash or "").encode())
    for name, shape, size in rows:
        digest.update(f"{name}\t{'x'.join(map(str, shape))}\t{size}\n".encode())
    return {"kind": kind, "cases": len(rows), "sha256": digest.hexdigest(), "dataset_json_sha256": meta_hash}


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _base(ds):
    from medic.train.metrics import base_dataset
    return base_dataset(ds)[0]
