"""Running, signalling and killing real ``medic train`` jobs, and checking what they leave behind.

Everything here works on real processes and real files: a job is the ``medic`` command in a
session of its own; a hard kill freezes every process of the job (launcher, torchrun agent,
workers, found through /proc) and then SIGKILLs them all, as an out-of-memory killer or a
scheduler's cgroup kill would. ``check`` and ``injected`` count what the fault suite does, for
its summary line.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Collection

import pytest

from conftest import PY, ROOT, child_env

PLUGINS = ROOT / "tests" / "plugins"
COUNTS = {"faults": 0, "checks": 0}
FAULT_KINDS: dict[str, int] = {}


def check(condition, message: str = "") -> None:
    """An assertion that is counted in the suite's summary."""
    COUNTS["checks"] += 1
    assert condition, message


def injected(kind: str, n: int = 1) -> None:
    COUNTS["faults"] += n
    FAULT_KINDS[kind] = FAULT_KINDS.get(kind, 0) + n


def fault_env(**extra) -> dict:
    """A child environment in which the test plug-ins (``faulty``) import. They use no MONAI, so
    MONAI's optional packages stay held back as in a run without plug-ins (seconds less per job
    start; ``tests/test_timing_views.py`` covers the whole import a plug-in gets by default)."""
    extra = {"MEDIC_IMPORT_ALL": "0", **extra}
    env = child_env(**{k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), env["PYTHONPATH"]])
    return env


# -- processes -----------------------------------------------------------------------------------

def _ppid_map() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read().decode(errors="replace")
            except OSError:
                continue
            out[int(name)] = int(data[data.rfind(")") + 2:].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (torchrun workers sit in sessions of their own, so a
    process-group signal would miss them)."""
    parents = _ppid_map()
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in found]
        found += kids
        frontier = kids
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().decode(errors="replace")
    except OSError:
        return False
    return state[state.rfind(")") + 2:].split()[0] not in ("Z", "X")


@dataclass
class Job:
    """One ``medic train`` command running in ``cwd`` with its output in files."""

    cwd: Path
    args: list[str]
    env: dict
    name: str = "job"
    proc: subprocess.Popen | None = None
    started: float = 0.0
    tree: set[int] = field(default_factory=set)

    def start(self) -> "Job":
        logs = self.cwd.parent / "joblogs"
        logs.mkdir(exist_ok=True)
        self.out_path, self.err_path = logs / f"{self.name}.out", logs / f"{self.name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([PY, "-m", "medic.cli", "train", *self.args], cwd=self.cwd,
                                         env=self.env, stdout=out, stderr=err, start_new_session=True)
        self.started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[int]:
        """The launcher and everything below it; remembered, so that orphans can be checked."""
        pids = [self.pid, *descendants(self.pid)] if self.running() else descendants(self.pid)
        self.tree.update(pids)
        return pids

    def hard_kill(self) -> float:
        """Freeze the whole job, then SIGKILL every process of it; returns the kill time."""
        frozen: list[int] = []
        for _ in range(20):  # repeat until no new process appears (torchrun may be forking)
            new = [p for p in self.processes() if p not in frozen]
            if not new:
                break
            for p in new:
                try:
                    os.kill(p, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            frozen += new
        t = time.monotonic()
        for p in frozen:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in frozen) and time.monotonic() < deadline:
            time.sleep(0.02)
        return t

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every process of the job at once (a scheduler's preemption)."""
        for p in self.processes():
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.hard_kill()
            raise AssertionError(f"{self.name}: still running after {timeout:.0f} s; killed.\n{self.output()}")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()[-3000:]}\n--- stderr ---\n{self.stderr()[-4000:]}"

    def orphans(self) -> list[int]:
        return [p for p in self.tree if alive(p)]


