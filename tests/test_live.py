"""The live monitor: incremental feed, progress and ETA, the figure, headless and threaded modes."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from _nb_helpers import BATCHES, make_run, start_writer, wait_for
from medic.live import LiveMonitor, monitor
from medic.live.feed import RunFeed, format_seconds
from medic.live.plot import MAX_POINTS, downsample, render_png
from medic.store.logger import MetricsLogger
from medic.store.paths import Project, reserve_run_id
from medic.store.sidecar import read_sidecar, write_json_atomic

PNG = b"\x89PNG\r\n\x1a\n"
HEADER = "Epoch,Avg_Loss,Min_Batch_Loss,Max_Batch_Loss,Learning_Rate,Epoch_Time_Seconds,Best_Loss_So_Far,Is_Best_Model,Timestamp\n"


def row(epoch: int, loss: float, secs: float = 10.0) -> str:
    return f"{epoch},{loss},{loss / 2},{loss * 2},0.001,{secs},{loss},True,2025-01-01 00:00:0{epoch % 10}\n"


def test_feed_reads_only_whole_new_rows_and_tracks_position(tmp_path):
    project = Project.at(tmp_path)
    project.metrics.mkdir()
    project.log.mkdir()
    run_id = "20250101_000000"
    write_json_atomic(project.sidecar(run_id), {"status": "running", "epochs": 10, "batches_per_epoch": 8})
    csv = project.epoch_csv(run_id)
    csv.write_text(HEADER + row(1, 0.9, secs=30.0) + row(2, 0.8) + "3,0.7,0.3")  # a row being written
    feed = RunFeed(run_id, project)
    assert feed.poll() is True
    assert feed.epoch_values("Epoch") == [1.0, 2.0] and feed.epochs_done == 2
    assert feed.poll() is False  # nothing new: no redraw
    with open(csv, "a") as f:
        f.write(row(3, 0.7)[len("3,0.7,0.3"):])
    assert feed.poll() is True and feed.epoch_values("Avg_Loss") == [0.9, 0.8, 0.7]

    # the position inside epoch 4 comes from the newest progress line of the log
    project.log_file(run_id).write_text("Epoch [4/10] - 进度 50.0% (4/8) - Batch Loss: 0.650000 - LR: 0.001\n")
    feed.poll()
    p = feed.progress("running")
    assert (p.epochs_done, p.epochs_total, p.epoch, p.batch, p.batches_per_epoch) == (3, 10, 4, 4, 8)
    assert p.fraction == pytest.approx(3.5 / 10)
    # ETA: 6.5 epochs left at the mean of the epochs after the first (10 s each)
    assert p.eta_seconds == pytest.approx(65.0)
    assert "ETA 1m 05s" in p.text() and "epoch 4: batch 4/8" in p.text()
    assert feed.latest()["Last_Batch_Loss"] == 0.65

    # a batch CSV that is further along wins over the log line
    with MetricsLogger(tmp_path, run_id, log_batch_metrics=True, resume_epoch=3) as logger:
        for b in range(6):
            logger.log_batch(4, b, 0.6, 0.001)
    feed.poll()
    p = feed.progress("running")
    assert (p.epoch, p.batch) == (4, 6) and p.fraction == pytest.approx(3.75 / 10)
    assert feed.progress("completed").fraction == 1.0 and feed.progress("completed").eta_seconds is None

    # a file replaced from scratch (resume truncation, a rewrite) is read again from the start
    csv.write_text(HEADER + row(1, 0.5))
    assert feed.poll() is True and feed.epoch_values("Avg_Loss") == [0.5]


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 5, 65, 3700)] == ["?", "5s", "1m 05s", "1h 01m"]


def test_figure_renders_empty_and_full_runs_and_downsamples_long_series(tmp_path):
    project = Project.at(tmp_path)
    empty = RunFeed("20250101_000000", project)
    empty.poll()
    assert render_png(empty).startswith(PNG)

    run_id = make_run(tmp_path, epochs=4)
    feed = RunFeed(run_id, project)
    feed.poll()
    assert feed.logs_batches and feed.extra_columns == ["Val_Dice"]
    x, y = feed.batch_series()
    assert len(x) == 4 * BATCHES and x[0] == pytest.approx(1 / BATCHES) and x[-1] == pytest.approx(4.0)
    assert render_png(feed).startswith(PNG)

    xs = np.arange(100_000, dtype=float)
    ys = np.sin(xs / 500)
    ys[54_321] = 50.0  # a spike must survive downsampling
    dx, dy = downsample(xs, ys)
    assert len(dx) <= MAX_POINTS and dy.max() == 50.0
    nx, _ = downsample(np.array([0.0, 1.0, 2.0]), np.array([1.0, np.nan, 3.0]))
    assert list(nx) == [0.0, 2.0]


def test_headless_monitor_follows_a_writer_until_it_ends(tmp_path, capsys):
    project = Project.at(tmp_path)
    run_id = reserve_run_id(project)
    writer = start_writer(tmp_path, run_id, epochs=6, interval=0.3)
    try:
        m = monitor(run_id, tmp_path, interactive=False, refresh=0.1, min_redraw=0.0)
    finally:
        writer.wait(timeout=30)
    assert m.status == "completed"
    assert m.feed.epochs_done == 6 and m.png.startswith(PNG)
    out = capsys.readouterr().out
    # an epoch line per epoch, then the summary table's final Avg_Loss and its monitor
    assert out.count("Avg_Loss") == 6 + 2
    assert "Epoch 6/6" in out and "completed" in out
    summary = m.summary()
    assert summary.loc["epochs", "value"] == "6/6" and summary.loc["best epoch", "value"] == "6"


def test_monitor_notices_a_killed_run(tmp_path):
    project = Project.at(tmp_path)
    run_id = reserve_run_id(project)
    writer = start_writer(tmp_path, run_id, epochs=100, interval=0.2)
    wait_for(lambda: (read_sidecar(project.sidecar(run_id)) or {}).get("epochs_done"), 30, "an epoch")
    writer.send_signal(signal.SIGKILL)  # no chance to mark the sidecar
    writer.wait()
    m = monitor(run_id, tmp_path, interactive=False, refresh=0.1, timeout=30)
    assert m.status == "interrupted"
    assert read_sidecar(project.sidecar(run_id))["status"] == "running"  # the monitor only reads


def test_threaded_monitor_updates_widgets_and_its_stop_button_stops_the_run(tmp_path):
    project = Project.at(tmp_path)
    run_id = reserve_run_id(project)
    writer = start_writer(tmp_path, run_id, epochs=200, interval=0.2)
    try:
        # the writer stands in for a trainer started from a shell: the monitor finds it by its pid
        m = LiveMonitor(run_id, tmp_path, interactive=True, refresh=0.1)
        wait_for(lambda: read_sidecar(project.sidecar(run_id)), 30, "the sidecar")
        m.show()
        view = m._view
        assert not view.stop.disabled
        wait_for(lambda: view.bar.value > 0 and view.image.value, 30, "progress and a figure")
        assert "running" in view.position.value and "Avg_Loss" in view.values.value
        # the cell run again: the new monitor replaces the old one, whose thread ends
        old, m = m, LiveMonitor(run_id, tmp_path, interactive=True, refresh=0.1).show()
        assert not old._thread.is_alive()
        view = m._view
        wait_for(lambda: view.image.value, 30, "the new monitor's figure")
        view.stop.click()
        assert m.wait(timeout=30), "the monitor did not end after Stop"
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert m.status == "stopped" and read_sidecar(project.sidecar(run_id))["status"] == "stopped"
    wait_for(lambda: view.stop.description == "Stopped", 10, "the button to say Stopped")
    assert view.bar.bar_style == "warning" and view.stop.disabled
    assert bytes(view.image.value).startswith(PNG) and "stopped" in view.position.value


def test_monitor_needs_a_run(tmp_path):
    from medic.errors import RunNotFoundError
    with pytest.raises(RunNotFoundError):
        LiveMonitor(None, tmp_path)


def test_a_long_batch_series_stays_cheap_to_poll_and_draw(tmp_path):
    """The guide's size: 200 epochs x 171 batches = 34,200 batch rows."""
    project = Project.at(tmp_path)
    run_id = reserve_run_id(project)
    rng = np.random.default_rng(0)
    with MetricsLogger(tmp_path, run_id, log_batch_metrics=True) as logger:
        for epoch in range(1, 201):
            losses = 1 / epoch + rng.random(171) * 0.1
            logger.log_batches(epoch, 0, losses, [0.001] * 171)
            logger.log_epoch(epoch, avg_loss=losses.mean(), min_batch_loss=losses.min(),
                             max_batch_loss=losses.max(), learning_rate=0.001, epoch_time=14.5)
    feed = RunFeed(run_id, project)
    t0 = time.perf_counter()
    feed.poll()
    first_poll = time.perf_counter() - t0
    render_png(feed)  # warm-up: fonts, imports
    t0 = time.perf_counter()
    render_png(feed)
    draw = time.perf_counter() - t0
    with MetricsLogger(tmp_path, run_id, log_batch_metrics=True) as logger:
        logger.log_batches(201, 0, [0.1] * 171, [0.001] * 171)
    t0 = time.perf_counter()
    assert feed.poll()
    next_poll = time.perf_counter() - t0
    assert len(feed.batch_series()[0]) == 201 * 171
    print(f"34,200 batch rows: first poll {first_poll * 1000:.0f} ms, redraw {draw * 1000:.0f} ms, "
          f"poll of 171 new rows {next_poll * 1000:.1f} ms")
    assert first_poll < 2.0 and draw < 3.0 and next_poll < 0.2
