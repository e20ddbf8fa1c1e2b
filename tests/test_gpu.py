"""GPU readiness. The CUDA tests are skipped on a machine without CUDA; the CPU smoke run of the
GPU options (``--amp``, ``--channels_last``) runs everywhere."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from _train_helpers import only_run_id, read_csv, train
from conftest import PY, ROOT, child_env

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs CUDA")


def assert_finite_run(root, epochs: int) -> None:
    run_id = only_run_id(root)
    _, rows = read_csv(root / "metrics" / f"epoch_metrics_{run_id}.csv")
    assert [int(r["Epoch"]) for r in rows] == list(range(1, epochs + 1))
    for r in rows:
        assert math.isfinite(float(r["Avg_Loss"])) and float(r["Min_Batch_Loss"]) <= float(r["Max_Batch_Loss"])


@pytest.mark.slow
def test_amp_and_channels_last_train_on_cpu(tmp_path):
    proc = train(tmp_path, "--device", "cpu", "--amp", "--channels_last", "--epochs", "2", "--num_samples", "8",
                 "--image_size", "32", "--log_batch_metrics", "--log_interval", "1", "--lang", "en")
    assert "Training finished" in proc.stdout
    assert_finite_run(tmp_path, 2)


@pytest.mark.skipif(cuda_available(), reason="checks the message on a machine without CUDA")
def test_gpu_check_says_when_there_is_no_cuda():
    proc = subprocess.run([PY, str(GPU_CHECK)], capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gpu_check: CUDA is not available on this machine; nothing to check"]


@needs_cuda
@pytest.mark.parametrize("extra", ["", "--amp --channels_last"])
def test_no_host_device_sync_inside_a_training_step(tmp_path, extra):
    """set_sync_debug_mode('error') inside every step: only the log-interval flush may sync."""
    proc = subprocess.run([PY, str(GPU_CHECK), "--sync-audit", str(tmp_path), "--extra", extra],
                          capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = json.loads(proc.stdout.strip().splitlines()[-1])
    assert audit["ok"], audit["error"]
    # 64 samples / batch 4 = 16 steps per epoch, --log_interval 5: flushes after steps 0, 5, 10, 15
    assert audit["epochs"] == 2 and audit["steps"] == 32 and audit["flushes"] == 8
    assert_finite_run(tmp_path, 2)


@needs_cuda
@pytest.mark.slow
def test_cuda_run_with_amp_and_channels_last(tmp_path):
    train(tmp_path, "--device", "cuda", "--amp", "--channels_last", "--epochs", "2", "--num_samples", "16",
          "--image_size", "32", "--log_batch_metrics", "--lang", "en")
    assert_finite_run(tmp_path, 2)
