"""``medic check`` and the check before a training starts: every data problem at once."""

from __future__ import annotations

import subprocess

import numpy as np
from _volume_helpers import SHAPE, make_decathlon, save, volume
from conftest import PY, child_env

from medic.errors import Problems


def medic(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=60)


def three_problems(root) -> None:
    save(root / "labelsTr" / "case_001.nii.gz", volume(1, (40, 36, 18))[1])     # a shape mismatch
    label = volume(2, SHAPE)[1].astype(np.float32)
    label[0, 0, 0] = 0.5                                                           # a float label
    save(root / "labelsTr" / "case_002.nii.gz", label)
    (root / "imagesTr" / "case_003.nii.gz").unlink()                               # a missing file


def test_check_lists_every_problem_and_exits_2_and_a_good_set_gets_its_table(tmp_path):
    good = make_decathlon(tmp_path / "Task01_Good", n=3)
    bad = make_decathlon(tmp_path / "Task02_Bad", n=5)
    three_problems(bad)

    ok = medic("check", "--data", "Task01_Good", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stderr == ""
    lines = ok.stdout.splitlines()
    assert lines[0].split() == ["case", "shape", "(RAS)", "spacing", "(mm)", "channels", "label", "values"]
    assert lines[1].split() == ["case_000", "40", "x", "36", "x", "20", "1.5", "x", "1.2", "x", "2.5", "1", "0", "1"]
    assert len(lines) == 5 and lines[-1] == ("3 cases, 1 channel (MRI), labels 0..1 (background, tumour), 3D, "
                                             "patch 32 32 16: no problems")

    proc = medic("check", "--data", "Task02_Bad", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1].endswith(": 3 problems")
    assert [line[:1] for line in proc.stdout.splitlines()[1:-1]] == [" ", "!", "!", " "]  # case_003 is missing
    assert proc.stderr.splitlines() == [
        "medic: error: 3 problems in data folder Task02_Bad:",
        "  case case_001: image case_001.nii.gz (40, 36, 20) and label case_001.nii.gz (40, 36, 18) differ in shape",
        "  case case_002: label values [0.5] are not in dataset.json's labels 0..1 (background, tumour)",
        "  case case_003: image Task02_Bad/imagesTr/case_003.nii.gz is listed in dataset.json but missing on disk"]

    # the check before a training is the same one: all three, and nothing written
    project = tmp_path / "project"
    project.mkdir()
    train = medic("train", "--data", str(bad), "--epochs", "1", cwd=project)
    assert train.returncode == 2 and train.stderr.count("\n  case ") == 3 and "Traceback" not in train.stderr
    assert list(project.iterdir()) == []
    assert good.is_dir()


def test_a_2d_folder_reports_every_bad_pair(tmp_path):
    from PIL import Image
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i, (image_size, mask_size) in enumerate([(32, 32), (32, 24), (32, 32), (40, 32)]):
        Image.fromarray(np.zeros((image_size, image_size), np.uint8)).save(tmp_path / "d" / "images" / f"c{i}.png")
        Image.fromarray(np.ones((mask_size, mask_size), np.uint8)).save(tmp_path / "d" / "masks" / f"c{i}.png")
    (tmp_path / "d" / "images" / "c2.png").write_bytes(b"not a picture")
    proc = medic("check", "--data", "d", cwd=tmp_path)
    assert proc.returncode == 2
    assert [line.split()[:2] for line in proc.stdout.splitlines()[1:-1]] == [
        ["c0", "32"], ["!", "c1"], ["!", "c2"], ["!", "c3"]]
    errors = proc.stderr.splitlines()
    assert errors[0] == "medic: error: 3 problems in data folder d:" and len(errors) == 4
    assert "  case c1: image c1.png (32, 32) and mask c1.png (24, 24) differ in size" in errors
    assert errors[2].startswith("  case c2: cannot read d/images/c2.png")


def test_problems_stop_at_50_then_say_how_many_more():
    problems = Problems(f"case c{i:03d}: bad" for i in range(57))
    lines = problems.text("data folder x").splitlines()
    assert lines[0] == "57 problems in data folder x:" and len(lines) == 52
    assert lines[1] == "  case c000: bad" and lines[-1] == "  and 7 more"
    assert Problems(["one thing"]).text("x") == "one thing"
