"""``medic watch``: follow a run's epoch CSV in the terminal, one line per finished epoch.

    medic watch                      # the newest run; switches when a newer run starts
    medic watch --run 20251106_103015 --interval 2
    medic watch --once               # print what is there and exit

Reads only the new bytes of the CSV each poll (``medic.store.tail.CsvTail``), so a poll costs the same
on a 10-row and a 10M-row file. Progress and ETA come from the planned epoch count in the run's
sidecar. Exits 0 once the run has ended (completed, failed, stopped, or interrupted: its process
is gone) and no rows are left to print, or on Ctrl-C. Standard library only: starts fast.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

from medic.cli import ArgParser, add_source_options, parse_source_args
from medic.errors import MedicError, RunNotFoundError
from medic.lang import pick_lang
from medic.store.catalog import resolve_csv
from medic.store.columns import compact_cells
from medic.store.files import shown_path
from medic.store.logger import TELEMETRY_COLUMNS
from medic.store.paths import Project, run_id_sort_key
from medic.store.sidecar import read_sidecar
from medic.store.status import FINISHED, effective_status, run_status
from medic.store.tail import CsvTail

TEXT = {
    "en": {"watch": "Watching run {id} ({file}): {plan}status {status}. Ctrl-C to stop.",
           "plan": "{n} epochs planned, ", "wait": "Waiting for a run in {dir} ...",
           "switch": "A newer run started: now watching {id}.",
           "reset": "({file} was rewritten — a resumed run? — reading it again)",
           "progress": "{pct:.1f}%", "loss": "Avg_Loss", "lr": "LR", "time": "{s}s", "best": "best",
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
_SHOWN_FIELDS = ("Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate",
                 "Epoch_Time_Seconds", "Best_Loss_So_Far", "Is_Best_Model", "Timestamp") + TELEMETRY_COLUMNS


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


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

    def sidecar(self) -> dict | None:
        return read_sidecar(self.sidecar_path) if self.sidecar_path else None

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
                epoch = int(row.get("Epoch", ""))
            except ValueError:
                continue  # not an epoch row: nothing sensible to print
            self.times[epoch] = _num(row.get("Epoch_Time_Seconds"))
            if row.get("Is_Best_Model", "").strip().lower() == "true":
                self.best = (row.get("Best_Loss_So_Far", ""), epoch)
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
        parts.append(f"{t['loss']} {row.get('Avg_Loss', '-')} "
                     f"({row.get('Min_Batch_Loss', '-')} - {row.get('Max_Batch_Loss', '-')})")
        parts.append(f"{t['lr']} {row.get('Learning_Rate', '-')}")
        parts.append(t["time"].format(s=row.get("Epoch_Time_Seconds", "-")))
        best = f"{t['best']} {row.get('Best_Loss_So_Far', '-')}"
        if row.get("Is_Best_Model", "").strip().lower() == "true":
            best += " ✓"
        parts.append(best)
        parts += compact_cells(header, row, _SHOWN_FIELDS)
        rate = _num(row.get("Samples_Per_Second"))
        if math.isfinite(rate):
            parts.append(t["rate"].format(v=rate))
        times = [v for v in self.times.values() if math.isfinite(v)]
        if planned and times and planned > epoch:
            parts.append(f"{t['eta']} {format_eta(sum(times) / len(times) * (planned - epoch))}")
        return " | ".join(parts)

    def farewell(self, status: str, sidecar: dict | None) -> None:
        planned = self.planned(sidecar)
        if not self.printed:
            self.say(self.t["none"].format(id=self.run_id, status=status))
            return
        name = (sidecar or {}).get("monitor") or "Avg_Loss"
        best = (self.t["end_best"].format(name=name, value=self.best[0], epoch=self.best[1])
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


def build_parser() -> ArgParser:
    parser = ArgParser(prog="medic watch", description="Follow a run's epoch CSV as it grows.")
    add_source_options(parser, "language")  # without --run: the newest, switching to newer runs
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument("--once", action="store_true", help="print what is there now and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_source_args(build_parser(), argv)
    if not args.interval > 0:
        raise MedicError(f"--interval must be > 0 seconds, got {args.interval}")
    lang = pick_lang(args.lang)
    restore = _ctrl_c_stops()
    try:
        return _watch(args, Project.at(args.root), lang)
    except KeyboardInterrupt:
        print("\n" + TEXT[lang]["bye"], flush=True)
        return 0
    finally:
        restore()


def _ctrl_c_stops():
    """Ctrl-C (SIGINT) is how a watch is stopped, so it must work even when the process started
    with SIGINT ignored — as every background job of a shell script does, and what it starts. Returns
    the function that puts the inherited setting back."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return lambda: None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)


def _watch(args, project: Project, lang: str) -> int:
    pinned = bool(args.run or args.metrics_file)
    if args.run and project.sidecar(args.run).is_file():  # its CSV may not exist yet
        pinned, path, run_id = True, project.epoch_csv(args.run), args.run
    elif pinned:
        path, run_id = resolve_csv(project, run=args.run, metrics_file=args.metrics_file)
        if args.metrics_file:
            from medic.store.readers import read_header
            read_header(path)  # a missing, binary or empty file is an error, not a wait
    else:
        if not project.metrics.is_dir():
            raise RunNotFoundError(f"no metrics/ folder in {project.root}: not a medic project "
                                   "(run this in the project folder or pass --root DIR)")
        run_id = newest_run(project)
        if run_id is None:
            if args.once:
                raise RunNotFoundError(f"no runs in {project.metrics} (start one with medic train)")
            print(TEXT[lang]["wait"].format(dir=shown_path(project.metrics)), flush=True)
            while run_id is None:
                time.sleep(args.interval)
                run_id = newest_run(project)
        path = project.epoch_csv(run_id)
    follower = Follower(path, run_id, lang)
    follower.header()
    while True:
        if not pinned:
            newest = newest_run(project)
            if newest and run_id_sort_key(newest) > run_id_sort_key(follower.run_id):
                follower.say(TEXT[lang]["switch"].format(id=newest))
                follower = Follower(project.epoch_csv(newest), newest, lang)
                follower.header()
        # the status is read before the rows: a run marks itself ended only after writing its
        # last row, so "ended, and nothing new after that" really is the end
        sidecar = follower.sidecar()
        status = follower.status(sidecar)
        shown = follower.poll(sidecar)
        if args.once or (shown == 0 and status in FINISHED):
            if status in FINISHED or args.once and not follower.printed:
                follower.farewell(status, sidecar)
            return 0
        time.sleep(args.interval)
