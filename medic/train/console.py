"""What a person reads while training: the startup block, progress lines, the epoch summary, the
ETA and checkpoint messages, in English or Chinese (docs/getting-started.md, 'What you see'). Rank 0 prints; every line also
goes to ``log/training_<id>.log``. Lines only — no carriage-return bars — so logs and notebooks
stay readable whether or not stdout is a terminal."""

from __future__ import annotations

import sys
from pathlib import Path

from medic.lang import pick_lang
from medic.store import columns as C

RULE = "=" * 80

TEXT = {
    "en": {
        "workdir": "Working directory", "ckpt_dir": "Checkpoint directory", "results_dir": "Results directory",
        "log_dir": "Log directory", "metrics_dir": "Metrics directory",
        "train_cfg": "Training configuration:", "log_cfg": "Logging configuration:",
        "log_every": "Log interval: every {interval} batches", "batch_metrics": "Record batch-level metrics: {value}",
        "yes": "Yes", "no": "No",
        "epoch_file": "Epoch metrics file", "batch_file": "Batch metrics file",
        "progress": "Epoch [{epoch}/{epochs}] - Progress {percent:.1f}% ({batch}/{batches}) - Batch Loss: {loss} - LR: {lr}",
        "done": "Epoch [{epoch}/{epochs}] completed", "avg": "Average loss", "min": "Min batch loss",
        "max": "Max batch loss", "lr": "Learning rate", "time": "Epoch time: {seconds:.2f} s",
        "eta": "Estimated time remaining: {hours:.2f} h", "val_loss": "Validation loss", "val_dice": "Validation Dice",
        "nonfinite": "Non-finite batches skipped",
        "saved": "✓ Saved checkpoint: {name}", "best": "✓ New best model! {metric}: {value}",
        "best_gain": "✓ New best model! {metric}: {value} (improvement: {improvement})",
        "saved_best": "✓ Saved best model: {name}",
        "resumed": "Resuming run {run_id} from {path} (epoch {epoch} done)",
        "finished": "Training finished: {epochs_done} epochs in {duration} of training. Best {metric}: {value} (epoch {best_epoch})",
        "early_stop": "{message} (epoch {epoch}); resume with a larger --epochs to train further",
        "stopped": "Stop requested: checkpoint saved after epoch {epoch}; resume with: medic train --resume {run_id}",
        "stopped_mid": "Stop requested during epoch {epoch}: the last checkpoint (epoch {checkpoint_epoch}) is kept; resume with: medic train --resume {run_id}",
        "nan_stop": "Non-finite loss ({value}) at epoch {epoch}, batch {batch}: training stopped. The last good checkpoint "
                    "(epoch {checkpoint_epoch}) and best_model.pth are kept. Use --nonfinite skip to skip such batches.",
        "nan_stop_none": "Non-finite loss ({value}) at epoch {epoch}, batch {batch}: training stopped before its first "
                         "checkpoint. Use --nonfinite skip to skip such batches.",
        "nan_skip": "warning: non-finite loss at epoch {epoch}, batch {batch}: batch skipped",
    },
    "zh": {
        "workdir": "工作目录", "ckpt_dir": "检查点保存目录", "results_dir": "结果保存目录",
        "log_dir": "日志保存目录", "metrics_dir": "训练指标保存目录",
        "train_cfg": "训练配置:", "log_cfg": "日志配置:",
        "log_every": "日志输出间隔: 每{interval}个batch", "batch_metrics": "记录Batch级别指标: {value}",
        "yes": "是", "no": "否",
        "epoch_file": "Epoch指标记录文件", "batch_file": "Batch指标记录文件",
        "progress": "Epoch [{epoch}/{epochs}] - 进度 {percent:.1f}% ({batch}/{batches}) - Batch Loss: {loss} - LR: {lr}",
        "done": "Epoch [{epoch}/{epochs}] 完成", "avg": "平均损失", "min": "最小Batch损失",
        "max": "最大Batch损失", "lr": "学习率", "time": "本epoch用时: {seconds:.2f}秒",
        "eta": "预计剩余时间: {hours:.2f}小时", "val_loss": "验证损失", "val_dice": "验证Dice",
        "nonfinite": "跳过的非有限值Batch数",
        "saved": "✓ 已保存检查点: {name}", "best": "✓ 新的最佳模型! {metric}: {value}",
        "best_gain": "✓ 新的最佳模型! {metric}: {value} (提升: {improvement})",
        "saved_best": "✓ 已保存最佳模型: {name}",
        "resumed": "从 {path} 继续训练 {run_id} (已完成 {epoch} 个epoch)",
        "finished": "训练完成: {epochs_done} 个epoch, 训练用时 {duration}. 最佳 {metric}: {value} (Epoch {best_epoch})",
        "early_stop": "{message} (第 {epoch} 个epoch); 用更大的 --epochs 继续训练",
        "stopped": "收到停止信号: 已保存第 {epoch} 个epoch后的检查点; 继续训练: medic train --resume {run_id}",
        "stopped_mid": "第 {epoch} 个epoch中收到停止信号: 保留最近的检查点 (epoch {checkpoint_epoch}); 继续训练: medic train --resume {run_id}",
        "nan_stop": "第 {epoch} 个epoch第 {batch} 个batch的损失为非有限值 ({value}): 训练已停止. 保留最近的正常检查点 "
                    "(epoch {checkpoint_epoch}) 和 best_model.pth. 使用 --nonfinite skip 跳过此类batch.",
        "nan_stop_none": "第 {epoch} 个epoch第 {batch} 个batch的损失为非有限值 ({value}): 训练在保存第一个检查点之前已停止. "
                         "使用 --nonfinite skip 跳过此类batch.",
        "nan_skip": "警告: 第 {epoch} 个epoch第 {batch} 个batch的损失为非有限值: 已跳过",
    },
}


