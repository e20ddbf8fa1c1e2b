"""Running the real trainer from tests."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from conftest import PY, child_env

TINY = ["--num_samples", "16", "--image_size", "32", "--log_interval", "2"]


def train(cwd: Path, *args: str, timeout: float = 180, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "medic.train", *args], cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"medic train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def only_run_id(root: Path) -> str:
    ids = [p.name[len("epoch_metrics_"):-4] for p in (root / "metrics").glob("epoch_metrics_*.csv")]
    assert len(ids) == 1, ids
    return ids[0]
