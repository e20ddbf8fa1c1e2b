"""The batch-CSV cache under analysis/.cache: a grown file is read incrementally, a rewritten one
is read again, and the result always equals reading the file from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from medic.analysis import analyze_batch_file
from medic.store import batchcache
from medic.store.readers import read_batch_arrays


def rows(first_epoch: int, epochs: int, per_epoch: int = 50, seed: int = 0, lr: float = 0.001) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(first_epoch, first_epoch + epochs):
        for b in range(per_epoch):
            out.append(f"{e},{b},{rng.uniform(0.1, 1.0):.6f},{lr:.8f},2025-11-06 10:30:{b % 60:02d}\n")
    return "".join(out)


@pytest.fixture
def small_cache(monkeypatch):
    """Cache files of any size, and record which bytes each parse covered."""
    monkeypatch.setattr(batchcache, "MIN_BYTES", 0)
    monkeypatch.setattr(batchcache, "TAIL", 4096)  # the fingerprint's tail block, scaled to the tiny files
    parses = []
    real = batchcache.read_batch_arrays

    def recording(path, **kw):
        parses.append((kw.get("begin"), kw.get("limit")))
        return real(path, **kw)
    monkeypatch.setattr(batchcache, "read_batch_arrays", recording)
    return parses


def assert_same(a, b):
    for name in ("epoch_values", "starts", "counts", "loss", "lr"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_a_grown_file_is_parsed_only_where_it_grew(tmp_path, small_cache):
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 20) + rows(21, 1, per_epoch=20))
    first = batchcache.read_batch_arrays_cached(csv, cache)
    assert_same(first, read_batch_arrays(csv))
    assert small_cache == [(None, csv.stat().st_size)]
    size = csv.stat().st_size
    with open(csv, "a") as f:  # epoch 21 goes on, epochs 22-23 follow, and half a row is being written
        f.write(rows(21, 1, per_epoch=30, seed=1)
                + rows(22, 2, seed=2) + "24,0,0.5")
    grown = batchcache.read_batch_arrays_cached(csv, cache)
    assert small_cache[1][0] == size  # only the added bytes were parsed
    expected = read_batch_arrays(csv)
    assert_same(grown, expected)
    assert grown.epoch_values.tolist() == list(range(1, 24)) and grown.counts[20] == 50
    again = batchcache.read_batch_arrays_cached(csv, cache)  # nothing new: no parse at all
    assert len(small_cache) == 2
    assert_same(again, expected)


def test_a_file_rewritten_by_a_resume_is_read_again(tmp_path, small_cache):
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    header = "Epoch,Batch,Loss,Learning_Rate,Timestamp\n"
    csv.write_text(header + rows(1, 30))
    batchcache.read_batch_arrays_cached(csv, cache)
    # a resume from epoch 10 cut the rows after it and trained epochs 11-40 again: longer than before
    csv.write_text(header + rows(1, 10) + rows(11, 30, seed=7, lr=0.0005))
    after = batchcache.read_batch_arrays_cached(csv, cache)
    assert small_cache[-1] == (None, csv.stat().st_size)  # a full read, not an increment
    assert_same(after, read_batch_arrays(csv))
    # cut again, now shorter than what the cache covered
    csv.write_text(header + rows(1, 5))
    assert_same(batchcache.read_batch_arrays_cached(csv, cache), read_batch_arrays(csv))
    assert small_cache[-1][0] is None


def test_the_analysis_through_the_cache_equals_the_analysis_of_the_file(tmp_path, small_cache):
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 40))
    analyze_batch_file(csv, cache_dir=cache)
    added = rows(41, 5, seed=3).splitlines(keepends=True)
    cells = added[0].split(",")
    added[0] = ",".join(cells[:2] + ["nan"] + cells[3:])  # a non-finite loss among the added rows
    with open(csv, "a") as f:
        f.write("".join(added))
    cached = analyze_batch_file(csv, cache_dir=cache)
    assert small_cache[-1][0] is not None  # incremental
    plain = analyze_batch_file(csv)
    assert cached.rows == plain.rows == 45 * 50 and cached.nonfinite_count == plain.nonfinite_count == 1
    assert_same_analysis(cached, plain)
    assert sorted(p.name for p in (cache / csv.name).iterdir()) == ["batch_summary.arrays", "epochs.i64", "lock",
                                                                     "loss.f32", "lr.f32", "meta.json"]


def assert_same_analysis(a, b):
    assert (a.rows, a.spike_count, a.nonfinite_count, a.trend_window) == (b.rows, b.spike_count, b.nonfinite_count,
                                                                          b.trend_window)
    assert a.per_epoch.equals(b.per_epoch) and a.spikes.equals(b.spikes) and a.nonfinite.equals(b.nonfinite)
    for name in ("x", "y", "trend_x", "trend_y", "lr_x", "lr_y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.loss_first, a.loss_last, a.loss_mean) == (b.loss_first, b.loss_last, b.loss_mean)


def test_a_growing_file_is_summarised_only_where_it_grew(tmp_path, small_cache, monkeypatch):
    """Spikes and non-finite losses on both sides of each growth, epochs that go on across it:
    the analysis through the kept summary equals the analysis of the whole file, every time."""
    from medic.analysis import batches
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    summarised = []
    real = batches._segment_stats
    monkeypatch.setattr(batches, "_segment_stats", lambda data, s0: summarised.append(s0) or real(data, s0))
    text = "Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 30, per_epoch=200)
    spiked = text.splitlines(keepends=True)
    spiked[4 * 200 + 17] = "5,16,9.5,0.001,2025-11-06 10:30:16\n"  # a spike in epoch 5
    spiked[28 * 200 + 3] = "29,2,inf,0.001,2025-11-06 10:30:02\n"
    csv.write_text("".join(spiked))
    assert_same_analysis(analyze_batch_file(csv, cache_dir=cache), analyze_batch_file(csv))
    for step in range(3):  # the last epoch goes on, new ones follow (one with a spike)
        more = rows(30 + step, 1, per_epoch=100, seed=10 + step).splitlines(keepends=True)
        more += rows(31 + step, 1, per_epoch=100, seed=20 + step).splitlines(keepends=True)
        more[150] = f"{31 + step},50,8.0,0.001,2025-11-06 10:30:50\n"
        with open(csv, "a") as f:
            f.write("".join(more))
        summarised.clear()
        cached = analyze_batch_file(csv, cache_dir=cache)
        segs = len(cached.per_epoch)
        assert summarised == [segs - 2]  # the stretch that went on and the new one, no more
        plain = analyze_batch_file(csv)
        assert_same_analysis(cached, plain)
        assert cached.spike_count == step + 2 and cached.nonfinite_count == 1
    # a resume cut the file and wrote it again: the kept summary (another generation) is not used
    csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 12, per_epoch=200, seed=5))
    summarised.clear()
    assert_same_analysis(analyze_batch_file(csv, cache_dir=cache), analyze_batch_file(csv))
    assert summarised[0] == 0


def test_small_files_are_not_cached(tmp_path):
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 3))
    assert_same(batchcache.read_batch_arrays_cached(csv, cache), read_batch_arrays(csv))
    assert not cache.exists()


def test_clean_removes_a_runs_cache_with_its_files(tmp_path, small_cache):
    from medic.store.catalog import analysis_files
    from medic.store.paths import Project
    project = Project.at(tmp_path)
    for run_id in ("20250101_000000", "20250101_000000_2"):
        csv = tmp_path / "metrics" / f"batch_metrics_{run_id}.csv"
        csv.parent.mkdir(exist_ok=True)
        csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 3))
        batchcache.read_batch_arrays_cached(csv, project.analysis / ".cache")
    assert analysis_files(project, "20250101_000000") == [
        project.analysis / ".cache" / "batch_metrics_20250101_000000.csv"]


def test_arrays_that_differ_from_what_the_meta_says_are_not_used(tmp_path, small_cache):
    """The arrays are written without fsync; after a crash a file may hold zeros where rows were:
    the meta's fingerprints of the arrays no longer match, and the file is read again."""
    csv, cache = tmp_path / "batch_metrics_20250101_000000.csv", tmp_path / "analysis" / ".cache"
    csv.write_text("Epoch,Batch,Loss,Learning_Rate,Timestamp\n" + rows(1, 40))
    batchcache.read_batch_arrays_cached(csv, cache)
    loss = cache / csv.name / "loss.f32"
    with open(loss, "r+b") as f:
        f.seek(-400, 2)
        f.write(bytes(400))
    again = batchcache.read_batch_arrays_cached(csv, cache)
    assert small_cache[-1] == (None, csv.stat().st_size)  # parsed from the start, not trusted
    assert_same(again, read_batch_arrays(csv))
