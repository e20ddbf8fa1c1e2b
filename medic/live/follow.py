"""Following a run's epoch CSV as it grows, one line per finished epoch (``medic watch``).

Reads only the new bytes of the CSV each poll (``medic.store.tail.CsvTail``), so a poll costs the
same on a 10-row and a 10M-row file. Progress and ETA come from the planned epoch count in the
run's sidecar; the ETA is ``medic.store.columns.eta_seconds``, the number the console and the live
monitor show. ``follow`` returns once the run has ended (completed, failed, stopped, or
interrupted: its process is gone) and no rows are left to print. Standard library only: starts fast.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from medic.errors import RunNotFoundError
from medic.store import columns as C
from medic.store.catalog import resolve_csv
from medic.store.columns import compact_cells
from medic.store.files import shown_path
from medic.store.paths import Project, run_id_sort_key
from medic.store.sidecar import read_sidecar
from medic.store.status import FINISHED, effective_status, run_status
from medic.store.tail import CsvTail

TEXT = {
    "en": {"watch": "Watching run {id} ({file}): {plan}status {status}. Ctrl-C to stop.",
           "plan": "{n} epochs planned, ", "wait": "Waiting for a run in {dir} ...",
           "switch": "A newer run started: now watching {id}.",
           "reset": "({file} was rewritten — a resumed run? — reading it again)",
           "progress": "{pct:.1f}%", "loss": C.AVG_LOSS, "lr": "LR", "time": "{s}s", "best": "best",
           "rate": "{v:.1f} samples/s",
           "eta": "ETA", "end": "Run {id} {status}: {done}{plan} epochs{best}.",
           "end_best": ", best {name} {value} at epoch {epoch}", "message": "  ({message})",
           "none": "Run {id}: no epoch finished yet ({status}).",
           "bye": "Stopped watching (the run itself goes on)."},
    "zh": {"watch": "监控运行 {id} ({file}): {plan}状态 {status}。按 Ctrl-C 退出。",
           "plan": "计划 {n} 个Epoch, ", "wait": "等待 {dir} 中出现运行 ...",
           "switch": "新的运行已开始: 现在监控 {id}。",
           "reset": "({file} 已被重写 (恢复训练?), 重新读取)",
           "progress": "进度 {pct:.1f}%", "loss": "平均损失", "lr": "学习率", "time": "用时 {s}秒",
           "rate": "{v:.1f} 样本/秒",
           "best": "最佳", "eta": "预计剩余", "end": "运行 {id} 已结束 ({status}): {done}{plan} 个Epoch{best}。",
           "end_best": ", 最佳 {name} {value} (Epoch {epoch})", "message": "  ({message})",
           "none": "运行 {id}: 还没有完成的Epoch ({status})。",
           "bye": "已停止监控 (训练仍在继续)。"},
}


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


class Follower:
    """One run's epoch CSV, read incrementally; ``poll()`` prints the rows that are new."""

    def __init__(self, path: Path, run_id: str | None, lang: str, out=None):
        self.path, self.run_id, self.t = path, run_id or path.stem, TEXT[lang]
        self.sidecar_path = path.with_name(f"run_{run_id}.json") if run_id else None
        self.tail = CsvTail(path)
        self.out = out or sys.stdout
        self.printed: dict[int, list[str]] = {}
        self.times: dict[int, float] = {}
        self.best: tuple[str, int] | None = None
        self.last_epoch = 0
        self.monitor = C.AVG_LOSS

    def sidecar(self) -> dict | None:
        side = read_sidecar(self.sidecar_path) if self.sidecar_path else None
        self.monitor = self.monitor_of(side)
        return side

    @staticmethod
    def monitor_of(sidecar: dict | None) -> str:
        """The metric the run selects its best model by (what "best" means on the line)."""
        side = sidecar or {}
        return str(side.get("monitor") or (side.get("config") or {}).get("monitor") or C.AVG_LOSS)

    def status(self, sidecar: dict | None) -> str:
        if self.sidecar_path is None:  # a CSV named otherwise: its changes are its only sign of life
            return effective_status(sidecar, last_update=self.path.stat().st_mtime if self.path.exists() else None)
        return run_status(Project.at(self.path.parent.parent), self.run_id, sidecar)

    @staticmethod
    def planned(sidecar: dict | None) -> int | None:
        side = sidecar or {}
        value = side.get("epochs") or (side.get("config") or {}).get("epochs")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def header(self) -> None:
        side = self.sidecar()
        planned = self.planned(side)
        self.say(self.t["watch"].format(id=self.run_id, file=shown_path(self.path),
                                        plan=self.t["plan"].format(n=planned) if planned else "",
                                        status=self.status(side)))

    def poll(self, sidecar: dict | None) -> int:
        """Print every new (or changed, after a rewrite) epoch row; returns how many."""
        rows = self.tail.poll()
        if self.tail.reset:
            self.say(self.t["reset"].format(file=self.path.name))
            self.times.clear()
        header = self.tail.header or []
        planned = self.planned(sidecar)
        shown = 0
        for cells in rows:
            row = dict(zip(header, cells))
            try:
                epoch = int(row.get(C.EPOCH, ""))
            except ValueError:
                continue  # not an epoch row: nothing sensible to print
            self.times[epoch] = _num(row.get(C.EPOCH_TIME))
            if row.get(C.IS_BEST, "").strip().lower() == "true":
                self.best = (row.get(C.BEST_SO_FAR, ""), epoch)
            self.last_epoch = epoch
            if self.printed.get(epoch) == cells:
                continue
            self.printed[epoch] = cells
            self.say(self.line(row, header, epoch, planned))
            shown += 1
        return shown

    def line(self, row: dict[str, str], header: list[str], epoch: int, planned: int | None) -> str:
        t = self.t
        parts = [f"Epoch [{epoch}/{planned}]" if planned else f"Epoch [{epoch}]"]
        if planned:
            parts[0] += " " + t["progress"].format(pct=100.0 * epoch / planned)
        parts.append(f"{t['loss']} {row.get(C.AVG_LOSS, '-')} "
                     f"({row.get(C.MIN_BATCH_LOSS, '-')} - {row.get(C.MAX_BATCH_LOSS, '-')})")
        parts.append(f"{t['lr']} {row.get(C.LEARNING_RATE, '-')}")
        parts.append(t["time"].format(s=row.get(C.EPOCH_TIME, "-")))
        best = f"{t['best']} {self.monitor} {row.get(C.BEST_SO_FAR, '-')}"
        if row.get(C.IS_BEST, "").strip().lower() == "true":
            best += " ✓"
        parts.append(best)
        parts += compact_cells(header, row, set(header) - set(C.metric_columns(header)))
        rate = _num(row.get(C.SAMPLES_PER_SECOND))
        if math.isfinite(rate):
            parts.append(t["rate"].format(v=rate))
        eta = C.eta_seconds([self.times[e] for e in sorted(self.times)], planned - epoch) \
            if planned and planned > epoch else None
        if eta is not None:
            parts.append(f"{t['eta']} {C.format_duration(eta)}")
        return " | ".join(parts)

    def farewell(self, status: str, sidecar: dict | None) -> None:
        planned = self.planned(sidecar)
        if not self.printed:
            self.say(self.t["none"].format(id=self.run_id, status=status))
            return
        best = (self.t["end_best"].format(name=self.monitor_of(sidecar), value=self.best[0], epoch=self.best[1])
                if self.best else "")
        line = self.t["end"].format(id=self.run_id, status=status, done=self.last_epoch,
                                    plan=f"/{planned}" if planned else "", best=best)
        message = (sidecar or {}).get("message")
        self.say(line + (self.t["message"].format(message=message) if message else ""))


