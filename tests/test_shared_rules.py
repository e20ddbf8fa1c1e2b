"""Rules the whole package shares, end to end: one language rule for the console, the reports and
``medic watch``; bad input leaves nothing behind; a launched job and the trainer agree on what
``resume=latest`` continues."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from _train_helpers import TINY, only_run_id, train
from conftest import PY, child_env


@pytest.mark.parametrize("env, want", [
    ({"LANGUAGE": "zh_CN", "LANG": "C.UTF-8"}, "zh"),
    ({"LANGUAGE": "zh_CN:en", "LC_ALL": "en_US.UTF-8"}, "zh"),       # LANGUAGE first, its first entry
    ({"LANGUAGE": "", "LC_ALL": "zh_TW.UTF-8", "LANG": "en_US"}, "zh"),  # empty ones are skipped
    ({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "C"}, "zh"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({}, "en"),
])
def test_the_language_rule_reads_the_locale_as_gettext_does(monkeypatch, env, want):
    from medic.lang import default_lang, pick_lang
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_lang() == want
    assert pick_lang(None) == want
    assert pick_lang("en") == "en" and pick_lang("zh") == "zh"  # --lang wins


@pytest.mark.slow
def test_language_zh_cn_reaches_console_report_and_watch(project):
    env = child_env(LANGUAGE="zh_CN", LANG="C.UTF-8")
    out = train(project, "--epochs", "1", *TINY, env=env)
    assert "平均损失" in out.stdout and "Average loss" not in out.stdout
    run_id = only_run_id(project)
    assert "平均损失" in (project / "log" / f"training_{run_id}.log").read_text(encoding="utf-8")
    analyze = subprocess.run([PY, "-m", "medic.cli", "analyze", "-q"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
    assert analyze.returncode == 0, analyze.stderr
    report = next((project / "analysis").glob("training_report_*.txt")).read_text(encoding="utf-8")
    assert "训练分析报告" in report and "Training Analysis Report" not in report
    watch = subprocess.run([PY, "-m", "medic.cli", "watch", "--once"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=60)
    assert watch.returncode == 0, watch.stderr
    assert "平均损失" in watch.stdout and "已结束" in watch.stdout


@pytest.mark.parametrize("args", [["--data", "no/such/dir"], ["--data", "no/such/dir", "--nproc_per_node", "2"],
                                  ["--resume", "20200101_000000"], ["--model", "nosuch.module:build"]])
def test_bad_input_before_training_leaves_nothing(tmp_path, args):
    proc = subprocess.run([PY, "-m", "medic.cli", "train", *args], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medic: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # not even an empty folder


def test_an_output_folder_under_a_file_is_refused_before_anything(tmp_path):
    (tmp_path / "a_file").write_text("x")
    proc = subprocess.run([PY, "-m", "medic.cli", "train", "--output_dir", "a_file/out"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not writable" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.slow
def test_resume_latest_is_the_same_run_for_the_job_and_the_trainer(project):
    """A newer run with only best_model.pth is no resume point: the notebook's Job and the
    trainer both continue the older run that has last.pth."""
    import medic
    from medic.store.paths import Project, reserve_run_id, resumed_run_id

    train(project, "--epochs", "1", *TINY, "--output_dir", str(project))
    older = only_run_id(project)
    newer = reserve_run_id(Project.at(project))
    claim = (project / "metrics" / f"run_{newer}.json").read_text()
    (project / "checkpoints" / newer).mkdir(parents=True)
    shutil.copy(project / "checkpoints" / older / "best_model.pth", project / "checkpoints" / newer / "best_model.pth")
    assert newer > older
    assert resumed_run_id(Project.at(project), "latest") == older

    job = medic.launch({"resume": "latest", "epochs": 2, "lang": "en"}, root=project)
    assert job.run_id == older
    assert job.wait(timeout=180) == 0, job.log_tail(30)
    side = medic.load_run(older, root=project).sidecar
    assert side["epochs_done"] == 2 and side["resumed"][0]["from_epoch"] == 1
    assert (project / "metrics" / f"run_{newer}.json").read_text() == claim  # untouched
    assert not (project / "metrics" / f"epoch_metrics_{newer}.csv").exists()


def test_setup_is_quiet_about_the_license():
    """pyproject uses the SPDX license string: building the package warns about nothing."""
    import tomllib
    from pathlib import Path
    data = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"
    assert any(r.startswith("setuptools>=77") for r in data["build-system"]["requires"])
