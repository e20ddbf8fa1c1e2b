"""Inference on whole images and volumes: the model on sliding windows of the patch size.

Validation and ``medic predict`` both go through ``sliding_window_logits``; without a patch size
(2D images, the built-in data) the model sees the whole input at once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from medic.config import TrainConfig

SW_BATCH = 4  # windows per forward pass


def sliding_window_logits(model: torch.nn.Module, image: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Logits (N × classes × spatial) of ``image`` (N × channels × spatial): windows of
    ``cfg.patch_size`` overlapping by ``cfg.sw_overlap``, blended with Gaussian weights."""
    patch = cfg.patch
    if not patch:
        return model(image)
    from monai.inferers import sliding_window_inference
    out = sliding_window_inference(image, roi_size=patch, sw_batch_size=SW_BATCH, predictor=model,
                                   overlap=cfg.sw_overlap, mode="gaussian")
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def classes_of(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1, keepdim=True)``, the same values, faster: torch's argmax over the
    channel axis of a volume is a strided reduction (on CPU about 12x the time of one comparison
    for two classes), so two classes are one comparison and more an argmax over the last axis."""
    if logits.shape[1] == 2:
        return (logits[:, 1:2] > logits[:, 0:1]).long()  # ties (and the first max) go to class 0, as argmax's
    return logits.movedim(1, -1).contiguous().argmax(-1).unsqueeze(1)


def predictor(model: torch.nn.Module, cfg: TrainConfig):
    """``predict(images) -> logits`` for validation."""
    return lambda images: sliding_window_logits(model, images, cfg)


@torch.no_grad()
def predict_volume(model: torch.nn.Module, pre, record: dict, cfg: TrainConfig, device: torch.device) -> dict:
    """One case through the run's preprocessing (``pre``) and sliding-window inference. Returns
    the preprocessed ``image`` and ``label`` (when the record has one), the prediction ``pred``
    in that space, and ``source``: the prediction mapped back onto the input's own voxel grid
    (MONAI's ``Invertd`` undoes the reorientation and resampling, nearest neighbour)."""
    data = pre(record)
    image = data["image"]
    was_training = model.training
    model.eval()
    logits = sliding_window_logits(model, image.as_tensor()[None].to(device), cfg)
    model.train(was_training)
    pred = classes_of(logits)[:, 0].cpu()  # 1 × spatial: one channel, like the image's
    return {"image": image.as_tensor(), "label": data["label"].as_tensor() if "label" in data else None,
            "pred": pred[0].float(), "source": to_source(pred[0], image.meta, image.applied_operations, pre)}


def to_source(classes: torch.Tensor, meta: dict, operations: list, pre) -> np.ndarray:
    """Class indices (spatial, in the preprocessed space) mapped back onto the input's own voxel
    grid as uint8: MONAI's ``Invertd`` undoes the reorientation and resampling that ``pre``
    applied (``operations``, with the image's ``meta``), nearest neighbour."""
    from monai.data import MetaTensor
    from monai.transforms import Invertd
    pred = MetaTensor(classes[None].float(), meta=dict(meta), applied_operations=list(operations))
    data = {"image": pred, "pred": pred}
    with warnings.catch_warnings():  # 2D pictures: nothing to undo, which MONAI warns about
        warnings.filterwarnings("ignore", message="inverse has been called but no invertible")
        source = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    source = source.as_tensor() if hasattr(source, "as_tensor") else torch.as_tensor(source)
    return source[0].round().to(torch.uint8).numpy()
