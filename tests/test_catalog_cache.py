"""The run catalog's cache (analysis/.cache/catalog.json): a second listing reads no unchanged
CSV, and whatever happens to the files — a CSV that grew, one cut mid-line, a deleted run, a run
resumed after a cut, a torn cache, a read-only project — the listing is what a full re-read shows.
Also the filters of ``medic runs`` / ``medic.catalog``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from _analysis_helpers import cli, write_run
from conftest import child_env

import medic
from medic.errors import RunNotFoundError
from medic.notebooks import compare_settings
from medic.store.catalog import runs
from medic.store.catalogcache import Cached, Reads, cache_path
from medic.store.paths import Project
from medic.store.runlist import frame, rows

OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def opened_csvs(root) -> list[str]:
    """The epoch CSVs a listing opens (every open() of the process is seen by an audit hook)."""
    global OPENED
    OPENED = []
    try:
        runs(root)
    finally:
        seen, OPENED = OPENED, None
    return sorted(os.path.basename(p) for p in seen if os.path.basename(p).startswith("epoch_metrics_"))


def same_as_full_reread(root) -> pd.DataFrame:
    cached = runs(root)
    pd.testing.assert_frame_equal(cached, runs(root, cached=False))
    return cached.set_index("run_id")


def line(epoch: int, loss: float, best: float) -> str:
    return f"{epoch},{loss:.6f},{loss:.6f},{loss:.6f},0.00100000,2.{epoch:02d},{best:.6f},{loss <= best},2025-01-01 00:00:{epoch:02d}\n"


@pytest.fixture
def five(project):
    for k in range(1, 5):
        write_run(project, f"2025010{k}_000000", epochs=3 + k, config={"lr": 0.001 * k},
                  extra={"Val_Dice": lambda e: 0.1 * e, "Samples_Per_Second": lambda e: 8.0 + e} if k == 2 else None,
                  monitor="Val_Dice" if k == 2 else "Avg_Loss")
    write_run(project, "20250105_000000", epochs=3, status=None)  # no sidecar: a seed-format CSV
    return project


def test_a_second_listing_reads_no_unchanged_csv(five):
    assert len(opened_csvs(five)) == 5 and cache_path(Project.at(five)).is_file()
    assert opened_csvs(five) == []
    with open(five / "metrics" / "epoch_metrics_20250103_000000.csv", "a") as f:
        f.write(line(7, 0.01, 0.01))
    assert opened_csvs(five) == ["epoch_metrics_20250103_000000.csv"]  # only the one that grew
    reads = Reads()
    listed = frame(rows(Project.at(five), reads=reads))
    assert reads.csv == [] and reads.sidecar == [] and listed.set_index("run_id").loc["20250103_000000", "epochs_done"] == 7
    same_as_full_reread(five)


def test_grown_cut_deleted_and_resumed_runs_show_what_a_full_reread_shows(five):
    metrics = five / "metrics"
    same_as_full_reread(five)
    grown = metrics / "epoch_metrics_20250104_000000.csv"
    with open(grown, "a") as f:  # a run still training: one more epoch, then half of the next
        f.write(line(8, 0.05, 0.05) + "9,0.04")
    table = same_as_full_reread(five)
    assert table.loc["20250104_000000", "epochs_done"] == 8 and table.loc["20250104_000000", "best_epoch"] == 8
    with open(grown, "a") as f:  # the cut line completed: read from where the last reading stopped
        f.write("0000,0.04,0.04,0.001,2.1,0.04,True,2025-01-01 00:01:00\n")
    assert same_as_full_reread(five).loc["20250104_000000", "epochs_done"] == 9

    cut = metrics / "epoch_metrics_20250102_000000.csv"  # killed mid-write: the complete rows count
    data = cut.read_bytes()
    cut.write_bytes(data[:data.rstrip(b"\n").rfind(b"\n") + 8])
    assert same_as_full_reread(five).loc["20250102_000000", "epochs_done"] == 4

    resumed = metrics / "epoch_metrics_20250103_000000.csv"
    header = resumed.read_text().splitlines(keepends=True)[0]
    before = [line(e, 1 - 0.1 * e, 1 - 0.1 * e) for e in range(1, 7)]  # each epoch a new best
    resumed.write_text(header + "".join(before))
    assert same_as_full_reread(five).loc["20250103_000000", "best_epoch"] == 6
    # resumed from epoch 2: epochs 3.. written again (no new best), the file longer than before
    resumed.write_text(header + "".join(before[:2]) + "".join(line(e, 0.95, 0.8) for e in range(3, 10)))
    table = same_as_full_reread(five)
    assert (table.loc["20250103_000000", "epochs_done"], table.loc["20250103_000000", "best_epoch"]) == (9, 2)
    again = resumed.read_text()
    resumed.write_text(again.replace("9,0.950000", "9,0.550000"))  # same size, new values
    os.utime(resumed, ns=(os.stat(resumed).st_atime_ns, os.stat(resumed).st_mtime_ns + 1000))
    assert same_as_full_reread(five).loc["20250103_000000", "last_loss"] == 0.55

    with open(metrics / "epoch_metrics_20250105_000000.csv", "a") as f:  # a hand-written repeat of epoch 2
        f.write(line(2, 0.7, 0.3))
    same_as_full_reread(five)
    (metrics / "epoch_metrics_20250101_000000.csv").unlink()  # the guide's clean-up: CSV gone
    for name in ("epoch_metrics_20250105_000000.csv",):  # a run deleted altogether
        (metrics / name).unlink()
    (metrics / "run_20250102_000000.json").write_text('{"status": "comp')  # a sidecar torn by hand
    table = same_as_full_reread(five)
    assert "20250105_000000" not in table.index and table.loc["20250101_000000", "problem"] == "epoch CSV missing"
    assert table.loc["20250102_000000", "problem"] == "sidecar unreadable"
    assert "20250105_000000" not in Cached(cache_path(Project.at(five))).runs  # forgotten with its files


def test_status_is_decided_at_each_listing_and_a_starting_run_is_listed(five):
    side = five / "metrics" / "run_20250101_000000.json"
    record = json.loads(side.read_text())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    alive, dead = (json.dumps({**record, "status": "running", "pid": pid}) for pid in (os.getpid(), proc.pid))
    width = max(len(alive), len(dead))
    side.write_text(alive.ljust(width))
    assert runs(five).set_index("run_id").loc["20250101_000000", "status"] == "running"
    before = os.stat(side)
    side.write_text(dead.ljust(width))  # the process is gone; same size and time: the cache's key is unchanged
    os.utime(side, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert runs(five).set_index("run_id").loc["20250101_000000", "status"] == "interrupted"
    (five / "metrics" / "run_20250106_000000.json").write_text(json.dumps({"status": "starting", "pid": os.getpid()}))
    table = same_as_full_reread(five)
    assert table.loc["20250106_000000", "status"] == "starting" and table.loc["20250106_000000", "problem"] == ""


def test_a_torn_or_foreign_cache_is_ignored_and_rebuilt(five):
    expected = runs(five, cached=False)
    path = cache_path(Project.at(five))
    runs(five)
    whole = path.read_bytes()
    for damaged in (whole[:len(whole) // 2], b"", whole.replace(b"medic-catalog 1 ", b"medic-catalog 999 ", 1),
                    whole[:-3] + b"9}}"):
        path.write_bytes(damaged)
        pd.testing.assert_frame_equal(runs(five), expected)
        assert path.read_bytes() == whole  # rebuilt, the same as before
    # a cache that lies about a run whose file is unchanged in size and time cannot be made by a
    # crash (the hash covers every byte): only a well-formed cache is trusted


def test_a_read_only_project_still_lists_its_runs(five, tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(five, shared)
    expected = runs(shared, cached=False)
    for folder, dirs, files in os.walk(shared):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)
    # root ignores file modes: drop the capabilities that let it, as a user without write access
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"] if os.geteuid() == 0 else []
    if prefix and (not shutil.which("setpriv") or subprocess.run(prefix + ["true"]).returncode):
        pytest.skip("setpriv (util-linux), allowed to drop capabilities, is needed to run without write access")
    try:
        out = subprocess.run(prefix + [sys.executable, "-m", "medic.cli", "runs", "--csv", "--root", str(shared)],
                             capture_output=True, text=True, env=child_env(), timeout=120)
        assert out.returncode == 0, out.stderr
        listed = pd.read_csv(__import__("io").StringIO(out.stdout), dtype={"run_id": str})
        assert listed["run_id"].tolist() == expected["run_id"].tolist()
        assert listed["epochs_done"].tolist() == expected["epochs_done"].tolist()
        assert not (shared / "analysis").exists()  # nothing written, no error
    finally:
        for folder, dirs, files in os.walk(shared):
            os.chmod(folder, 0o755)


def test_filters_of_medic_runs_and_catalog(five):
    write_run(five, "20250107_000000", epochs=3, extra={"Val_Dice": lambda e: 0.3 * e}, monitor="Val_Dice",
              config={"lr": 0.01})
    for run_id, sweep in (("20250102_000000", "sweep_a"), ("20250107_000000", "sweep_a")):
        side = five / "metrics" / f"run_{run_id}.json"
        side.write_text(json.dumps({**json.loads(side.read_text()), "sweep": sweep}))
    assert medic.catalog(five, sweep="sweep_a")["run_id"].tolist() == ["20250102_000000", "20250107_000000"]
    assert medic.catalog(five, since="2025-01-04")["run_id"].tolist() == ["20250104_000000", "20250105_000000",
                                                                         "20250107_000000"]
    assert medic.catalog(five, status="running")["run_id"].tolist() == ["20250105_000000"]  # no sidecar, just written: alive by its files
    best = medic.catalog(five, sweep="sweep_a", top=1)  # both monitor Val_Dice: higher is better
    assert best["run_id"].tolist() == ["20250107_000000"]
    ranked = medic.catalog(five, top=2, by="Val_Dice")
    assert ranked["run_id"].tolist() == ["20250107_000000", "20250102_000000"]
    assert ranked["Val_Dice"].tolist() == pytest.approx([0.9, 0.5])
    assert medic.catalog(five, top=3, by="total_time_s")["run_id"].tolist()[0] in ("20250105_000000", "20250107_000000")
    out = cli("runs", "--json", "--status", "completed", "--top", "2", "--by", "Avg_Loss", cwd=five)
    assert out.returncode == 0, out.stderr
    objects = json.loads(out.stdout)
    assert [o["run_id"] for o in objects] == ["20250104_000000", "20250103_000000"] and objects[0]["status"] == "completed"
    for args, message in ((["--status", "finished"], "unknown status"), (["--since", "last week"], "not a date"),
                          (["--top", "2"], "monitor different metrics"), (["--top", "0"], "--top must be"),
                          (["--top", "1", "--by", "Val_Dicee"], "no listed run records it")):
        out = cli("runs", *args, cwd=five)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    out = cli("runs", "--sweep", "nope", cwd=five)
    assert out.returncode == 0 and "no run matches --sweep nope" in out.stdout
    # 04_compare's picker: the same filters, from the same catalog
    chosen = compare_settings({"status": "completed", "top": 2, "by": "Val_Dice", "project_root": str(five)})
    assert [r.run_id for r in chosen["runs"]] == ["20250107_000000", "20250102_000000"]
    chosen = compare_settings({"where": {"lr": 0.01}, "project_root": str(five)})
    assert [r.run_id for r in chosen["runs"]] == ["20250107_000000"]
    with pytest.raises(RunNotFoundError, match="matches status='failed'"):
        compare_settings({"status": "failed", "project_root": str(five)})


def test_two_listings_at_once_each_see_whole_caches(five):
    for k in range(40):  # enough runs that the two processes' reads and writes overlap
        write_run(five, f"20250201_0000{k:02d}", epochs=3, status=None)
    expected = runs(five, cached=False).to_csv(index=False)
    script = ("import contextlib, os, sys, medic\n"
              "for _ in range(4):\n"
              "    with contextlib.suppress(FileNotFoundError):  # the other process may remove it first\n"
              "        os.unlink(sys.argv[2])\n"
              "    sys.stdout.write(medic.runs(sys.argv[1]).to_csv(index=False) + '\\x00')\n")
    path = cache_path(Project.at(five))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(five), str(path)], stdout=subprocess.PIPE,
                              text=True, env=child_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [o for out in outputs for o in out.split("\x00") if o] == [expected] * 8
    assert len(Cached(path).runs) == len(runs(five))  # the cache left is whole and is used


def test_the_sums_are_those_pandas_gives(five):
    import random

    from medic.store.epochscan import pairwise_sum
    rng = random.Random(3)
    for n in list(range(1, 140)) + [255, 256, 300, 1000]:
        values = [round(rng.uniform(0, 100), rng.choice([2, 6])) for _ in range(n)]
        assert pairwise_sum(values) == float(pd.Series(values).sum()), n  # bit for bit
    write_run(five, "20250301_000000", epochs=150, status=None)  # past 128 rows: summed from all rows
    same_as_full_reread(five)
    with open(five / "metrics" / "epoch_metrics_20250301_000000.csv", "a") as f:
        f.write(line(151, 0.001, 0.001))
    assert same_as_full_reread(five).loc["20250301_000000", "epochs_done"] == 151
