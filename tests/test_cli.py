"""The ``medic`` command line: no prefix guessing, and a did-you-mean for every misspelling."""

from __future__ import annotations

import subprocess

import pytest
from conftest import PY, child_env

from medic.cli import main
from medic.config import parse_args
from medic.errors import MedicError


def medic(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=60)


def test_an_abbreviated_training_flag_is_refused_with_a_did_you_mean(tmp_path):
    with pytest.raises(MedicError, match=r"unrecognized argument '--epoch'; did you mean --epochs\?"):
        parse_args(["--epoch", "1"])
    with pytest.raises(MedicError, match=r"'--log_inter'; did you mean --log_interval\?"):
        parse_args(["--log_inter=3"])
    with pytest.raises(MedicError, match=r"did you mean --no_augment\?"):
        parse_args(["--no-augmen"])
    proc = medic("train", "--epoch", "1", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "medic: error: unrecognized argument '--epoch'; did you mean --epochs?\n"
    assert list(tmp_path.iterdir()) == []  # refused before anything is made


def test_every_command_refuses_prefixes_and_suggests_the_flag(tmp_path, capsys):
    assert main(["runs", "--al", "--root", str(tmp_path)]) == 2
    assert "medic runs: unrecognized argument '--al'; did you mean --all?" in capsys.readouterr().err
    assert main(["analyze", "--metrics_fil", "x.csv"]) == 2
    assert "did you mean --metrics_file?" in capsys.readouterr().err
    assert main(["predict", "--input", "x", "--output", "y", "--devic", "cpu"]) == 2
    assert "did you mean --device?" in capsys.readouterr().err


def test_an_unknown_command_gets_one_line_with_a_did_you_mean(tmp_path):
    proc = medic("analyse", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["medic: error: unknown command 'analyse'; did you mean analyze? "
                                        "(medic --help lists them)"]
    other = medic("frobnicate", cwd=tmp_path)
    assert other.returncode == 2 and len(other.stderr.splitlines()) == 1
    assert "commands: train, analyze" in other.stderr
