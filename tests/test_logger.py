import csv
import subprocess
import sys
import time

import pytest

from medic.errors import MedicError
from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS, MetricsLogger, truncate_csv_after
from medic.store.paths import Project, reserve_run_id


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_columns_are_the_guides_in_order():
    assert EPOCH_COLUMNS == ("Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate",
                             "Epoch_Time_Seconds", "Best_Loss_So_Far", "Is_Best_Model", "Timestamp")
    assert BATCH_COLUMNS == ("Epoch", "Batch", "Loss", "Learning_Rate", "Timestamp")


def test_files_names_header_and_rows(tmp_path):
    log = MetricsLogger(tmp_path, log_batch_metrics=True, rank=0)
    assert log.epoch_path.name == f"epoch_metrics_{log.run_id}.csv"
    assert log.batch_path.name == f"batch_metrics_{log.run_id}.csv"
    assert log.epoch_path.parent == tmp_path / "metrics"
    log.log_batch(1, 0, 0.5, 0.001)
    log.log_batches(1, 1, [0.25, 0.125], [0.001, 0.001])
    # rows are on disk as soon as they are logged (no buffering to wait for)
    assert rows(log.batch_path)[1:] == [["1", "0", "0.500000", "0.00100000", rows(log.batch_path)[1][4]],
                                       ["1", "1", "0.250000", "0.00100000", rows(log.batch_path)[2][4]],
                                       ["1", "2", "0.125000", "0.00100000", rows(log.batch_path)[3][4]]]
    log.log_epoch(1, avg_loss=0.4, min_batch_loss=0.125, max_batch_loss=0.5, learning_rate=0.001, epoch_time=1.5)
    log.log_epoch(2, avg_loss=0.45, min_batch_loss=0.2, max_batch_loss=0.6, learning_rate=0.001, epoch_time=1.25)
    log.log_epoch(3, avg_loss=0.3, min_batch_loss=0.1, max_batch_loss=0.5, learning_rate=0.0005, epoch_time=1.0)
    log.close()
    table = rows(log.epoch_path)
    assert table[0] == list(EPOCH_COLUMNS)
    assert [r[:8] for r in table[1:]] == [
        ["1", "0.400000", "0.125000", "0.500000", "0.00100000", "1.50", "0.400000", "True"],
        ["2", "0.450000", "0.200000", "0.600000", "0.00100000", "1.25", "0.400000", "False"],
        ["3", "0.300000", "0.100000", "0.500000", "0.00050000", "1.00", "0.300000", "True"]]
    assert all(time.strptime(r[8], "%Y-%m-%d %H:%M:%S") for r in table[1:])
    assert rows(log.batch_path)[0] == list(BATCH_COLUMNS)


def test_extra_columns_are_an_argument(tmp_path):
    log = MetricsLogger(tmp_path, extra_columns=["Val_Dice", "Note"], monitor_mode="max", rank=0)
    log.log_epoch(1, avg_loss=1, min_batch_loss=1, max_batch_loss=1, learning_rate=1e-3, epoch_time=1,
                  best_so_far=0.7, is_best=True, Val_Dice=0.7, Note="=HYPERLINK(x)")
    with pytest.raises(MedicError, match="unknown metric"):
        log.log_epoch(2, avg_loss=1, min_batch_loss=1, max_batch_loss=1, learning_rate=1e-3, epoch_time=1, Dice=1)
    log.close()
    table = rows(log.epoch_path)
    assert table[0] == list(EPOCH_COLUMNS) + ["Val_Dice", "Note"]
    assert table[1][9:] == ["0.700000", "'=HYPERLINK(x)"]  # a formula is defused for spreadsheets
    with pytest.raises(MedicError):
        MetricsLogger(tmp_path, extra_columns=["Avg_Loss"], rank=0)


def test_other_ranks_write_nothing(tmp_path):
    log = MetricsLogger(tmp_path, log_batch_metrics=True, rank=1)
    log.log_batch(1, 0, 0.5, 0.001)
    log.log_epoch(1, avg_loss=1, min_batch_loss=1, max_batch_loss=1, learning_rate=1e-3, epoch_time=1)
    assert not (tmp_path / "metrics").exists()


def test_same_second_runs_get_distinct_ids_and_nothing_is_overwritten(tmp_path):
    project = Project.at(tmp_path)
    now = time.time()
    ids = [reserve_run_id(project, now) for _ in range(3)]
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    assert ids == [stamp, f"{stamp}_2", f"{stamp}_3"]
    project.epoch_csv(ids[0]).write_text("kept\n")
    assert reserve_run_id(project, now) == f"{stamp}_4"
    assert project.epoch_csv(ids[0]).read_text() == "kept\n"
    assert project.run_ids() == ids + [f"{stamp}_4"]


def test_two_processes_in_the_same_second(tmp_path):
    code = ("import sys,time; from medic.store.paths import Project, reserve_run_id;"
            "t=float(sys.argv[1]); time.sleep(max(0, t-time.time()));"
            "print(reserve_run_id(Project.at(sys.argv[2]), t))")
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    ids = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert len(set(ids)) == 4 and all(ids)


def test_resume_truncates_later_rows_and_partial_line(tmp_path):
    log = MetricsLogger(tmp_path, log_batch_metrics=True, rank=0)
    for e in (1, 2, 3):
        log.log_batches(e, 0, [0.5, 0.4], [1e-3, 1e-3])
        log.log_epoch(e, avg_loss=1.0 / e, min_batch_loss=0.1, max_batch_loss=1, learning_rate=1e-3, epoch_time=1)
    log.close()
    with open(log.epoch_path, "a") as f:
        f.write("4,0.2")  # a row cut short by a crash
    again = MetricsLogger(tmp_path, log.run_id, log_batch_metrics=True, resume_epoch=2, resume_partial=(3, 1),
                          best_so_far=0.5, rank=0)
    again.log_epoch(3, avg_loss=0.2, min_batch_loss=0.1, max_batch_loss=1, learning_rate=1e-3, epoch_time=1)
    again.close()
    table = rows(log.epoch_path)
    assert [r[0] for r in table[1:]] == ["1", "2", "3"] and table[3][1] == "0.200000"
    assert [(r[0], r[1]) for r in rows(log.batch_path)[1:]] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1"),
                                                               ("3", "0")]


def test_refuses_to_append_to_a_file_of_another_layout(tmp_path):
    log = MetricsLogger(tmp_path, rank=0)
    log.close()
    log.epoch_path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(MedicError, match="refusing"):
        MetricsLogger(tmp_path, log.run_id, resume_epoch=0, rank=0)
    assert log.epoch_path.read_text() == "a,b,c\n1,2,3\n"


def test_truncate_keeps_bytes_before_the_cut(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"Epoch,Loss\n1,0.5\n2,0.4\n3,0.3\n")
    assert truncate_csv_after(p, 2) == 2
    assert p.read_bytes() == b"Epoch,Loss\n1,0.5\n2,0.4\n"