def fmt_loss(v: float) -> str:
    return f"{v:.6f}"


def fmt_lr(v: float) -> str:
    return f"{v:.8f}"


class Console:
    """Prints on rank 0 and appends every printed line to the run's log file."""

    def __init__(self, lang: str = "", enabled: bool = True, stream=None):
        self.lang = pick_lang(lang or None)
        self.t = TEXT[self.lang]
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self._log = None

    def open_log(self, path: Path) -> None:
        if self.enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(path, "a", encoding="utf-8", buffering=1)

    def print(self, line: str = "") -> None:
        if not self.enabled:
            return
        print(line, file=self.stream, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")

    def error(self, line: str) -> None:
        """A line for stderr (and the log): failures, warnings."""
        if not self.enabled:
            return
        print(line, file=sys.stderr, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def say(self, key: str, **kw) -> None:
        self.print(self.t[key].format(**kw))

    def startup(self, *, root: Path, dirs: dict[str, Path], settings: list[tuple[str, object]],
                log_interval: int, log_batch: bool, epoch_file: Path, batch_file: Path | None) -> None:
        t = self.t
        self.print(f"{t['workdir']}: {root}")
        for key in ("ckpt_dir", "results_dir", "log_dir", "metrics_dir"):
            self.print(f"{t[key]}: {dirs[key]}")
        self.print(RULE)
        self.print(t["train_cfg"])
        for name, value in settings:
            self.print(f"  {name}: {value}")
        self.print(t["log_cfg"])
        self.print("  " + t["log_every"].format(interval=log_interval))
        self.print("  " + t["batch_metrics"].format(value=t["yes"] if log_batch else t["no"]))
        self.print(RULE)
        self.print(f"{t['epoch_file']}: {epoch_file}")
        if batch_file is not None:
            self.print(f"{t['batch_file']}: {batch_file}")
        self.print(RULE)

    def progress(self, epoch: int, epochs: int, batch: int, batches: int, loss: float, lr: float) -> None:
        self.say("progress", epoch=epoch, epochs=epochs, percent=100.0 * batch / batches, batch=batch, batches=batches,
                 loss=fmt_loss(loss), lr=fmt_lr(lr))

    def epoch_summary(self, epoch: int, epochs: int, avg: float, lo: float, hi: float, lr: float,
                      seconds: float, eta_hours: float | None, extra: dict[str, float]) -> None:
        t = self.t
        self.print(RULE)
        self.say("done", epoch=epoch, epochs=epochs)
        self.print(f"{t['avg']}: {fmt_loss(avg)}")
        self.print(f"{t['min']}: {fmt_loss(lo)}")
        self.print(f"{t['max']}: {fmt_loss(hi)}")
        self.print(f"{t['lr']}: {fmt_lr(lr)}")
        labels = {C.VAL_LOSS: t["val_loss"], C.VAL_DICE: t["val_dice"], C.NONFINITE_BATCHES: t["nonfinite"]}
        for name, value in extra.items():
            shown = str(int(value)) if name == C.NONFINITE_BATCHES else fmt_loss(value)
            self.print(f"{labels.get(name, name)}: {shown}")
        self.say("time", seconds=seconds)
        if eta_hours is not None:
            self.say("eta", hours=eta_hours)
        self.print(RULE)

    def new_best(self, metric: str, value: float, previous: float | None) -> None:
        shown = C.LOSS if metric == C.AVG_LOSS else metric
        if previous is None:
            self.say("best", metric=shown, value=fmt_loss(value))
        else:
            self.say("best_gain", metric=shown, value=fmt_loss(value), improvement=fmt_loss(abs(previous - value)))


def settings_lines(cfg, r, device, data, run_id: str) -> list[tuple[str, object]]:
    """The settings of the startup block (the usual names, values of this run)."""
    import torch.distributed

    from medic.store.files import shown_path
    source = shown_path(cfg.data) if cfg.data else (f"plug-in {cfg.dataset}" if cfg.dataset else
                          f"synthetic ({cfg.num_samples} samples, {cfg.image_size}x{cfg.image_size})")
    lines = [("Epochs", cfg.epochs), ("Batch Size (per GPU)", cfg.batch_size), ("Learning Rate", cfg.lr),
             ("LR Scheduler", cfg.lr_scheduler), ("Processes (world size)", r.world_size),
             ("Device", f"{device.type}" + (f" ({torch.distributed.get_backend()})" if r.distributed else "")),
             ("Model", cfg.model or f"MONAI UNet ({'3D' if cfg.spatial_dims == '3' else '2D'})"), ("Data", source),
             ("Training samples", len(data.train_ds)), ("Batches per epoch", data.steps)]
    if data.val_ds is not None:
        lines.append(("Validation samples", len(data.val_ds)))
    if cfg.patch_size:
        lines.append(("Patch size", cfg.patch_size))
    lines += [("Monitor", cfg.monitor), ("Checkpoint every", f"{cfg.save_interval} epochs"),
              ("Seed", cfg.seed), ("Run id", run_id)]
    return lines


def eta_hours(epoch_times: list[float], remaining: int) -> float:
    """The run's ETA in hours, as the console prints it (``medic.store.columns.eta_seconds``)."""
    return (C.eta_seconds(epoch_times, remaining) or 0.0) / 3600
