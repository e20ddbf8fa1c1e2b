"""A sweep seen from a notebook: start its driver in the background, follow it (a live table of
trials with a Stop-all button, or headless: block and show the final table and figure), attach to
it from another kernel, stop it.

The driver is ``medic sweep --resume ID`` in its own session, so it outlives the kernel that
started it, like a launched training job; its output goes to ``analysis/sweeps/<id>/driver.log``.
"""

from __future__ import annotations

import html
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from medic.errors import MedicError
from medic.procs import send_signal
from medic.sweeps.driver import live_drivers, stop_file
from medic.sweeps.results import sweep_summary
from medic.sweeps.spec import load_spec, sweep_dir

SHOWN = ("trial", "status", "slurm", "run_id", "epochs_done", "best", "best_epoch", "time_s")
HIDDEN = ("mode", "notebook", "job_id")


class Sweep:
    def __init__(self, sweep_id: str, root: str | os.PathLike | None = None, storage: str = "",
                 popen: subprocess.Popen | None = None):
        self.sweep_id = sweep_id
        self.root = Path(root or os.getcwd()).resolve()
        self.spec = load_spec(self.root, sweep_id, storage)
        self.storage = storage
        self._popen = popen

    def __repr__(self) -> str:
        return f"<Sweep {self.sweep_id} ({'running' if self.running else 'ended'}) in {self.root}>"

    @property
    def folder(self) -> Path:
        return sweep_dir(self.root, self.sweep_id)

    @property
    def log_path(self) -> Path:
        return self.folder / "driver.log"

    @property
    def running(self) -> bool:
        """True while a driver of this sweep runs on this machine, or as a SLURM job."""
        if self._popen is not None and self._popen.poll() is None:
            return True
        if live_drivers(self.root, self.sweep_id):
            return True
        if self.spec.slurm:
            from medic.sweeps.slurm_trial import driver_job
            return driver_job(self.root, self.sweep_id) is not None
        return False

    def summary(self):
        """One row per trial (``medic.sweep_summary``); on SLURM with each trial's job state
        (``slurm``: ``PENDING (Priority)``, ``RUNNING``; empty once the job has left the queue)."""
        frame = sweep_summary(self.sweep_id, self.root, self.storage)
        if self.spec.slurm:
            from medic import squeue
            listing = squeue.jobs(refresh=True) or {}  # one squeue call for every trial
            states = [listing.get(str(j)) if isinstance(j, str) and j else None for j in frame["job_id"]]
            frame.insert(2, "slurm", [s.shown if s is not None else "" for s in states])
        return frame

    def wait(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {self.sweep_id} is still running after {timeout:g} s")
            time.sleep(0.5)

    def stop(self, timeout: float = 180.0) -> None:
        """Stop the sweep's drivers, here and elsewhere (a stop request in the sweep folder, which
        a driver on a SLURM node reads too): each stops its trials gracefully (they save a
        checkpoint, are marked stopped, and continue on ``--resume``; a trial job still queued is
        cancelled)."""
        stop_file(self.root, self.sweep_id).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        for pid in live_drivers(self.root, self.sweep_id):
            send_signal(pid, signal.SIGINT)
        self.wait(timeout)

    def stop_trials(self, timeout: float = 60.0) -> list[str]:
        """Stop the trials of a sweep that has no driver left (it was killed): each trial's job
        that still waits or runs is stopped as ``medic stop`` stops a run (a queued SLURM job is
        cancelled). Returns their run ids; ``--resume`` continues them."""
        from medic.jobs import attach
        frame = self.summary()
        stopped = []
        for run_id in frame.loc[frame["status"] == "running", "run_id"]:
            job = attach(run_id, self.root)
            if job.running:
                job.stop(timeout=timeout)
                stopped.append(run_id)
        return stopped

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def follow(self, interactive: bool = True, refresh: float = 2.0) -> "SweepView | None":
        """In JupyterLab (``interactive``): a live table of trials that refreshes by itself, with a
        Stop-all button; the kernel stays free. Headless: block until the sweep ends, then show the
        final table and figure."""
        if interactive:
            return SweepView(self, refresh)
        from IPython.display import Image, display
        self.wait()
        display(self.summary())
        png = self.folder / "summary.png"
        if png.is_file():
            display(Image(data=png.read_bytes()))
        print(self.log_tail(5))
        return None


def sweep(grid: dict[str, list] | None = None, space: dict[str, str] | None = None, trials: int = 0,
          fixed: dict[str, Any] | None = None, slots: int = 1, prune: str = "none", prune_startup: int = 2,
          sampler: str = "tpe", seed: int = 0, notebook: str = "", storage: str = "",
          root: str | os.PathLike | None = None, launcher: str = "local", slurm: dict[str, Any] | None = None,
          driver_on_slurm: bool = False) -> Sweep:
    """Start a sweep in the background and return its ``Sweep`` at once.

    Each trial is a papermill run of the training notebook and an ordinary medic run. The driver
    runs in a session of its own (``analysis/sweeps/<id>/driver.log``), so it outlives the kernel.

    Args:
        grid: a grid axis per option, e.g. ``{"lr": [0.001, 0.003]}``; every combination is a trial.
        space: a distribution per option, e.g. ``{"lr": "loguniform(1e-4,1e-2)"}``:
            ``uniform(a,b)``, ``loguniform(a,b)``, ``int(a,b)``, ``logint(a,b)``, ``choice(v1,v2)``.
        trials: the whole sweep's number of trials (with ``space``).
        fixed: training options for every trial, e.g. ``{"epochs": 20}``.
        slots: trials at once on this machine.
        prune: ``none``, ``median``, ``percentile``, ``hyperband`` or ``successivehalving``.
        prune_startup: trials that finish before pruning starts.
        sampler: ``tpe`` or ``random`` (for ``space``).
        seed: the sampler's seed.
        notebook: the training notebook (default: the project's ``notebooks/01_train.ipynb``).
        storage: a database URL shared by drivers on several machines, or ``journal://PATH``
            (default in ``analysis/sweeps/<id>/``: Optuna's journal file on SLURM or a network
            file system, else SQLite).
        root: the project root (default: the working directory).
        launcher: ``"local"`` (trials in this machine's slots) or ``"slurm"`` (each trial a SLURM
            job; ``slots`` caps the jobs queued or running).
        slurm: the trials' SLURM request, ``medic train``'s SLURM options by name
            (``{"gpus_per_node": 1, "time": "2:00:00", "partition": "gpu"}``).
        driver_on_slurm: submit the driver itself as a small SLURM job (1 CPU) instead of a
            process of this machine.

    Returns:
        The sweep's handle: ``follow()``, ``summary()``, ``stop()``.

    Raises:
        MedicError: an unknown option, a malformed distribution, a grid of no points, or too many
            slots (on SLURM: more than the partition can ever run, SLURM's message); nothing is
            started then.

    Example::

        import medic

        s = medic.sweep(grid={"lr": [0.001, 0.003]}, fixed={"epochs": 2, "num_samples": 32}, slots=2)
        s.follow()           # in JupyterLab: a live table of the trials and a Stop-all button
        print(s.summary())   # one row per trial: status, run id, the parameters, best value
    """
    from medic.sweeps.run import create, new_spec
    root = Path(root or os.getcwd()).resolve()
    spec = new_spec(root, grid=grid, space=space, trials=trials, fixed=fixed, prune=prune,
                    prune_startup=prune_startup, sampler=sampler, seed=seed, notebook=notebook,
                    storage=storage, slurm={**(slurm or {}), "launcher": launcher})
    if driver_on_slurm:
        if not spec.slurm:
            raise MedicError("driver_on_slurm submits the driver of a launcher='slurm' sweep")
        from medic.sweeps.slurm_trial import submit_driver
        from medic.sweeps.run import slurm_options
        create(root, spec, slots, storage)
        submit_driver(root, spec.sweep_id, slots, storage, slurm_options(spec))
        return Sweep(spec.sweep_id, root, storage)
    create(root, spec, slots, storage)
    argv = [sys.executable, "-m", "medic.cli", "sweep", "--resume", spec.sweep_id, "--slots", str(slots),
            "--root", str(root)] + (["--storage", storage] if storage else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    log = sweep_dir(root, spec.sweep_id) / "driver.log"
    with open(log, "ab") as f:
        popen = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    handle = Sweep(spec.sweep_id, root, storage, popen)
    deadline = time.monotonic() + 60  # the driver is up when it has written its pid file
    while not live_drivers(root, spec.sweep_id) and popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if popen.poll() not in (None, 0):
        raise MedicError(f"the sweep driver failed to start:\n{handle.log_tail(10)}")
    return handle


def attach_sweep(sweep_id: str, root: str | os.PathLike | None = None, storage: str = "") -> Sweep:
    """A ``Sweep`` for a sweep started earlier (here, from a shell, or from another kernel)."""
    return Sweep(sweep_id, root, storage)


def table_html(frame) -> str:
    """The live table: the shown columns and each parameter."""
    import pandas as pd
    columns = [c for c in frame.columns if c in SHOWN or c not in HIDDEN]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            text = "" if pd.isna(value) else (f"{value:.6g}" if isinstance(value, float) else str(value))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr class='medic-sweep-{html.escape(str(row['status']))}'>{''.join(cells)}</tr>")
    return f"<table class='medic-sweep-table'><tr>{head}</tr>{''.join(body)}</table>"


class SweepView:
    """The live table: refreshed from a background thread that only sets widget traits."""

    def __init__(self, handle: Sweep, refresh: float = 2.0):
        import ipywidgets as w
        from IPython.display import display
        self.handle, self.refresh = handle, refresh
        self.title = w.HTML(f"<b>sweep {handle.sweep_id}</b>")
        self.state = w.Label("")
        self.table = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))
        self.stop_button = w.Button(description="Stop all", button_style="danger", icon="stop",
                                    tooltip="stop every trial gracefully (each saves a checkpoint)")
        self.stop_button.on_click(self._on_stop)
        self.box = w.VBox([w.HBox([self.title, self.stop_button, self.state]), self.table, self.image])
        for widget, name in ((self.box, "medic-sweep"), (self.stop_button, "medic-sweep-stop"),
                             (self.state, "medic-sweep-state")):
            widget.add_class(name)
        display(self.box)
        self._thread = threading.Thread(target=self._loop, name=f"sweep-{handle.sweep_id}", daemon=True)
        self._thread.start()

    def _on_stop(self, _button=None) -> None:
        self.stop_button.disabled = True
        self.state.value = "stopping ..."
        threading.Thread(target=self.handle.stop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            running = self.handle.running
            try:
                frame = self.handle.summary()
                self.table.value = table_html(frame)
                counts = frame["status"].value_counts().to_dict()
                self.state.value = ("running: " if running else "ended: ") + \
                    ", ".join(f"{n} {s}" for s, n in counts.items())
            except Exception as err:  # a view: keep trying
                self.state.value = f"cannot read the sweep: {err}"
            if not running:
                break
            time.sleep(self.refresh)
        self.stop_button.disabled = True
        png = self.handle.folder / "summary.png"
        if png.is_file():
            self.image.value = png.read_bytes()
            self.image.layout.display = ""
