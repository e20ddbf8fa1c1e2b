"""``medic predict`` seen by a new user: the wrong folder gets the --root hint, a 2D slice given to
a 3D model is one whole line and writes nothing, and predict.json says what made the masks."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
from _train_helpers import read_csv
from _volume_helpers import AFFINE, save, volume
from conftest import PY, child_env


def predict(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", "predict", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_predict_refuses_a_2d_slice_whole_and_records_what_made_the_masks(tmp_path, runs_3d):
    # finished 3D runs that monitor Val_Dice (shared with the figures test; only read here): the
    # newest is the one that predict picks by default
    project, run_id, data = runs_3d.project, runs_3d.second, runs_3d.data

    elsewhere = predict("--input", str(data / "imagesTr"), "--output", "out", cwd=tmp_path)
    assert elsewhere.returncode == 2 and elsewhere.stderr.splitlines() == [
        "medic: error: --run latest: no run with checkpoints in checkpoints "
        "(run this in the project folder or pass --root DIR)"]

    image = volume(0, (32, 32, 16))[0]
    save(tmp_path / "slice" / "slice_07.nii.gz", image[:, :, 7])
    refused = predict("--input", str(tmp_path / "slice"), "--output", str(tmp_path / "out2d"), cwd=project)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"medic: error: case slice_07: slice_07.nii.gz is 2D (32 x 32); the model of "
        f"checkpoints/{run_id}/best_model.pth segments 3D volumes: give 3D input"]
    assert not (tmp_path / "out2d").exists()

    save(tmp_path / "new" / "scan.nii.gz", image)
    done = predict("--input", str(tmp_path / "new"), "--output", str(tmp_path / "out"), "--checkpoint", "last",
                   cwd=project)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predict.json", "scan.nii.gz"]
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["run_id"] == run_id and record["epoch"] == 2
    assert record["checkpoint"] == str(project / "checkpoints" / run_id / "last.pth")
    _, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    best_epoch = max(int(r["Epoch"]) for r in rows if r["Is_Best_Model"] == "True")
    assert record["metric"]["name"] == "Val_Dice" and record["metric"]["best_epoch"] == best_epoch
    assert record["preprocessing"] == {"spatial_dims": "3", "spacing": "", "normalize": "zscore",
                                       "patch_size": "32 32 16", "sw_overlap": 0.5, "num_classes": 3}
    assert record["cases"] == ["scan.nii.gz"] and record["medic_version"]
    mask = nib.load(str(tmp_path / "out" / "scan.nii.gz"))
    assert mask.shape == (32, 32, 16) and np.allclose(mask.affine, AFFINE)
