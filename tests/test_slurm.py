"""``medic train --launcher slurm`` against a real two-node SLURM cluster on this machine."""

from __future__ import annotations

import os
import subprocess

import pytest

from _slurm_helpers import slurm_cluster  # noqa: F401  (the session fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_cluster_has_two_idle_nodes(slurm_cluster):
    env = dict(os.environ, **slurm_cluster)
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True,
                           timeout=30).stdout.split("\n")
    assert sorted(set(n for n in nodes if n)) == ["n1 idle", "n2 idle"]
    out = subprocess.run(["srun", "-N2", "--time=1", "bash", "-c", "echo $SLURMD_NODENAME"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert sorted(out.stdout.split()) == ["n1", "n2"], out.stderr
