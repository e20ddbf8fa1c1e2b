"""The trainer end to end: real processes (single, torchrun with 2 workers, two torchrun agents),
real files."""

from __future__ import annotations

import json
import re
import socket
import subprocess

import numpy as np
import pytest
import torch

from _train_helpers import TINY, only_run_id, read_csv, train
from conftest import PY, child_env
from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS, TELEMETRY_COLUMNS

pytestmark = pytest.mark.slow


def batch_losses_by_epoch(rows):
    out = {}
    for r in rows:
        out.setdefault(int(r["Epoch"]), []).append(float(r["Loss"]))
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process run with validation and batch metrics, launched the way users do."""
    root = tmp_path_factory.mktemp("ddp")
    proc = train(root, "--nproc_per_node", "2", "--epochs", "3", *TINY, "--val_fraction", "0.25",
                 "--log_batch_metrics", "--save_interval", "2", "--lang", "en")
    return root, only_run_id(root), proc


def test_ddp_run_writes_every_file_with_the_guides_schema(ddp_run):
    root, run_id, _ = ddp_run
    assert re.fullmatch(r"\d{8}_\d{6}", run_id)
    header, epochs = read_csv(root / "metrics" / f"epoch_metrics_{run_id}.csv")
    assert header == list(EPOCH_COLUMNS) + ["Val_Loss", "Val_Dice", "Val_Dice_class_1"] + list(TELEMETRY_COLUMNS)
    assert [int(r["Epoch"]) for r in epochs] == [1, 2, 3]
    bheader, batches = read_csv(root / "metrics" / f"batch_metrics_{run_id}.csv")
    assert bheader == list(BATCH_COLUMNS)
    # 12 training samples over 2 ranks in batches of 4: 2 steps per epoch
    assert [(int(r["Epoch"]), int(r["Batch"])) for r in batches] == [(e, b) for e in (1, 2, 3) for b in (0, 1)]
    by_epoch = batch_losses_by_epoch(batches)
    best = float("inf")
    for r in epochs:
        e = int(r["Epoch"])
        assert float(r["Min_Batch_Loss"]) == min(by_epoch[e]) and float(r["Max_Batch_Loss"]) == max(by_epoch[e])
        assert float(r["Min_Batch_Loss"]) <= float(r["Avg_Loss"]) <= float(r["Max_Batch_Loss"])
        improved = float(r["Avg_Loss"]) < best
        best = min(best, float(r["Avg_Loss"]))
        assert r["Is_Best_Model"] == str(improved) and float(r["Best_Loss_So_Far"]) == pytest.approx(best, abs=1e-6)
        assert 0 <= float(r["Val_Dice"]) <= 1 and float(r["Val_Loss"]) > 0
    ckpts = root / "checkpoints" / run_id
    assert sorted(p.name for p in ckpts.iterdir()) == ["best_model.pth", "last.pth", "model_epoch_2.pth"]
    state = torch.load(ckpts / "last.pth", weights_only=True)
    assert state["epoch"] == 3 and state["run_id"] == run_id and {"model", "optimizer", "rng", "config"} <= set(state)
    assert list((root / "results" / run_id).glob("best_epoch_*.png"))
    side = json.loads((root / "metrics" / f"run_{run_id}.json").read_text())
    assert side["status"] == "completed" and side["world_size"] == 2 and side["epochs_done"] == 3
    assert side["config"]["epochs"] == 3 and side["versions"]["torch"] == torch.__version__
    assert side["start_time"] <= side["end_time"]


def test_console_lines_in_english_and_log_file(ddp_run):
    root, run_id, proc = ddp_run
    out = proc.stdout
    for line in (f"Working directory: {root}", f"Checkpoint directory: {root / 'checkpoints' / run_id}",
                 "Training configuration:", "  Epochs: 3", "  Batch Size (per GPU): 4", "  Learning Rate: 0.001",
                 "Logging configuration:", "  Log interval: every 2 batches", "  Record batch-level metrics: Yes",
                 f"Epoch metrics file: {root / 'metrics' / f'epoch_metrics_{run_id}.csv'}",
                 "Epoch [1/3] completed", "✓ Saved checkpoint: model_epoch_2.pth", "✓ Saved best model: best_model.pth"):
        assert line in out.splitlines(), line
    assert re.search(r"^Epoch \[1/3\] - Progress 0\.0% \(0/2\) - Batch Loss: \d+\.\d{6} - LR: 0\.00100000$", out, re.M)
    assert re.search(r"^Average loss: \d+\.\d{6}$", out, re.M)
    assert re.search(r"^Epoch time: \d+\.\d{2} s$", out, re.M)
    assert re.search(r"^Estimated time remaining: \d+\.\d{2} h$", out, re.M)
    assert re.search(r"^✓ New best model! Loss: \d+\.\d{6}", out, re.M)
    assert "\r" not in out
    # rank 0 only: each epoch summary appears once although two processes ran
    assert out.count("Epoch [2/3] completed") == 1
    log = (root / "log" / f"training_{run_id}.log").read_text()
    assert [l for l in out.splitlines() if l] == [l for l in log.splitlines() if l]


def test_chinese_console_is_the_guides(project):
    env = child_env(LANG="zh_CN.UTF-8")
    proc = train(project, "--epochs", "1", *TINY, env=env)
    run_id = only_run_id(project)
    lines = proc.stdout.splitlines()
    for line in (f"工作目录: {project}", "训练配置:", "  Epochs: 1", "  Batch Size (per GPU): 4", "日志配置:",
                 "  日志输出间隔: 每2个batch", "  记录Batch级别指标: 否",
                 f"Epoch指标记录文件: {project / 'metrics' / f'epoch_metrics_{run_id}.csv'}",
                 "Epoch [1/1] 完成", "✓ 已保存最佳模型: best_model.pth", "=" * 80):
        assert line in lines, line
    for pattern in (r"^Epoch \[1/1\] - 进度 0\.0% \(0/4\) - Batch Loss: \d+\.\d{6} - LR: 0\.00100000$",
                    r"^Epoch \[1/1\] - 进度 50\.0% \(2/4\) - Batch Loss: \d+\.\d{6} - LR: 0\.00100000$",
                    r"^平均损失: \d+\.\d{6}$", r"^最小Batch损失: \d+\.\d{6}$", r"^最大Batch损失: \d+\.\d{6}$",
                    r"^学习率: 0\.00100000$", r"^本epoch用时: \d+\.\d{2}秒$", r"^预计剩余时间: \d+\.\d{2}小时$",
                    r"^✓ 新的最佳模型! Loss: \d+\.\d{6}$"):
        assert re.search(pattern, proc.stdout, re.M), pattern
    assert not (project / "metrics" / f"batch_metrics_{run_id}.csv").exists()


def test_one_process_batch_8_equals_two_processes_batch_4(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    common = ["--epochs", "2", "--num_samples", "32", "--image_size", "32", "--log_batch_metrics", "--seed", "3"]
    train(one, *common, "--batch_size", "8")
    proc = subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
                           "medic.train", *common, "--batch_size", "4"], cwd=two, env=child_env(GLOO_SOCKET_IFNAME="lo"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, e1 = read_csv(one / "metrics" / f"epoch_metrics_{only_run_id(one)}.csv")
    _, e2 = read_csv(two / "metrics" / f"epoch_metrics_{only_run_id(two)}.csv")
    # the two jobs add the same float32 gradients in a different order, so after a few Adam steps
    # they part in the sixth decimal; one rank's loss instead of the global one is off by ~1e-2
    tol = 2e-5
    for a, b in zip(e1, e2, strict=True):
        for col in ("Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Best_Loss_So_Far"):
            assert float(a[col]) == pytest.approx(float(b[col]), abs=tol), col
    _, b1 = read_csv(one / "metrics" / f"batch_metrics_{only_run_id(one)}.csv")
    _, b2 = read_csv(two / "metrics" / f"batch_metrics_{only_run_id(two)}.csv")
    assert len(b1) == len(b2) == 8
    assert np.allclose([float(r["Loss"]) for r in b1], [float(r["Loss"]) for r in b2], atol=tol)


def test_resume_continues_the_same_run_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    common = [*TINY, "--log_batch_metrics", "--save_interval", "1", "--lr_scheduler", "step", "--lr_step_size", "1",
              "--lr_gamma", "0.5"]
    train(straight, "--epochs", "4", *common)
    train(resumed, "--epochs", "2", *common)
    run_id = only_run_id(resumed)
    proc = train(resumed, "--resume", "latest", "--epochs", "4")
    assert f"Resuming run {run_id}" in proc.stdout or f"继续训练 {run_id}" in proc.stdout
    assert only_run_id(resumed) == run_id
    _, rows = read_csv(resumed / "metrics" / f"epoch_metrics_{run_id}.csv")
    _, ref = read_csv(straight / "metrics" / f"epoch_metrics_{only_run_id(straight)}.csv")
    assert [int(r["Epoch"]) for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, ref, strict=True):
        for col in ("Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate", "Best_Loss_So_Far", "Is_Best_Model"):
            if col == "Is_Best_Model":
                assert a[col] == b[col]
            else:
                assert float(a[col]) == pytest.approx(float(b[col]), abs=2e-6), col
    _, batches = read_csv(resumed / "metrics" / f"batch_metrics_{run_id}.csv")
    keys = [(r["Epoch"], r["Batch"]) for r in batches]
    assert len(keys) == len(set(keys)) == 16
    side = json.loads((resumed / "metrics" / f"run_{run_id}.json").read_text())
    assert side["status"] == "completed" and side["epochs_done"] == 4 and side["config"]["lr_scheduler"] == "step"
    assert len(side["resumed"]) == 1
    log = (resumed / "log" / f"training_{run_id}.log").read_text()
    assert log.count("Epoch [1/2] completed") == 1 and log.count("Epoch [4/4] completed") == 1


PLUGIN = '''
import torch
from torch import nn


def tiny_model(cfg):
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, cfg.num_classes, 1))


class Squares(torch.utils.data.Dataset):
    def __init__(self, n, size):
        g = torch.Generator().manual_seed(0)
        self.masks = torch.zeros(n, 1, size, size, dtype=torch.long)
        for i in range(n):
            x, y = torch.randint(0, size // 2, (2,), generator=g).tolist()
            self.masks[i, 0, y:y + size // 3, x:x + size // 3] = 1
        self.images = self.masks.float() + 0.3 * torch.randn(n, 1, size, size, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


def squares(cfg):
    return Squares(12, cfg.image_size)
'''


def test_model_and_dataset_plug_ins_from_the_working_directory(project):
    (project / "myplugins.py").write_text(PLUGIN)
    proc = train(project, "--epochs", "2", "--image_size", "32", "--model", "myplugins:tiny_model",
                 "--dataset", "myplugins:squares", "--val_fraction", "0.25", "--monitor", "Val_Dice", "--lang", "en")
    assert "Model: myplugins:tiny_model" in proc.stdout and "Data: plug-in myplugins:squares" in proc.stdout
    header, rows = read_csv(project / "metrics" / f"epoch_metrics_{only_run_id(project)}.csv")
    assert header[9:11] == ["Val_Loss", "Val_Dice"] and len(rows) == 2
    # the best model follows Val_Dice, which is maximised
    dice = [float(r["Val_Dice"]) for r in rows]
    assert float(rows[1]["Best_Loss_So_Far"]) == pytest.approx(max(dice), abs=1e-6)
    state = torch.load(project / "checkpoints" / only_run_id(project) / "last.pth", weights_only=True)
    assert set(state["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def write_image_folder(root, n=6, size=40):
    import nibabel as nib
    from PIL import Image
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        r, c = rng.integers(5, size - 15, 2)
        mask[r:r + 10, c:c + 10] = 1
        image = (mask * 150 + rng.integers(0, 100, (size, size))).astype(np.uint8)
        if i % 3 == 0:
            Image.fromarray(image).save(root / "images" / f"case{i}.png")
            Image.fromarray(mask * 255).save(root / "masks" / f"case{i}.png")
        elif i % 3 == 1:
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "images" / f"case{i}.nii.gz")
            nib.save(nib.Nifti1Image(mask, np.eye(4)), root / "masks" / f"case{i}.nii.gz")
        else:
            np.save(root / "images" / f"case{i}.npy", image.astype(np.float32))
            Image.fromarray(mask * 255).save(root / "masks" / f"case{i}.png")


def test_a_folder_of_png_nifti_and_npy_files(project):
    write_image_folder(project / "data")
    proc = train(project, "--epochs", "1", "--data", "data", "--image_size", "32", "--batch_size", "2",
                 "--lang", "en")
    assert "Training samples: 6" in proc.stdout
    _, rows = read_csv(project / "metrics" / f"epoch_metrics_{only_run_id(project)}.csv")
    assert len(rows) == 1 and float(rows[0]["Avg_Loss"]) > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_rendezvous_on_one_machine(project):
    port = str(free_port())
    env = child_env(GLOO_SOCKET_IFNAME="lo")
    agents = [subprocess.Popen([PY, "-m", "medic.train", "--epochs", "2", *TINY, "--log_batch_metrics", "--lang", "en",
                                "--nnodes", "2", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                                "--master_port", port], cwd=project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [a.communicate(timeout=240) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "Processes (world size): 2" in outs[0][0] and "Epoch [2/2] completed" not in outs[1][0]
    run_id = only_run_id(project)
    _, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    assert [r["Epoch"] for r in rows] == ["1", "2"]
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert side["world_size"] == 2 and side["status"] == "completed"


def test_the_optimizer_is_adam_with_the_fused_kernel_and_the_same_update():
    """build_optimizer: Adam at the configured lr, fused where torch has the kernel (CPU here);
    its steps match the per-parameter loop's."""
    from medic.config import TrainConfig
    from medic.train.models import build_optimizer
    cfg = TrainConfig(lr=0.01)
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 3)
    b = torch.nn.Linear(8, 3)
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    fused, loop = build_optimizer(a, cfg), torch.optim.Adam(b.parameters(), lr=0.01)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"] and fused.defaults["lr"] == 0.01
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()
    assert all((p - s).abs().min() > 0 for p, s in zip(a.parameters(), start))  # every weight moved


def test_a_run_stopped_mid_epoch_resumes_inside_that_epoch(tmp_path):
    """One process, Ctrl-C in the middle of an epoch: the resume starts at the next batch of that
    epoch and finishes it (the batches keep their numbers within the whole epoch)."""
    import signal
    import time
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([PY, "-m", "medic.train", "--epochs", "3", "--num_samples", "96", "--image_size", "32",
                                 "--log_interval", "1", "--save_interval", "1", "--threads", "1", "--lang", "en"],
                                cwd=tmp_path, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while "(2/24)" not in log.read_text().partition("Epoch [2/3]")[2] and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    assert "Stop requested during epoch 2" in log.read_text(), log.read_text()[-1500:]
    run_id = only_run_id(tmp_path)
    done = train(tmp_path, "--resume", "latest")
    assert "Traceback" not in done.stdout + done.stderr
    _, rows = read_csv(tmp_path / "metrics" / f"epoch_metrics_{run_id}.csv")
    assert [int(r["Epoch"]) for r in rows] == [1, 2, 3]
