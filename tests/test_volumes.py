"""3D volumes in the Decathlon and nnU-Net layouts: the checks before the start, real training
(2 processes, 1×N = 2×N/2, resume), the best epoch's masks, and ``medic predict``."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _train_helpers import only_run_id, read_csv, train
from _volume_helpers import AFFINE, SHAPE, make_decathlon, make_nnunet, save, volume
from conftest import PY, child_env

from medic.config import TrainConfig
from medic.errors import MedicError
from medic.train.data.layouts import check_layout, default_patch, plan_volumes, read_layout

QUICK = ["--batch_size", "2", "--log_interval", "1", "--lr", "0.01"]


def test_decathlon_layout_is_read_with_its_labels_and_ras_shapes(tmp_path):
    layout = check_layout(read_layout(make_decathlon(tmp_path / "d", n=2)))
    assert layout.kind == "decathlon" and layout.label_names == ["background", "tumour"]
    assert [c.name for c in layout.cases] == ["case_000", "case_001"] and layout.modalities == ["MRI"]
    assert layout.shapes == [SHAPE, SHAPE] and layout.zooms[0] == pytest.approx((1.5, 1.2, 2.5))
    assert default_patch(layout.shapes) == [32, 32, 16]
    assert default_patch([(200, 97, 150), (120, 130, 40)]) == [96, 96, 32]


def test_nnunet_layout_settles_classes_dims_patch_and_normalisation(tmp_path):
    cfg = TrainConfig(data=str(make_nnunet(tmp_path / "n", n=2)))
    layout = plan_volumes(cfg, explicit=set())
    assert layout.kind == "nnunet" and layout.label_names == ["background", "organ", "tumour"]
    assert [len(c.images) for c in layout.cases] == [2, 2]
    assert (cfg.num_classes, cfg.spatial_dims, cfg.patch_size, cfg.normalize) == (3, "3", "32 32 16", "zscore")
    with pytest.raises(MedicError, match="--num_classes 2 disagrees with dataset.json, which lists 3 labels"):
        plan_volumes(TrainConfig(data=cfg.data, num_classes=2), explicit={"num_classes"})
    ct = TrainConfig(data=cfg.data, spacing="3 2.4 5")
    meta = json.loads((tmp_path / "n" / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (tmp_path / "n" / "dataset.json").write_text(json.dumps(meta))
    plan_volumes(ct)
    assert ct.normalize == "ct" and ct.patch_size == "16 16 8"  # 20 x 18 x 10 voxels after resampling


def edit_json(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def shape_mismatch(root):
    save(root / "labelsTr" / "case_001.nii.gz", volume(1, (40, 36, 18))[1])


def bad_label_values(root):
    label = volume(2, SHAPE)[1]
    label[0, 0, 0] = 7
    save(root / "labelsTr" / "case_002.nii.gz", label)


def listed_but_missing(root):
    (root / "imagesTr" / "case_003.nii.gz").unlink()


def four_d_image(root):
    save(root / "imagesTr" / "case_001.nii.gz", np.stack([volume(1, SHAPE)[0]] * 2, axis=-1))


def patch_too_large(root):
    pass  # the flag does it


def nnunet_channel_missing(root):
    (root / "imagesTr" / "case_002_0001.nii.gz").unlink()


def nnunet_ignore_label(root):
    edit_json(root, labels={"background": 0, "organ": 1, "tumour": 2, "ignore": 3})


def nnunet_regions(root):
    edit_json(root, labels={"background": 0, "whole": [1, 2], "tumour": 2}, regions_class_order=[1, 2])


def corrupt_header(root):
    (root / "labelsTr" / "case_000.nii.gz").write_bytes(b"not a volume at all")


@pytest.mark.parametrize("layout, damage, flags, words", [
    ("decathlon", shape_mismatch, [], "case case_001: image case_001.nii.gz (40, 36, 20) and label case_001.nii.gz "
                                      "(40, 36, 18) differ in shape"),
    ("decathlon", bad_label_values, [], "case case_002: label values [7] are not in dataset.json's labels 0..1"),
    ("decathlon", listed_but_missing, [], "case case_003: image"),
    ("decathlon", four_d_image, [], "case case_001: image case_001.nii.gz is 4D (40, 36, 20, 2) where a 3D volume"),
    ("decathlon", patch_too_large, ["--patch_size", "48", "32", "16"],
     "--patch_size 48 32 16 is larger than 4 volumes (RAS order): case case_000 40 x 36 x 20, case case_001"),
    ("decathlon", corrupt_header, [], "case case_000: cannot read"),
    ("nnunet", nnunet_channel_missing, [], "case case_002: channel 0001 (T2) is missing"),
    ("nnunet", nnunet_ignore_label, [], "the 'ignore' label is not supported yet"),
    ("nnunet", nnunet_regions, [], "region-based labels (whole) are not supported yet"),
    ("nnunet", None, ["--num_classes", "2"], "--num_classes 2 disagrees with dataset.json, which lists 3 labels"),
])
def test_bad_input_is_one_line_naming_the_case_and_writes_nothing(tmp_path, layout, damage, flags, words):
    data = (make_decathlon if layout == "decathlon" else make_nnunet)(tmp_path / "data")
    if damage:
        damage(data)
    project = tmp_path / "project"
    project.mkdir()
    proc = subprocess.run([PY, "-m", "medic.cli", "train", "--data", str(data), *flags], cwd=project,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medic: error: ") and words in lines[0], proc.stderr
    assert list(project.iterdir()) == []


def nifti(path: Path):
    img = nib.load(str(path))
    return img.shape, img.affine, np.asarray(img.dataobj)


@pytest.mark.slow
def test_nnunet_two_processes_equal_one_and_a_resumed_run_and_predict_round_trips(tmp_path):
    """2 processes × batch 1 = 1 process × batch 2 for 1 epoch, then resumed for the 2nd, in 3D
    (patches seeded by case and epoch, not by rank or position): epoch 1 compares the process
    counts, epoch 2 the resume as well (a straight 1-process run is the 2-process run's equal by
    epoch 1's rule); validation every 2nd epoch; the 2-process run's masks and ``medic predict``
    keep each input's shape and affine."""
    data = make_nnunet(tmp_path / "data", n=5)
    two, resumed = tmp_path / "two", tmp_path / "resumed"
    for folder in (two, resumed):
        folder.mkdir()
    common = ["--data", str(data), "--val_fraction", "0.2", "--val_interval", "2", "--log_batch_metrics",
              "--lr", "0.01", "--log_interval", "1", "--seed", "1"]
    train(resumed, *common, "--batch_size", "2", "--epochs", "1")
    train(resumed, "--resume", "latest", "--epochs", "2")
    proc = subprocess.run([PY, "-m", "medic.cli", "train", "--nproc_per_node", "2", *common, "--batch_size", "1",
                           "--epochs", "2"], cwd=two, env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = only_run_id(two)
    header, e2 = read_csv(two / "metrics" / f"epoch_metrics_{run_id}.csv")
    _, er = read_csv(resumed / "metrics" / f"epoch_metrics_{only_run_id(resumed)}.csv")
    per_class = ["Val_Dice_organ", "Val_Dice_tumour"]  # the names of dataset.json
    assert header[9:13] == ["Val_Loss", "Val_Dice", *per_class]
    assert [r["Val_Dice"] == "" for r in e2] == [True, False]  # every 2nd epoch
    for b, c in zip(e2, er, strict=True):
        for col in ("Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Val_Loss", "Val_Dice", *per_class):
            assert b[col] == c[col] or float(b[col]) == pytest.approx(float(c[col]), abs=2e-5), col
    side = json.loads((two / "metrics" / f"run_{run_id}.json").read_text())
    assert side["labels"] == ["background", "organ", "tumour"] and side["world_size"] == 2
    assert side["config"]["patch_size"] == "32 32 16" and side["config"]["spatial_dims"] == "3"
    results = two / "results" / run_id
    assert list(results.glob("best_epoch_*.png"))
    masks = sorted((results / "best_masks").glob("*.nii.gz"))
    assert len(masks) == 1 and masks[0].name in {f"case_{i:03d}.nii.gz" for i in range(5)}  # 1 validation case
    shape, affine, values = nifti(masks[0])
    assert shape == SHAPE and np.allclose(affine, AFFINE) and set(np.unique(values)) <= {0, 1, 2}

    inputs = tmp_path / "new"
    inputs.mkdir()
    for c in range(2):
        (inputs / f"scan_{c:04d}.nii.gz").write_bytes((data / "imagesTr" / f"case_004_{c:04d}.nii.gz").read_bytes())
    out = tmp_path / "masks"
    proc = subprocess.run([PY, "-m", "medic.cli", "predict", "--run", run_id, "--input", str(inputs),
                           "--output", str(out)], cwd=two, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/1] scan:" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["predict.json", "scan.nii.gz"]
    shape, affine, values = nifti(out / "scan.nii.gz")
    assert shape == SHAPE and np.allclose(affine, AFFINE) and values.dtype == np.uint8
    again = subprocess.run([PY, "-m", "medic.cli", "predict", "--input", str(inputs), "--output", str(out)],
                           cwd=two, env=child_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds scan.nii.gz" in again.stderr
    assert nifti(out / "scan.nii.gz")[2].tobytes() == values.tobytes()


@pytest.mark.slow
def test_a_corrupt_volume_fails_the_run_naming_the_case(tmp_path):
    data = make_decathlon(tmp_path / "data", n=2)
    path = data / "imagesTr" / "case_001.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:40_000]))  # header intact, data cut
    project = tmp_path / "project"
    project.mkdir()
    proc = train(project, "--data", str(data), "--epochs", "1", "--cache_rate", "0", *QUICK, check=False)
    assert proc.returncode == 2 and "case case_001: cannot be read" in proc.stderr, proc.stderr[-2000:]
    side = json.loads(next((project / "metrics").glob("run_*.json")).read_text())
    assert side["status"] == "failed" and "case_001" in side["message"]
    cached = tmp_path / "cached"  # the default --cache_rate 1.0 reads every case before any file is written
    cached.mkdir()
    proc = train(cached, "--data", str(data), "--epochs", "1", *QUICK, check=False)
    assert proc.returncode == 2 and "case case_001: cannot be read" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not list((cached / "metrics").glob("*.csv"))


def test_predict_groups_channel_files_into_one_case_named_like_the_input(tmp_path):
    from medic.train.predict import group_inputs
    for name in ("b_0000.nii.gz", "b_0001.nii.gz", "a.nii.gz", "c.nii", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [(case, [p.name for p in files], out) for case, files, out in group_inputs(tmp_path)] == [
        ("a", ["a.nii.gz"], "a.nii.gz"), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"], "b.nii.gz"), ("c", ["c.nii"], "c.nii")]
    with pytest.raises(MedicError, match="does not exist"):
        group_inputs(tmp_path / "nothing")


def test_the_built_in_data_and_the_default_model_in_3d():
    import torch

    from medic.train.data.sets import SyntheticSegmentation
    from medic.train.models import build_loss, build_model
    cfg = TrainConfig(spatial_dims="3", image_size=32, num_samples=2)
    ds = SyntheticSegmentation(cfg.num_samples, cfg.image_size, cfg.num_classes, cfg.seed, spatial_dims=3)
    image, mask = ds[0]
    assert image.shape == mask.shape == (1, 32, 32, 32) and set(mask.unique().tolist()) == {0, 1}
    assert ds.label_names == ["background", "class_1"]
    logits = build_model(cfg, in_channels=1)(image[None])
    assert logits.shape == (1, 2, 32, 32, 32)
    assert torch.isfinite(build_loss()(logits, mask[None]))


ALLOCATIONS = r"""
import ctypes, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KB pages whatever the machine's THP setting
import torch
from medic.train.data import heap

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def churn():  # a training step's buffers: allocated, written, freed, 20 times
    before = faults()
    for _ in range(20):
        torch.ones(1 << 20)  # 4 MB
    return faults() - before

heap.return_freed_buffers()  # as while the cache fills
churn()
filling = churn()
heap.keep_working_buffers()  # once it is full
churn()
print(filling, churn())
"""


def test_step_buffers_are_reused_once_the_cache_is_full():
    """While the cache fills, freed buffers go back to the system (each new one is fresh pages,
    ~1000 faults per 4 MB); afterwards a step's buffers are reused from the heap."""
    proc = subprocess.run([PY, "-c", ALLOCATIONS], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    filling, training = map(int, proc.stdout.split())
    assert filling >= 20 * 900, filling  # each 4 MB block mapped afresh
    assert training < 2000, training     # the same heap memory again