def run_cli(cwd: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", *args], cwd=cwd, env=env or fault_env(),
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float, job: Job | None = None, poll: float = 0.005):
    """Poll ``predicate`` until it returns something true; give up (None) when the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if job is not None and not job.running():
            return predicate() or None
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s" + (f"\n{job.output()}" if job else ""))


# -- files ---------------------------------------------------------------------------------------

def complete_rows(path: Path) -> tuple[list[str], list[dict[str, str]], bytes]:
    """Header and complete rows of a CSV, and the partial last line (what a reader skips)."""
    data = path.read_bytes() if path.exists() else b""
    cut = data.rfind(b"\n") + 1
    text, tail = data[:cut].decode("utf-8"), data[cut:]
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return [], [], tail
    header = rows[0]
    return header, [dict(zip(header, r)) for r in rows[1:]], tail


def count_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def _has_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\n" in f.read(4096)
    except OSError:
        return False


class LiveReaders(threading.Thread):
    """Reads one run over and over while it is written, killed, truncated and resumed, the way
    medic's readers do: ``CsvTail`` on both CSVs, the pandas readers, the notebook monitor's
    feed. Anything they raise or any malformed row they return is kept in ``errors``."""

    def __init__(self, root: Path, run_id: str, interval: float = 0.02):
        super().__init__(daemon=True, name="live-readers")
        self.root, self.run_id, self.interval = root, run_id, interval
        self.errors: list[str] = []
        self.polls = 0
        self.rows_seen = 0
        self.resets = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from medic.live import LiveMonitor
        from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS
        from medic.store.paths import Project
        from medic.store.readers import read_batch_csv, read_epoch_csv
        from medic.store.readers import read_header
        from medic.store.tail import CsvTail
        project = Project.at(self.root)
        epoch_path, batch_path = project.epoch_csv(self.run_id), project.batch_csv(self.run_id)
        # the epoch CSV's width is its header's (the nine, validation and timing columns)
        tails = [[CsvTail(epoch_path), None], [CsvTail(batch_path), len(BATCH_COLUMNS)]]
        monitor = LiveMonitor(self.run_id, self.root, interactive=False, refresh=0.1)
        while not self._halt.is_set():
            try:
                for entry in tails:
                    tail, width = entry
                    rows = tail.poll()
                    if width is None and rows:
                        width = entry[1] = len(read_header(tail.path))
                        assert read_header(tail.path)[:len(EPOCH_COLUMNS)] == list(EPOCH_COLUMNS)
                    self.resets += tail.reset
                    self.rows_seen += len(rows)
                    bad = [r for r in rows if len(r) != width or not r[0].isdigit()]
                    if bad:
                        self.errors.append(f"CsvTail({tail.path.name}) returned a malformed row {bad[0]}")
                if self.polls % 10 == 0 and _has_header(epoch_path):
                    # (a run's epoch CSV is empty for a moment: its id is reserved before the
                    # header is written, and the pandas readers rightly call an empty file an error)
                    frame = read_epoch_csv(epoch_path, allow_empty=True)
                    if list(frame["Epoch"]) != list(range(1, len(frame) + 1)):
                        self.errors.append(f"read_epoch_csv: epochs {list(frame['Epoch'])}")
                    if count_rows(batch_path):
                        read_batch_csv(batch_path)
                if self.polls % 5 == 0:
                    monitor.step()
                    monitor.progress().text()
                    epochs = [int(e) for e in monitor.feed.epoch_values("Epoch")]
                    if epochs != list(range(1, len(epochs) + 1)):
                        self.errors.append(f"live monitor feed: epochs {epochs}")
            except Exception as err:  # noqa: BLE001 - every failure of a reader is a finding
                self.errors.append(f"{type(err).__name__}: {err}")
            self.polls += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under ``root`` with its size and mtime, and every folder (marked as such)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ("dir",)
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """What changed, ignoring new empty folders (the output folders may be created)."""
    problems = [f"changed or removed: {k}" for k, v in before.items() if after.get(k) != v]
    problems += [f"new file: {k}" for k in after if k not in before and not k.endswith("/")]
    return problems


# -- the fault suite's shared configuration, its report and a run's files ---------------------------

STEPS = 8        # 64 samples over 2 ranks in batches of 4
EPOCHS = 16
SAVE = 2         # model_epoch_N.pth every SAVE epochs
NEWEST_SAVED = f"model_epoch_{EPOCHS // SAVE * SAVE}.pth"
BASE = ["--nproc_per_node", "2", "--num_samples", "64", "--image_size", "32", "--batch_size", "4",
        "--log_batch_metrics", "--log_interval", "1", "--save_interval", str(SAVE), "--lang", "en",
        "--dataset", "faulty:dataset", "--threads", "1"]
COMPARED = ("Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate",
            "Best_Loss_So_Far", "Is_Best_Model")
REPORT: list[str] = []


def note(text: str) -> None:
    """A line of ``test-artifacts/faults_report.txt``."""
    REPORT.append(text)


def summary_line(seconds: float) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(FAULT_KINDS.items()))
    return f"faults injected: {COUNTS['faults']}, checks: {COUNTS['checks']} ({kinds}; {seconds:.0f} s)"


def write_summary(line: str) -> None:
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "faults_summary.txt").write_text(line + "\n")
    (out / "faults_report.txt").write_text("\n".join(REPORT + [line]) + "\n")


def run_ids(root: Path) -> list[str]:
    return sorted(p.name[len("epoch_metrics_"):-4] for p in (root / "metrics").glob("epoch_metrics_*.csv"))


def sidecar(root: Path, run_id: str) -> dict:
    from medic.store.sidecar import read_sidecar
    return read_sidecar(root / "metrics" / f"run_{run_id}.json") or {}


def epoch_rows(root: Path, run_id: str) -> list[dict]:
    return complete_rows(root / "metrics" / f"epoch_metrics_{run_id}.csv")[1]


def batch_rows(root: Path, run_id: str) -> list[dict]:
    return complete_rows(root / "metrics" / f"batch_metrics_{run_id}.csv")[1]


def checkpoint_epoch(root: Path, run_id: str) -> tuple[int, int]:
    """(epochs done, batches into the next epoch) of the checkpoint a resume would use; (0, 0)
    when there is none."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    try:
        _, state = ckpt.newest_intact(root / "checkpoints" / run_id, warn=lambda m: None)
    except MedicError:
        return 0, 0
    partial = state.get("partial")
    return state["epoch"], partial["batch"] if partial else 0


