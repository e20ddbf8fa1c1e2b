"""The live monitor's widgets for JupyterLab: status, progress bar, latest values, figure, Stop.

Every method here is called from the monitor's background thread (or, for the Stop button, from
the kernel's comm handler) and only sets widget traits: setting a trait sends a comm message, which
is safe from a thread, while printing from a thread would land in some other cell.
"""

from __future__ import annotations

import html
import math
import threading

from medic.store import columns as C
from medic.store.columns import per_class_prefix
from medic.live.strip import newest_strip, per_class_text

BAR_STYLES = {"completed": "success", "stopped": "warning", "failed": "danger"}
SHOWN_VALUES = (C.EPOCH, C.AVG_LOSS, C.BEST_SO_FAR, C.LEARNING_RATE, C.EPOCH_TIME, C.SAMPLES_PER_SECOND)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


class WidgetView:
    def __init__(self, monitor):
        import ipywidgets as w
        from IPython.display import display

        self.monitor = monitor
        self.title = w.HTML(f"<b>run {monitor.run_id}</b>")
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                   layout=w.Layout(width="40%"))
        self.position = w.Label("waiting for the first rows ...")
        self.values = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))
        # the newest prediction strip (3 fixed validation cases) and the per-class values
        self.strip = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))
        self.strip_label = w.Label()
        self.per_class = w.HTML()
        self.strip_epoch = None
        self.stop = w.Button(description="Stop training", button_style="danger", icon="stop",
                             tooltip="A stop request to the run (from any host): it saves a checkpoint and "
                                     "marks the run stopped")
        self.stop.on_click(self._on_stop)
        self.stop.disabled = not self._stoppable()
        self.extra = w.VBox()
        self.box = w.VBox([w.HBox([self.title, self.stop]), w.HBox([self.bar, self.position]),
                           self.values, self.per_class, self.image, self.strip_label, self.strip, self.extra])
        # stable names for the page's CSS, scripts and tests
        for widget, name in ((self.box, "medic-live"), (self.bar, "medic-progress"),
                             (self.position, "medic-position"), (self.image, "medic-figure"),
                             (self.stop, "medic-stop"), (self.strip, "medic-strip"),
                             (self.per_class, "medic-per-class")):
            widget.add_class(name)
        display(self.box)

    def _stoppable(self) -> bool:
        m = self.monitor
        if m.job is not None:
            return m.job.running
        try:
            from medic.jobs import attach
            return attach(m.run_id, m.project.root).running
        except Exception:
            return False

    def update(self, png: bytes | None) -> None:
        p = self.monitor.progress()
        self.bar.value = p.fraction or 0.0
        self.position.value = p.text()
        latest = self.monitor.feed.latest()
        extra = self.monitor.feed.extra_columns
        per_class = per_class_text(latest, extra)
        names = [n for n in SHOWN_VALUES + tuple(extra) + ("Last_Batch_Loss",)
                 if n in latest and not (per_class and per_class_prefix(n))]
        if per_class:
            self.per_class.value = "<br>".join(html.escape(line) for line in per_class.splitlines())
        self._update_strip()
        if names:
            # "best" is the monitored metric's: say which
            shown = {C.BEST_SO_FAR: f"best {self.monitor.feed.monitor}"}
            head = "".join(f"<th style='padding:0 8px'>{html.escape(shown.get(n, n))}</th>" for n in names)
            row = "".join(f"<td style='padding:0 8px'>{_cell(latest[n])}</td>" for n in names)
            self.values.value = f"<table><tr>{head}</tr><tr>{row}</tr></table>"
        if png:
            self.image.value = png
            self.image.layout.display = ""

    def _update_strip(self) -> None:
        newest = newest_strip(self.monitor.project.results_dir(self.monitor.run_id))
        if newest is None or newest[0] == self.strip_epoch:
            return
        try:
            self.strip.value = newest[1].read_bytes()
        except OSError:
            return
        self.strip_epoch = newest[0]
        self.strip_label.value = f"Validation predictions, epoch {newest[0]} (truth | prediction, 3 fixed cases)"
        self.strip.layout.display = ""

    def finish(self) -> None:
        m = self.monitor
        self.update(m.png)
        self.bar.bar_style = BAR_STYLES.get(m.status, "danger")
        self.stop.disabled = True
        self.stop.description = m.status.capitalize()  # Completed, Stopped, Failed, ...
        if m.analysis and m.feed.epochs_done:
            self._add_analysis()

    def failed(self, err: BaseException) -> None:
        self.bar.bar_style = "danger"
        self.position.value = f"monitor error: {type(err).__name__}: {err}"

    def _add_analysis(self) -> None:
        import ipywidgets as w
        from medic.analysis.outputs import analyze_run  # pandas, matplotlib: only once the run ends
        try:
            images, report = analyze_run(self.monitor.run_id, self.monitor.project.root)
        except Exception as err:
            self.extra.children = [w.HTML(f"<i>analysis failed: {html.escape(str(err))}</i>")]
            return
        self.extra.children = ([w.Image(value=png, format="png", layout=w.Layout(max_width="100%"))
                                for _, png in images]
                               + [w.HTML(f"<pre>{html.escape(report)}</pre>")])

    def _on_stop(self, _button) -> None:
        # the click arrives on the kernel's main thread; stopping waits for the checkpoint, so it
        # runs in a thread of its own and the kernel stays free
        self.stop.disabled = True
        self.stop.description = "Stopping ..."
        threading.Thread(target=self._stop_job, name="medic-stop", daemon=True).start()

    def _stop_job(self) -> None:
        try:  # the monitor's thread sees the run end and labels the button with its status
            self.monitor.stop_run()
        except Exception as err:
            self.stop.description = "Stop failed"
            self.position.value = f"stop failed: {err}"
