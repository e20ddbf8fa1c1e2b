"""The manual: the site builds strictly (no broken link or anchor), the options page is what
TrainConfig gives, every document the code names exists, and the README stays short."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent))


def test_options_page_is_generated_from_trainconfig():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_options.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_options_page_and_help_have_every_option_in_its_section():
    from dataclasses import fields

    from medic.config import GROUPS, TrainConfig, build_parser

    page = (ROOT / "docs" / "reference" / "train-options.md").read_text(encoding="utf-8")
    for f in fields(TrainConfig):
        assert f.metadata.get("group") in GROUPS, f"option {f.name} has no --help section (group=)"
        assert f"| `--{f.name}` |" in page
    titles = [g.title for g in build_parser()._action_groups]
    assert [t for t in titles if t in GROUPS.values()] == list(GROUPS.values())


def test_every_document_the_code_names_exists():
    names, missing = set(), []
    for path in sorted((ROOT / "medic").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            # documents that are not in the repository (a spec, a design note, a guide)
            if re.search(r"SPEC\s*§|\bSPEC\b(?!_)|\bDESIGN\b|\bthe guide\b|\bguide's\b|seed's nine", line):
                missing.append(f"{where}: {line.strip()}")
            # a document is named by its path (docs/...) or by a capitalised name (README.md); a
            # bare lower-case name is a file a command writes (summary.md)
            for name in re.findall(r"[\w./-]+\.md\b", line):
                if "/" not in name and not name[:-3].isupper():
                    continue
                names.add(name)
                if not (ROOT / name).is_file():
                    missing.append(f"{where}: {name}")
    assert not missing, "named documents that the repository does not have:\n" + "\n".join(missing)
    assert "docs/reference/files.md" in names  # the check sees the references it is for


def test_readme_is_short_and_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12 * 1024
    assert "make demo" in readme and "make test" in readme
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / image).is_file(), image
        assert (ROOT / image).stat().st_size < 300 * 1024
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), f"README links to {link}, which the repository does not have"


@pytest.mark.skipif(MKDOCS is None, reason="mkdocs is not installed (pip install 'medic[docs]')")
def test_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    commands = (tmp_path / "site" / "reference" / "commands.html").read_text(encoding="utf-8")
    from medic.cli import COMMANDS

    for name in COMMANDS:
        assert f"medic {name}" in commands
    assert "--lr_scheduler" in commands and "processes and cluster" in commands
