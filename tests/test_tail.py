import os

from medic.store.tail import CsvTail


def test_reads_only_whole_new_lines(tmp_path):
    p = tmp_path / "m.csv"
    tail = CsvTail(p)
    assert tail.poll() == [] and tail.header is None
    p.write_bytes(b"Epoch,Loss\n1,0.5\n2,0.")
    assert tail.poll() == [["1", "0.5"]] and tail.header == ["Epoch", "Loss"]
    assert tail.poll() == []
    with open(p, "ab") as f:
        f.write(b"4\n3,0.3\n")
    assert tail.poll() == [["2", "0.4"], ["3", "0.3"]]
    assert tail.offset == p.stat().st_size


def test_restarts_when_truncated_or_replaced(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes(b"Epoch,Loss\n1,0.5\n2,0.4\n")
    tail = CsvTail(p)
    assert len(tail.poll()) == 2
    os.truncate(p, len(b"Epoch,Loss\n1,0.5\n"))
    assert tail.poll() == [["1", "0.5"]] and tail.reset
    q = tmp_path / "n.csv"
    q.write_bytes(b"Epoch,Loss\n9,0.1\n")
    os.replace(q, p)
    assert tail.poll() == [["9", "0.1"]] and tail.reset


def test_poll_cost_follows_new_bytes(tmp_path):
    p = tmp_path / "big.csv"
    with open(p, "wb") as f:
        f.write(b"Epoch,Batch,Loss\n" + b"".join(b"1,%d,0.5\n" % i for i in range(200_000)))
    tail = CsvTail(p)
    assert len(tail.poll()) == 200_000
    with open(p, "ab") as f:
        f.write(b"2,0,0.4\n")
    before = tail.offset
    assert tail.poll() == [["2", "0", "0.4"]]
    assert tail.offset - before == len(b"2,0,0.4\n")
