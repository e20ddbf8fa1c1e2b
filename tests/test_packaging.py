"""The project installs as users expect: one dependency list in two formats, a console script,
run outputs kept out of git."""

import re
import subprocess
import tomllib

from pathlib import Path

from conftest import PY, ROOT


def normalise(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "- pip:")
    conda_pip = [l.strip()[2:] for l in lines[start + 1:] if l.strip().startswith("- ")]
    assert sorted(map(normalise, conda_pip)) == sorted(map(normalise, deps))
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_console_script_and_module_entry_points():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"medic": "medic.cli:main"}
    medic = str(Path(PY).parent / "medic")
    out = subprocess.run([medic, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "analyze" in out.stdout
    bad = subprocess.run([medic, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command" in bad.stderr and "Traceback" not in bad.stderr


def test_output_folders_exist_and_their_contents_are_ignored():
    for name in ("metrics", "analysis", "log", "checkpoints", "results"):
        assert (ROOT / name).is_dir()
        probe = f"{name}/epoch_metrics_20250101_000000.csv"
        assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 0, probe
    for name in ("notebooks", "medic", "tests", "README.md", "environment.yml"):
        assert (ROOT / name).exists()
