"""Evaluate one checkpoint's validation metrics, in 1 process or under torchrun:
``python tests/_eval_checkpoint.py CKPT OUT.json`` (rank 0 writes OUT.json)."""

from __future__ import annotations

import json
import math
import sys

import torch

from medic.config import TrainConfig
from medic.train import checkpoint as ckpt
from medic.train import dist
from medic.train.data import build_data
from medic.train.metrics import class_names
from medic.train.models import build_loss, build_model
from medic.train.validation import validate


def main(path: str, out: str) -> None:
    r = dist.ranks()
    device = torch.device("cpu")
    dist.init(r, device, 120.0)
    state = ckpt.load(path)
    cfg = TrainConfig.from_dict(state["config"], strict=False)
    data = build_data(cfg, r, device)
    model = build_model(cfg, in_channels=data.in_channels)
    model.load_state_dict(state["model"])
    names = class_names(data.train_ds, cfg.num_classes)
    val = validate(model, data.val_loader, build_loss(), device, cfg.num_classes, names,
                   tuple(cfg.val_metrics.split(",")), cfg.nsd_tolerance)
    if r.is_main:
        cases = val.cases.per_case()
        shown = {k: [[None if math.isnan(x) else float(x) for x in row] for row in v.tolist()]
                 for k, v in cases.items()}
        with open(out, "w") as f:
            json.dump({"world_size": r.world_size, "metrics": val.metrics, "ids": val.cases.ids,
                       "cases": shown}, f)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
