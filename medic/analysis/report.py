"""The text reports of ``medic analyze`` (epoch and batch CSVs), in English or Chinese.

The epoch report carries every field of docs/reference/files.md ("Analysis outputs") under the
usual headings (训练分析报告, 训练概览, Loss统计, 学习率, Top 5最佳Epochs) or their English
rendering; the language defaults to the locale (``medic.lang``).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

from medic.analysis.timing import report_lines as timing_lines
from medic.analysis.batches import SPIKE_Z
from medic.lang import pick_lang
from medic.store import columns as C
from medic.store.files import shown_path

if TYPE_CHECKING:
    from medic.analysis.batches import BatchAnalysis
    from medic.analysis.stats import EpochSummary

RULE = "=" * 80

TEXT = {
    "en": {
        "title": "Training Analysis Report", "file": "Data file", "made": "Generated",
        "run": "Run", "status": "Status", "planned": "of {n} planned",
        "overview": "Training overview", "epochs": "Total epochs", "hours": "Total training time",
        "hours_unit": "hours", "per_epoch": "Mean time per epoch", "sec": "s",
        "loss": "Loss statistics", "initial": "Initial loss", "final": "Final loss",
        "best": "Best loss", "epoch_n": "Epoch {n}", "improve": "Loss improvement",
        "lr": "Learning rate", "lr0": "Initial learning rate", "lr1": "Final learning rate",
        "top": "Top {n} epochs (by {name}, {mode} is better)", "monitor": "Best model",
        "monitor_line": "{name} = {value} (Epoch {n}, {mode} is better)", "higher": "higher",
        "lower": "lower", "extras": "Other metrics", "extra_line": "{name}: final {final}, best {best} (Epoch {n})",
        "nonfinite": "Epochs with a non-finite Avg_Loss (NaN/Inf)",
        "btitle": "Batch Analysis Report", "rows": "Batches", "bpe": "Batches per epoch",
        "bepochs": "Epochs", "bloss": "Batch loss", "first": "First", "last": "Last", "min": "Min",
        "max": "Max", "mean": "Mean (every logged batch counts once; Avg_Loss weights every sample)", "trend": "Trend (moving mean over {n} batches)",
        "trend_line": "start {a}, end {b}", "spikes": "Spikes (loss > {z:g} std and > 50% above the other batches of its epoch)",
        "none": "none", "spike_line": "Epoch {e}, batch {b}: loss {loss} ({z:.1f} std)",
        "more": "... and {n} more", "bad": "Non-finite losses (NaN/Inf)",
        "bad_line": "Epoch {e}, batch {b}: {loss}", "spread": "Noisiest epochs (largest std of batch loss)",
        "spread_line": "Epoch {e}: mean {m}, std {s} (ddof=1, as pandas), min {lo}, max {hi}",
        "worst": "Worst validation cases (epoch {e}, lowest mean Dice; validation_epoch_{e}.csv)",
        "worst_line": "{case}: mean Dice {d}",
    },
    "zh": {
        "title": "训练分析报告", "file": "数据文件", "made": "生成时间",
        "run": "运行", "status": "状态", "planned": "计划 {n}",
        "overview": "训练概览", "epochs": "总Epoch数", "hours": "总训练时间", "hours_unit": "小时",
        "per_epoch": "平均每Epoch时间", "sec": "秒",
        "loss": "Loss统计", "initial": "初始Loss", "final": "最终Loss", "best": "最佳Loss",
        "epoch_n": "Epoch {n}", "improve": "Loss改善",
        "lr": "学习率", "lr0": "初始学习率", "lr1": "最终学习率",
        "top": "Top {n}最佳Epochs (按 {name}, 越{mode}越好)", "monitor": "最佳模型",
        "monitor_line": "{name} = {value} (Epoch {n}, 越{mode}越好)", "higher": "高", "lower": "低",
        "extras": "其他指标", "extra_line": "{name}: 最终 {final}, 最佳 {best} (Epoch {n})",
        "nonfinite": "Avg_Loss 非有限值 (NaN/Inf) 的Epoch数",
        "btitle": "Batch分析报告", "rows": "Batch总数", "bpe": "每Epoch的Batch数",
        "bepochs": "Epoch数", "bloss": "Batch损失", "first": "首个", "last": "最后", "min": "最小",
        "max": "最大", "mean": "平均 (每个batch权重相同; Avg_Loss按样本加权)", "trend": "趋势 ({n}个batch的滑动平均)",
        "trend_line": "起始 {a}, 结束 {b}", "spikes": "损失尖峰 (比本epoch其他batch均值高 {z:g} 倍标准差且高50%以上)",
        "none": "无", "spike_line": "Epoch {e}, batch {b}: 损失 {loss} ({z:.1f} 倍标准差)",
        "more": "... 另有 {n} 个", "bad": "非有限损失 (NaN/Inf)",
        "bad_line": "Epoch {e}, batch {b}: {loss}", "spread": "波动最大的Epochs (batch损失标准差最大)",
        "spread_line": "Epoch {e}: 平均 {m}, 标准差 {s} (ddof=1, 同pandas), 最小 {lo}, 最大 {hi}",
        "worst": "最差的验证病例 (Epoch {e}, 平均Dice最低; validation_epoch_{e}.csv)",
        "worst_line": "{case}: 平均Dice {d}",
    },
}


def loss_str(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6f}" if v == 0 or abs(v) >= 1e-4 else f"{v:.6e}"


def lr_str(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.8f}" if v == 0 or abs(v) >= 1e-6 else f"{v:.6e}"


def training_report(s: "EpochSummary", source: str | os.PathLike, lang: str | None = None) -> str:
    """The epoch report (docs/reference/files.md, "Analysis outputs") as text."""
    t = TEXT[pick_lang(lang)]
    better = t["higher" if s.monitor_mode == "max" else "lower"]
    planned = f" ({t['planned'].format(n=s.planned_epochs)})" if s.planned_epochs else ""
    lines = [RULE, t["title"], RULE,
             f"{t['file']}: {shown_path(source)}",
             f"{t['made']}: {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    if s.status:
        lines.append(f"{t['status']}: {s.status}" + (f" ({s.message})" if s.message else ""))
    lines += ["", f"{t['overview']}:",
              f"  {t['epochs']}: {s.epochs}{planned}",
              f"  {t['hours']}: {s.total_time_s / 3600:.2f} {t['hours_unit']} ({C.format_duration(s.total_time_s)})",
              f"  {t['per_epoch']}: {s.mean_epoch_s:.2f} {t['sec']}",
              "", f"{t['loss']}:",
              f"  {t['initial']}: {loss_str(s.initial_loss)}",
              f"  {t['final']}: {loss_str(s.final_loss)}",
              f"  {t['best']}: {loss_str(s.best_loss)} ({t['epoch_n'].format(n=s.best_loss_epoch)})",
              f"  {t['improve']}: {loss_str(s.improvement)} ({s.improvement_pct:.2f}%)"]
    if s.nonfinite_epochs:
        lines.append(f"  {t['nonfinite']}: {s.nonfinite_epochs}")
    if s.timing is not None:
        lines += timing_lines(s.timing, pick_lang(lang))
    lines += ["", f"{t['lr']}:",
              f"  {t['lr0']}: {lr_str(s.initial_lr)}",
              f"  {t['lr1']}: {lr_str(s.final_lr)}",
              "", f"{t['top'].format(n=len(s.top), name=s.monitor, mode=better)}:"]
    lines += [f"  {i}. Epoch {int(r[C.EPOCH])}: "
              + (f"{s.monitor}={loss_str(r[s.monitor])}, " if s.monitor != C.AVG_LOSS else "")
              + f"Loss={loss_str(r[C.AVG_LOSS])}, LR={lr_str(r[C.LEARNING_RATE])}"
              for i, r in enumerate(s.top.to_dict("records"), 1)]
    if s.monitor != C.AVG_LOSS and s.best_monitored_epoch is not None:
        lines += ["", f"{t['monitor']}:",
                  "  " + t["monitor_line"].format(name=s.monitor, value=loss_str(s.best_monitored),
                                                  n=s.best_monitored_epoch,
                                                  mode=better)]
    if s.extras:
        lines += ["", f"{t['extras']}:"]
        lines += ["  " + t["extra_line"].format(name=name, final=loss_str(x["final"]), best=loss_str(x["best"]),
                                                n=x["best_epoch"] if x["best_epoch"] is not None else "-")
                  for name, x in s.extras.items()]
    if s.worst_cases is not None and len(s.worst_cases):
        lines += ["", t["worst"].format(n=len(s.worst_cases), e=s.worst_epoch) + ":"]
        lines += worst_lines(s.worst_cases, t)
    lines.append(RULE)
    return "\n".join(lines) + "\n"


def worst_lines(worst, t: dict) -> list[str]:
    """``case: mean Dice 0.41 (liver 0.82, tumour 0.000000)``; a class left out shows as ``-``."""
    lines = []
    for row in worst.to_dict("records"):
        classes = ", ".join(f"{c[len('Dice_'):]} {'-' if math.isnan(row[c]) else loss_str(row[c])}"
                            for c in worst.columns[2:])
        lines.append("  " + t["worst_line"].format(case=row["Case"], d=loss_str(row["Mean_Dice"])) + f" ({classes})")
    return lines


def batch_report(r: "BatchAnalysis", lang: str | None = None) -> str:
    """The batch report: size, loss statistics, trend, spikes, non-finite values, noisiest epochs."""
    t = TEXT[pick_lang(lang)]
    per = r.per_epoch
    lines = [RULE, t["btitle"], RULE,
             f"{t['file']}: {shown_path(r.path)}",
             f"{t['made']}: {time.strftime('%Y-%m-%d %H:%M:%S')}",
             "", f"{t['overview']}:",
             f"  {t['rows']}: {r.rows}",
             f"  {t['bepochs']}: {len(per)} (Epoch {int(per[C.EPOCH].iloc[0])}-{int(per[C.EPOCH].iloc[-1])})",
             f"  {t['bpe']}: {r.batches_per_epoch}",
             "", f"{t['bloss']}:",
             f"  {t['first']}: {loss_str(r.loss_first)}   {t['last']}: {loss_str(r.loss_last)}",
             f"  {t['min']}: {loss_str(r.loss_min)}   {t['max']}: {loss_str(r.loss_max)}   "
             f"{t['mean']}: {loss_str(r.loss_mean)}"]
    if len(r.trend_y):
        lines.append(f"  {t['trend'].format(n=r.trend_window)}: "
                     + t["trend_line"].format(a=loss_str(r.trend_y[0]), b=loss_str(r.trend_y[-1])))
    lines += ["", f"{t['spikes'].format(z=SPIKE_Z)}: {r.spike_count if r.spike_count else t['none']}"]
    lines += ["  " + t["spike_line"].format(e=int(x.Epoch), b=int(x.Batch), loss=loss_str(x.Loss), z=x.Z)
              for x in r.spikes.head(10).itertuples()]
    if r.spike_count > 10:
        lines.append("  " + t["more"].format(n=r.spike_count - 10))
    lines += ["", f"{t['bad']}: {r.nonfinite_count if r.nonfinite_count else t['none']}"]
    lines += ["  " + t["bad_line"].format(e=int(x.Epoch), b=int(x.Batch), loss=x.Loss)
              for x in r.nonfinite.head(10).itertuples()]
    if r.nonfinite_count > 10:
        lines.append("  " + t["more"].format(n=r.nonfinite_count - 10))
    noisy = per[per["Batches"] > 1].nlargest(5, "Std")
    if len(noisy):
        lines += ["", f"{t['spread']}:"]
        lines += ["  " + t["spread_line"].format(e=int(x.Epoch), m=loss_str(x.Mean), s=loss_str(x.Std),
                                                 lo=loss_str(x.Min), hi=loss_str(x.Max))
                  for x in noisy.itertuples()]
    lines.append(RULE)
    return "\n".join(lines) + "\n"