def newest_run(project: Project) -> str | None:
    """The newest run, with or without an epoch CSV yet (a run that is starting has its sidecar
    only: it is followed, and its rows are printed once they come)."""
    ids = project.run_ids()
    return ids[-1] if ids else None


def follow(project: Project, lang: str, run: str | None = None, metrics_file: str | None = None,
           interval: float = 5.0, once: bool = False, out=None) -> int:
    """Print a run's epochs as they land until it ends (``once``: what is there now); returns 0.

    Args:
        project: the project whose runs are followed.
        lang: ``en`` or ``zh``.
        run: a run id (or ``latest``); with neither it nor ``metrics_file``, the newest run,
            switching to a newer one when it starts.
        metrics_file: an epoch CSV's path.
        interval: seconds between polls.
        once: print what is there and return.
        out: where lines go (stdout).
    """
    out = out or sys.stdout
    pinned = bool(run or metrics_file)
    if run and project.sidecar(run).is_file():  # its CSV may not exist yet
        path, run_id = project.epoch_csv(run), run
    elif pinned:
        path, run_id = resolve_csv(project, run=run, metrics_file=metrics_file)
        if metrics_file:
            from medic.store.readers import read_header
            read_header(path)  # a missing, binary or empty file is an error, not a wait
    else:
        if not project.metrics.is_dir():
            raise RunNotFoundError(f"no metrics/ folder in {project.root}: not a medic project "
                                   "(run this in the project folder or pass --root DIR)")
        run_id = newest_run(project)
        if run_id is None:
            if once:
                raise RunNotFoundError(f"no runs in {project.metrics} (start one with medic train)")
            print(TEXT[lang]["wait"].format(dir=shown_path(project.metrics)), file=out, flush=True)
            while run_id is None:
                time.sleep(interval)
                run_id = newest_run(project)
        path = project.epoch_csv(run_id)
    follower = Follower(path, run_id, lang, out)
    follower.header()
    while True:
        if not pinned:
            newest = newest_run(project)
            if newest and run_id_sort_key(newest) > run_id_sort_key(follower.run_id):
                follower.say(TEXT[lang]["switch"].format(id=newest))
                follower = Follower(project.epoch_csv(newest), newest, lang, out)
                follower.header()
        # the status is read before the rows: a run marks itself ended only after writing its
        # last row, so "ended, and nothing new after that" really is the end
        sidecar = follower.sidecar()
        status = follower.status(sidecar)
        shown = follower.poll(sidecar)
        if once or (shown == 0 and status in FINISHED):
            if status in FINISHED or once and not follower.printed:
                follower.farewell(status, sidecar)
            return 0
        time.sleep(interval)
