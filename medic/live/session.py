"""The live monitor of a run, for notebooks: progress bar with ETA, latest values, plots.

    monitor = medic.live.monitor(job)                         # JupyterLab: returns at once
    medic.live.monitor("20251106_103015", interactive=False)   # papermill: blocks until the run ends

It reads the run's files only (the CSVs through ``CsvTail``, the sidecar, the progress lines of the
training log), incrementally, so a poll costs what is new, not the whole file. It redraws only when
rows arrived and at most every ``min_redraw`` seconds.

Interactive mode runs the polling in a background thread, so the kernel stays free and the Stop
button is heard (a blocking loop would not see the click). The thread never prints: output from a
thread lands in whatever cell runs next; it only sets widget values. Headless mode (papermill has no
frontend to render widgets) blocks and updates display handles, which nbclient stores as ordinary
outputs, so the output notebook keeps the final figure as image/png and a summary table.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

from medic.jobs import Job, attach
from medic.live.feed import Progress, RunFeed, format_seconds
from medic.live.strip import newest_strip
from medic.store import columns as C
from medic.store.paths import Project
from medic.store.status import FINISHED, run_status, shown_status

STALE_SECONDS = 60.0  # a run id with no file at all counts as gone after this much waiting
_SHOWN: dict[str, "LiveMonitor"] = {}  # the interactive monitor on show for each run id


class LiveMonitor:
    """Live view of one run; see the module docstring. Use ``monitor()`` to make and show one."""

    def __init__(self, run: str | Job | None = None, root: str | os.PathLike | None = None, *,
                 interactive: bool = True, refresh: float = 1.0, min_redraw: float = 0.5,
                 analysis: bool = False, timeout: float | None = None):
        self.job = run if isinstance(run, Job) else None
        self.project = self.job.project if self.job else Project.at(root)
        if self.job:
            run_id = self.job.run_id
        elif run:
            run_id = str(run)
        else:
            ids = self.project.run_ids()
            if not ids:
                from medic.errors import RunNotFoundError
                raise RunNotFoundError(f"no runs in {self.project.metrics} to monitor")
            run_id = ids[-1]
        self.run_id = run_id
        self.feed = RunFeed(run_id, self.project)
        self.interactive = interactive
        self.refresh = max(refresh, 0.1)
        self.min_redraw = max(min_redraw, 0.5) if interactive else min_redraw
        self.analysis = analysis
        self.timeout = timeout
        self.status = "waiting"
        self.png: bytes | None = None
        self._last_draw = 0.0
        self._started = time.monotonic()
        self._done = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._epochs_printed = 0
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<LiveMonitor run {self.run_id}: {self.status}>"

    # -- state ----------------------------------------------------------------------------------
    def _run_status(self) -> tuple[str, bool]:
        """(status, ended?) from the job's process, else from the sidecar checked against the
        process it names (``medic.store.status``). Once the process is gone the sidecar is read again:
        the trainer wrote its verdict just before exiting."""
        if self.job is not None:
            rc = self.job.poll()
            if rc is None:  # a scheduler's job (no local pid) is queued, starting or running
                if self.job.pid is not None:
                    return "running", False
                sc = self.job.sidecar  # read once: the status and why a queued job waits
                return shown_status(run_status(self.project, self.run_id, sc) or "queued", sc), False
            final = (self.feed.read_sidecar() or {}).get("status")
            # gone without an end record: interrupted (the table's word for it)
            return (final if final in FINISHED else "interrupted"), True
        sc = self.feed.sidecar or self.feed.read_sidecar()
        if sc is not None or self.project.epoch_csv(self.run_id).exists():
            status = run_status(self.project, self.run_id, sc)
            if status == "interrupted" and sc is not None:  # it may have just written its verdict
                status = run_status(self.project, self.run_id)
            return shown_status(status, sc), status in FINISHED
        # nothing of the run yet: wait a while for it to appear
        quiet = time.monotonic() - self._started
        return ("interrupted" if quiet > STALE_SECONDS else "waiting"), quiet > STALE_SECONDS

    def step(self) -> tuple[bool, bool]:
        """One poll: returns (redraw needed, run ended)."""
        status, ended = self._run_status()
        new = self.feed.poll()  # after the status check, so rows written before the end are read
        self.status = status
        if self.timeout is not None and time.monotonic() - self._started > self.timeout:
            self.status, ended = f"{status} (monitor timed out)", True
        due = time.monotonic() - self._last_draw >= self.min_redraw
        return (ended or (new and due) or self.png is None and self.feed.epochs_done > 0), ended

    def render(self) -> bytes:
        from medic.live.plot import render_png
        self.png = render_png(self.feed)
        self._last_draw = time.monotonic()
        return self.png

    def progress(self) -> Progress:
        return self.feed.progress(self.status)

    def summary(self):
        """One row per fact: status, epochs, best and final loss, time — a pandas DataFrame."""
        import pandas as pd
        p, f = self.progress(), self.feed
        facts: dict[str, Any] = {"run": self.run_id, "status": self.status,
                                 "epochs": f"{p.epochs_done}/{p.epochs_total or '?'}"}
        loss, best = f.epoch_values(C.AVG_LOSS), f.epoch_values(C.BEST_SO_FAR)
        if loss:
            flags = f.epoch_values(C.IS_BEST)
            best_epochs = [int(e) for e, fl in zip(f.epoch_values(C.EPOCH), flags) if fl]
            facts.update({f"final {C.AVG_LOSS}": loss[-1], "monitor": f.monitor,
                          "best": best[-1] if best else min(loss),
                          "best epoch": best_epochs[-1] if best_epochs else None,
                          "final LR": f.epoch_values(C.LEARNING_RATE)[-1],
                          "training time": format_seconds(C.training_seconds(f.epoch_values(C.EPOCH_TIME)))})
            for name in f.extra_columns:
                facts[f"final {name}"] = f.epoch_values(name)[-1]
            if math.isfinite(f.samples_per_s()):
                facts["samples/s"] = f.samples_per_s()
        if self.job is not None and self.job.poll() is not None:
            facts["exit code"] = self.job.poll()
        message = (self.feed.read_sidecar() or {}).get("message")
        if message:  # why it ended (a job that died before training shows its output's last lines)
            facts["message"] = message
        return pd.DataFrame({"value": [str(v) if not isinstance(v, float) else f"{v:.6g}"
                                       for v in facts.values()]}, index=list(facts))

    # -- showing --------------------------------------------------------------------------------
    def show(self) -> "LiveMonitor":
        if self.interactive:
            from medic.live.widget import WidgetView
            # a cell run again replaces its monitor: the old thread would poll on unseen
            previous = _SHOWN.pop(self.run_id, None)
            if previous is not None:
                previous.close()
            _SHOWN[self.run_id] = self
            self._view = WidgetView(self)
            self._thread = threading.Thread(target=self._loop, name=f"medic-live-{self.run_id}",
                                            daemon=True)
            self._thread.start()
        else:
            self._run_headless()
        return self

    def _loop(self) -> None:
        view = self._view
        try:
            while not self._closing.is_set():
                redraw, ended = self.step()
                view.update(self.render() if redraw else None)
                if ended:
                    view.finish()
                    break
                self._closing.wait(self.refresh)
        except Exception as err:  # shown in the widget: a thread must not print
            self.error = err
            view.failed(err)
        finally:
            self._done.set()

    def _run_headless(self) -> None:
        from IPython.display import Image, display
        status = _Handle(self._status_bundle())
        figure = _Handle({"text/plain": "(the figure appears with the first epoch)"})
        try:
            while True:
                redraw, ended = self.step()
                self._print_new_epochs()
                status.update(self._status_bundle())
                if redraw:
                    figure.update(Image(data=self.render()))
                if ended:
                    break
                time.sleep(self.refresh)
        finally:
            self._done.set()
        summary = self.summary()
        if _Handle.in_ipython():
            display(summary)
        else:
            print(summary.to_string())
        strip = newest_strip(self.project.results_dir(self.run_id))
        if strip and _Handle.in_ipython():  # the last validation's predictions
            display(Image(data=strip[1].read_bytes()))
        if self.analysis and self.feed.epochs_done:
            show_analysis(self.run_id, self.project.root)

    def _status_bundle(self) -> dict[str, str]:
        where = self.progress().text()
        return {"text/plain": f"run {self.run_id}: {where}", "text/html": f"<b>run {self.run_id}</b>: {where}"}

    def _print_new_epochs(self) -> None:
        f = self.feed
        ep = f.epoch_values(C.EPOCH)
        for i in range(self._epochs_printed, len(ep)):
            line = (f"Epoch {int(ep[i])}/{self.progress().epochs_total or '?'}  "
                    f"{C.AVG_LOSS} {f.epoch_values(C.AVG_LOSS)[i]:.6f}  "
                    f"best {f.epoch_values(C.BEST_SO_FAR)[i]:.6f}  "
                    f"LR {f.epoch_values(C.LEARNING_RATE)[i]:.8f}  "
                    f"{f.epoch_values(C.EPOCH_TIME)[i]:.2f}s")
            extras = "  ".join(f"{c} {f.epoch_values(c)[i]:.6g}" for c in f.extra_columns)
            rate = f.epoch_values(C.SAMPLES_PER_SECOND)
            if len(rate) > i and rate[i] == rate[i]:
                extras += f"{'  ' if extras else ''}{rate[i]:.1f} samples/s"
            print(line + ("  " + extras if extras else ""), flush=True)
        self._epochs_printed = len(ep)

    # -- control --------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the monitored run ended (interactive mode); False on timeout."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop watching (the run itself goes on)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def stop_run(self, timeout: float = 60.0) -> int | None:
        """Stop the training job itself (what the Stop button does)."""
        job = self.job or attach(self.run_id, self.project.root)
        return job.stop(timeout=timeout)


class _Handle:
    """A display handle that is updated in place; outside IPython (a plain script) status lines
    are printed instead when they change."""

    def __init__(self, bundle: dict[str, str]):
        from IPython.display import display
        self.handle = display(bundle, raw=True, display_id=True) if self.in_ipython() else None
        self.last = bundle if self.handle is not None else None
        if self.handle is None:
            self.update(bundle)

    @staticmethod
    def in_ipython() -> bool:
        from IPython import get_ipython
        return get_ipython() is not None

    def update(self, obj) -> None:
        if obj == self.last:  # an unchanged status costs no message (and no notebook save)
            return
        self.last = obj
        if self.handle is not None:
            self.handle.update(obj, raw=isinstance(obj, dict))
        elif isinstance(obj, dict):
            print(obj.get("text/plain"), flush=True)


def monitor(run: str | Job | None = None, root: str | os.PathLike | None = None, *,
            interactive: bool = True, **options) -> LiveMonitor:
    """Show the live monitor of ``run`` (a ``Job``, a run id, or None for the newest run in
    ``root``). Interactive: widgets updated by a background thread, returns at once. Headless:
    blocks until the run ends, leaving the final figure and a summary table as outputs."""
    return LiveMonitor(run, root, interactive=interactive, **options).show()


def show_analysis(run, root: str | os.PathLike | None = None, batch: bool = True) -> None:
    """Display the figures (as PNG, so papermill keeps them) and the report of ``medic analyze``
    for a run (an id or a ``Run``)."""
    from IPython.display import Image, display

    from medic.analysis.outputs import analyze_run  # pandas, matplotlib: only when shown
    images, report = analyze_run(run, root, batch)
    for _, png in images:
        display(Image(data=png))
    print(report)
