"""02_monitor in a real JupyterLab in a real Chromium, on a real training job: the progress bar
advances, the figure appears, and the Stop button stops the job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request

import pytest

from _nb_helpers import PY, REPO, child_env, wait_for
from medic.jobs import launch
from medic.store.sidecar import read_sidecar

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(folder) -> None:
    """No news toast over the page, and every cell kept in the DOM (no windowing)."""
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a project that holds the notebooks; yields (url, root)."""
    from medic.notebooks import ensure_kernel
    ensure_kernel()
    root = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "metrics").mkdir()
    state = tmp_path / "jupyter"
    write_settings(state / "settings")
    port = free_port()
    env = child_env(JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
                    JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
                    JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [PY, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{url}/api/status", timeout=2).status == 200
        except OSError:
            assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()[-3000:]
            return False

    try:
        wait_for(up, 90, "JupyterLab to answer", step=0.3)
        yield url, root
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def bar_width(page) -> float:
    style = page.locator(".widget-hprogress .progress-bar").first.get_attribute("style") or ""
    found = re.search(r"width:\s*([\d.]+)%", style)
    return float(found.group(1)) if found else 0.0


def test_monitor_notebook_in_jupyterlab_shows_progress_and_stops_the_run(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, root = lab
    # a real training job, long enough to be stopped from the page (one process keeps the CPU
    # for the browser and the server)
    job = launch(dict(epochs=600, num_samples=16, image_size=32, batch_size=4, nproc_per_node=1,
                      log_batch_metrics=True, log_interval=1, save_interval=1000), root=root)
    try:
        wait_for(lambda: read_sidecar(job.project.sidecar(job.run_id)) or not job.running, 90,
                 "the trainer to start")
        assert job.running, job.log_tail(30)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            try:
                run_monitor_page(page, sync_api.expect, url, job)
            finally:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "monitor.png"), full_page=True)
                browser.close()
    finally:
        if job.running:
            job.stop(timeout=10)
    assert job.status == "stopped"
    assert list(job.project.checkpoint_dir(job.run_id).glob("*.pth")), "no checkpoint on stop"


def run_monitor_page(page, expect, url, job) -> None:
    page.goto(f"{url}/lab/tree/notebooks/02_monitor.ipynb?reset")
    expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    bar = page.locator(".widget-hprogress .progress-bar")
    expect(bar).to_be_attached(timeout=60_000)
    label = page.locator(".medic-position")
    expect(label).to_contain_text("running", timeout=60_000)
    expect(page.locator(".jupyter-widgets").get_by_text(f"run {job.run_id}")).to_be_visible()
    # the figure (an Image widget) appears once the first epoch is in
    expect(page.locator("img.medic-figure")).to_be_visible(timeout=60_000)
    # the bar and the label advance while the kernel is idle (the monitor runs in a thread)
    first_width, first_text = bar_width(page), label.inner_text()
    wait_for(lambda: bar_width(page) > first_width, 60, "the progress bar to advance", step=0.5)
    wait_for(lambda: label.inner_text() != first_text, 30, "the label to change", step=0.5)
    expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible()
    assert page.get_by_text("Error displaying widget").count() == 0

    page.locator("button.medic-stop", has_text="Stop training").click()
    wait_for(lambda: (read_sidecar(job.project.sidecar(job.run_id)) or {}).get("status") == "stopped",
             90, "the run to be marked stopped")
    assert job.wait(timeout=60) is not None
    expect(page.locator("button.medic-stop", has_text="Stopped")).to_be_visible(timeout=30_000)
    expect(label).to_contain_text("stopped", timeout=30_000)


@pytest.mark.slow
def test_monitor_shows_per_class_curves_and_the_prediction_strip(lab, tmp_path):
    """A run with 2 foreground classes and validation: the monitor shows the per-class values,
    the figure (with its per-class panel) and the newest prediction strip; a screenshot is kept
    as test-artifacts/monitor_per_class.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    url, root = lab
    job = launch(dict(epochs=600, num_samples=24, image_size=32, batch_size=4, nproc_per_node=1, num_classes=3,
                      val_fraction=0.25, monitor="Val_Dice", log_interval=1, save_interval=1000), root=root)
    try:
        wait_for(lambda: read_sidecar(job.project.sidecar(job.run_id)) or not job.running, 90,
                 "the trainer to start")
        assert job.running, job.log_tail(30)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            try:
                page.goto(f"{url}/lab/tree/notebooks/02_monitor.ipynb?reset")
                sync_api.expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=90_000)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                sync_api.expect(page.locator("img.medic-figure")).to_be_visible(timeout=90_000)
                sync_api.expect(page.locator("img.medic-strip")).to_be_visible(timeout=60_000)
                per_class = page.locator(".medic-per-class")
                sync_api.expect(per_class).to_contain_text("Per-class Dice: class_1", timeout=30_000)
                assert "class_2" in per_class.inner_text()
                # a few validations later the strip is a newer epoch's
                first = page.locator(".jupyter-widgets").get_by_text("Validation predictions, epoch").inner_text()
                wait_for(lambda: page.locator(".jupyter-widgets").get_by_text("Validation predictions, epoch")
                         .inner_text() != first, 90, "a newer strip", step=0.5)
                page.locator("img.medic-strip").scroll_into_view_if_needed()
                assert page.get_by_text("Error displaying widget").count() == 0
            finally:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "monitor_per_class.png"), full_page=True)
                browser.close()
    finally:
        if job.running:
            job.stop(timeout=10)
    assert (job.project.results_dir(job.run_id) / "strip").is_dir()


def test_sweep_notebook_in_jupyterlab_shows_the_trials_and_stops_them_all(lab, tmp_path):
    """05_sweep follows a sweep started elsewhere (``sweep_id``): the table of trials refreshes by
    itself, and Stop all stops the driver and its trial gracefully (checkpoint, marked stopped)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("optuna")
    import medic
    url, root = lab
    sweep = medic.sweep(grid={"lr": [0.001, 0.003]}, slots=1, root=root,
                        fixed=dict(epochs=600, num_samples=16, image_size=32, save_interval=1000, threads=1))
    try:
        notebook = root / "notebooks" / "05_sweep.ipynb"
        text = notebook.read_text(encoding="utf-8")
        notebook.write_text(text.replace('sweep_id = \\"\\"', f'sweep_id = \\"{sweep.sweep_id}\\"'), encoding="utf-8")
        assert sweep.sweep_id in notebook.read_text(encoding="utf-8")
        wait_for(lambda: (sweep.summary()["status"] == "running").any(), 120, "the first trial to start")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            try:
                expect = sync_api.expect
                page.goto(f"{url}/lab/tree/notebooks/05_sweep.ipynb?reset")
                expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible(timeout=90_000)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                table = page.locator("table.medic-sweep-table")
                expect(table).to_contain_text("running", timeout=90_000)
                expect(table).to_contain_text("queued")
                state = page.locator(".medic-sweep-state")
                first = table.inner_text()  # the running trial's epochs and best advance by themselves
                wait_for(lambda: table.inner_text() != first, 90, "the table to refresh", step=0.5)
                expect(page.locator("#jp-main-statusbar").get_by_text("Idle")).to_be_visible()
                page.locator("button.medic-sweep-stop", has_text="Stop all").click()
                expect(state).to_contain_text("ended", timeout=180_000)
                expect(table).to_contain_text("stopped")
            finally:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "sweep.png"), full_page=True)
                browser.close()
    finally:
        if sweep.running:
            sweep.stop(timeout=60)
    summary = sweep.summary()
    assert list(summary["status"]) == ["stopped", "queued"]
    run_id = summary["run_id"].iloc[0]
    job = medic.attach(run_id, root)
    assert not job.running and job.status == "stopped"
    assert list(job.project.checkpoint_dir(run_id).glob("*.pth")), "no checkpoint on stop"
