"""medic watch: follows a CSV that another thread is writing, switches to a newer run, ends when
the run ends, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time

import pytest
from _analysis_helpers import cli, write_run
from conftest import PY, child_env

from medic.store.logger import MetricsLogger
from medic.store.sidecar import update_sidecar
from test_catalog import dead_pid


class Watch:
    """``medic watch`` as a subprocess whose output lines are collected as they arrive."""

    def __init__(self, cwd, *args: str, sigint=signal.SIG_DFL):
        # SIGINT as the child starts: default, as from a terminal; or ignored, as a background job
        # of a shell script starts (whatever pytest itself inherited does not matter)
        self.proc = subprocess.Popen([PY, "-m", "medic.cli", "watch", "--interval", "0.1", *args], cwd=cwd,
                                     env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed; got:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return rc, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_run(project, run_id: str, planned: int) -> MetricsLogger:
    """A run 'in progress' (this test process is its live pid), epochs written by ``epoch``."""
    write_run(project, run_id, epochs=0, status="running", pid=os.getpid(), planned=planned)
    return MetricsLogger(project, run_id)


def epoch(logger: MetricsLogger, e: int) -> None:
    logger.log_epoch(e, avg_loss=1.0 / e, min_batch_loss=0.9 / e, max_batch_loss=1.1 / e, learning_rate=0.001,
                     epoch_time=2.0)


def test_follows_rows_as_they_land_and_exits_when_completed(project):
    logger = start_run(project, "20250101_000001", planned=5)
    watch = Watch(project, "--run", "20250101_000001")
    try:
        watch.wait_for("Watching run 20250101_000001")
        for e in range(1, 6):
            epoch(logger, e)
            line = watch.wait_for(f"Epoch [{e}/5]")  # printed while the run goes on
            assert f"{100 * e / 5:.1f}%" in line and f"Avg_Loss {1.0 / e:.6f}" in line
            # the one ETA (medic.store.columns.eta_seconds), shown as every view shows a duration
            assert (f"ETA {2.0 * (5 - e):.0f}s" in line) if e < 5 else "ETA" not in line
            assert f"best Avg_Loss {1.0 / e:.6f}" in line  # names the metric "best" refers to
            if e == 2:
                write_run(project, "20250101_000002", epochs=1, status="running", pid=os.getpid())
        logger.close()
        update_sidecar(project / "metrics" / "run_20250101_000001.json", status="completed")
        rc, err = watch.finish()
    finally:
        watch.kill()
    assert rc == 0 and "Traceback" not in err, err
    epochs = [ln for ln in watch.lines if ln.startswith("Epoch [")]
    assert [ln.split("]")[0] for ln in epochs] == [f"Epoch [{e}/5" for e in range(1, 6)]
    assert not any("newer run" in ln for ln in watch.lines)  # pinned by --run
    assert watch.lines[-1].startswith("Run 20250101_000001 completed: 5/5 epochs, best Avg_Loss 0.200000 at epoch 5")


def test_switches_to_a_newer_run(project):
    first = start_run(project, "20250101_000001", planned=10)
    watch = Watch(project)
    try:
        watch.wait_for("Watching run 20250101_000001")
        epoch(first, 1)
        watch.wait_for("Epoch [1/10]")
        second = start_run(project, "20250101_000001_2", planned=2)
        watch.wait_for("A newer run started: now watching 20250101_000001_2")
        watch.wait_for("Watching run 20250101_000001_2")
        for e in (1, 2):
            epoch(second, e)
            watch.wait_for(f"Epoch [{e}/2]")
        second.close()
        update_sidecar(project / "metrics" / "run_20250101_000001_2.json", status="stopped", message="stopped by user")
        rc, err = watch.finish()
    finally:
        watch.kill()
        first.close()
    assert rc == 0 and "Traceback" not in err
    assert watch.lines[-1] == ("Run 20250101_000001_2 stopped: 2/2 epochs, best Avg_Loss 0.500000 at epoch 2."
                               "  (stopped by user)")


def test_once_skips_the_partial_last_line(project):
    write_run(project, "20250101_000001", epochs=3, status="running", pid=os.getpid(), planned=8,
              extra={"Val_Dice": lambda e: 0.25 * e})
    with open(project / "metrics" / "epoch_metrics_20250101_000001.csv", "a") as f:
        f.write("4,0.25,0.2")
    out = cli("watch", "--once", cwd=project)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Watching run 20250101_000001 (metrics/epoch_metrics_20250101_000001.csv): "
                               "8 epochs planned, status running")
    assert [ln[:13] for ln in lines[1:]] == ["Epoch [1/8] 1", "Epoch [2/8] 2", "Epoch [3/8] 3"]
    assert "Val_Dice 0.750000" in lines[3] and "✓" in lines[3]
    out = cli("watch", "--once", "--lang", "zh", cwd=project)
    assert "进度 37.5%" in out.stdout and "预计剩余" in out.stdout


def test_interrupted_run_ends_the_watch(project):
    write_run(project, "20250101_000001", epochs=2, status="running", pid=dead_pid(), planned=9)
    out = cli("watch", "--interval", "0.1", cwd=project, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("Run 20250101_000001 interrupted: 2/9 epochs")


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["terminal", "started-ignoring-sigint"])
def test_ctrl_c_stops_cleanly(project, sigint):
    logger = start_run(project, "20250101_000001", planned=3)
    watch = Watch(project, sigint=sigint)
    try:
        watch.wait_for("Watching run")
        watch.proc.send_signal(signal.SIGINT)
        rc, err = watch.finish()
    finally:
        watch.kill()
        logger.close()
    assert rc == 0 and "Traceback" not in err and err == ""
    assert watch.lines[-1] == "Stopped watching (the run itself goes on)."


@pytest.mark.parametrize("setup, args, expected", [
    ("runs", ["--run", "20990101_000000"], "no such run"),
    ("none", [], "not a medic project"),
    ("empty", ["--once"], "no runs in"),
    ("runs", ["--metrics_file", "metrics/nothing.csv"], "not found"),
    ("runs", ["--interval", "0"], "--interval must be > 0"),
])
def test_bad_input(project, setup, args, expected):
    if setup == "runs":
        write_run(project, "20250101_000001", epochs=1)
    elif setup == "empty":
        (project / "metrics").mkdir()
    out = cli("watch", *args, cwd=project, timeout=30)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