def check_files(root: Path, run_id: str, damaged: Collection[Path] = (), nonfinite_ok: bool = False) -> dict:
    """What must hold at any moment, even right after a SIGKILL: both CSVs parse (a partial last
    line aside) with one row per epoch / per (epoch, batch) in order; medic's readers agree;
    every checkpoint on disk loads; the checkpoint is at most one epoch behind the epoch CSV."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS
    from medic.store.readers import read_batch_csv, read_epoch_csv
    metrics = root / "metrics"
    header, rows, tail = complete_rows(metrics / f"epoch_metrics_{run_id}.csv")
    check(header[:9] == list(EPOCH_COLUMNS), f"epoch CSV header {header}")
    epochs = [int(r["Epoch"]) for r in rows]
    check(epochs == list(range(1, len(rows) + 1)), f"epoch rows {epochs}")
    for r in rows:
        check(all(math.isfinite(float(r[c])) for c in ("Avg_Loss", "Best_Loss_So_Far")) or nonfinite_ok, r)
    check(len(read_epoch_csv(metrics / f"epoch_metrics_{run_id}.csv", allow_empty=True)) == len(rows))
    bheader, brows, btail = complete_rows(metrics / f"batch_metrics_{run_id}.csv")
    pairs = [(int(r["Epoch"]), int(r["Batch"])) for r in brows]
    check(bheader == list(BATCH_COLUMNS) or not bheader, f"batch CSV header {bheader}")
    check(pairs == [(j // STEPS + 1, j % STEPS) for j in range(len(pairs))], f"batch rows out of order: {pairs[-12:]}")
    if brows:
        check(len(read_batch_csv(metrics / f"batch_metrics_{run_id}.csv")) == len(brows))
    loaded = {}
    for path in sorted((root / "checkpoints" / run_id).glob("*.pth")):
        if path in damaged:
            with pytest.raises(MedicError, match="truncated or corrupt"):
                ckpt.load(path)
            COUNTS["checks"] += 1
            continue
        loaded[path.name] = ckpt.load(path)
        COUNTS["checks"] += 1
    done, _ = checkpoint_epoch(root, run_id)
    check(done <= len(rows) <= done + 1, f"checkpoint at epoch {done}, CSV has {len(rows)} epochs")
    return {"epochs": len(rows), "batches": len(brows), "partial_lines": int(bool(tail)) + int(bool(btail)),
            "checkpoint": done, "loaded": loaded}


def compare_with_reference(rows: list[dict], ref_rows: list[dict], columns, what: str) -> int:
    """Values equal to an uninterrupted run's (to 1e-6); returns how many rows are equal as text."""
    check(len(rows) <= len(ref_rows))
    exact = 0
    for got, ref in zip(rows, ref_rows):
        for c in columns:
            if c == "Is_Best_Model":
                check(got[c] == ref[c], f"{what} {got} != {ref}")
            else:
                check(float(got[c]) == pytest.approx(float(ref[c]), rel=1e-6, abs=1e-6), f"{what} {c}: {got} != {ref}")
        exact += all(got[c] == ref[c] for c in columns)
    return exact


def continuous_best(rows: list[dict]) -> None:
    best = math.inf
    for r in rows:
        loss = float(r["Avg_Loss"])
        improved = loss < best
        best = min(best, loss)
        check(r["Is_Best_Model"] == str(improved), f"Is_Best_Model at epoch {r['Epoch']}")
        check(float(r["Best_Loss_So_Far"]) == pytest.approx(best, abs=1e-6), f"Best_Loss_So_Far at epoch {r['Epoch']}")


def new_project(tmp_path: Path, name: str = "project") -> Path:
    root = tmp_path / name
    root.mkdir()
    return root



def make_reference(base: Path) -> SimpleNamespace:
    """An uninterrupted run of the configuration the kill and stop tests use, in ``base``."""
    root = new_project(base)
    job = Job(root, [*BASE, "--epochs", str(EPOCHS)], fault_env(), name="reference").start()
    t = time.monotonic()
    assert job.wait(400) == 0, job.output()
    note(f"reference run: {EPOCHS} epochs x {STEPS} steps, 2 processes, {time.monotonic() - t:.1f} s")
    (run_id,) = run_ids(root)
    return SimpleNamespace(root=root, run_id=run_id, epochs=epoch_rows(root, run_id),
                           batches=batch_rows(root, run_id))
