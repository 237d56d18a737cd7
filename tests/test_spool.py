"""Disk spool: FIFO, restart and crash recovery, bounds, rewind, corruption."""

from __future__ import annotations

import errno
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collector import spool as spool_module
from collector.spool import (
    MAGIC,
    Spool,
    SpoolPosition,
    SpoolRecord,
    decode_body,
    encode_record,
)

HEADERS = [("hepwatch.node", b"collector-1"), ("hepwatch.hep_version", b"3")]


def rec(i: int, size: int = 100) -> SpoolRecord:
    """Record i: its number is in the key, the timestamp and the start of the value."""
    value = i.to_bytes(8, "big") + b"v" * max(0, size - 8)
    return SpoolRecord(f"call-{i:06d}".encode(), value, 1_700_000_000_000 + i, list(HEADERS))


def num(r: SpoolRecord) -> int:
    return int.from_bytes(r.value[:8], "big")


def frame_len(r: SpoolRecord) -> int:
    return len(encode_record(r))


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def drain(spool: Spool, batch: int = 50) -> list[SpoolRecord]:
    out: list[SpoolRecord] = []
    while got := spool.read_batch(batch):
        out.extend(r for _, r in got)
        spool.ack(got[-1][0])
    return out


def open_spool(d: Path, **kw: object) -> Spool:
    kw.setdefault("max_bytes", 1 << 30)
    return Spool(d, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "r",
    [
        SpoolRecord(None, b"", 0, []),
        SpoolRecord(b"", b"x", -1, []),
        SpoolRecord(b"k", b"v" * 70_000, 2**63 - 1, [("", b""), ("ünï", b"\x00" * 65535)]),
        SpoolRecord(b"\xff" * 300, b"v", -(2**63), [(f"h{i}", bytes([i])) for i in range(255)]),
    ],
)
def test_record_round_trips_through_the_spool(tmp_path: Path, r: SpoolRecord) -> None:
    frame = encode_record(r)
    assert frame[0] == MAGIC
    assert decode_body(frame, 9, len(frame)) == r
    with open_spool(tmp_path) as spool:
        assert spool.append(r)
        [(_, got)] = spool.read_batch(10)
        assert got == r
        assert (got.key is None) == (r.key is None)


def test_record_larger_than_the_read_chunk(tmp_path: Path) -> None:
    big = SpoolRecord(b"k", os.urandom(3 << 20), 1, [])
    with open_spool(tmp_path, segment_bytes=1 << 20) as spool:
        for r in (rec(0), big, rec(1)):
            assert spool.append(r)
        got = drain(spool)
    assert got == [rec(0), big, rec(1)]


@pytest.mark.parametrize(
    "r",
    [
        SpoolRecord(None, b"", 0, [("n" * 256, b"")]),
        SpoolRecord(None, b"", 0, [("n", b"v" * 65536)]),
        SpoolRecord(None, b"", 0, [("n", b"")] * 256),
    ],
)
def test_unencodable_record_is_refused_not_counted(tmp_path: Path, r: SpoolRecord) -> None:
    with open_spool(tmp_path) as spool:
        with pytest.raises(ValueError):
            spool.append(r)
        assert spool.appended_records == 0 and spool.overflow_records == 0


# --------------------------------------------------------------------------- FIFO


def test_fifo_across_many_segments(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=2048) as spool:
        for i in range(2000):
            assert spool.append(rec(i, size=50 + i % 200))
        assert len(segment_files(tmp_path)) > 50
        assert len(spool) == spool.depth_records == 2000
        got: list[int] = []
        sizes = [1, 7, 64, 3, 500]
        i = 0
        while batch := spool.read_batch(sizes[i % len(sizes)]):
            i += 1
            got.extend(num(r) for _, r in batch)
            spool.ack(batch[-1][0])
        assert got == list(range(2000))
        assert spool.acked_records == 2000
        assert len(spool) == 0 and spool.depth_bytes == 0
        # Acked segments are deleted, the drained write segment retired.
        assert len(segment_files(tmp_path)) <= 2
        assert spool.disk_bytes < 2048


def test_reads_see_appends_that_are_still_buffered(tmp_path: Path) -> None:
    with open_spool(tmp_path, fsync_interval_s=3600) as spool:
        for i in range(3):
            spool.append(rec(i))
        assert [num(r) for _, r in spool.read_batch(10)] == [0, 1, 2]
        spool.append(rec(3))
        assert [num(r) for _, r in spool.read_batch(10)] == [3]
        assert spool.read_batch(10) == []


def test_append_many_keeps_order_and_mixes_with_append(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=1000) as spool:
        assert spool.append_many([rec(i) for i in range(10)]) == 10
        assert spool.append(rec(10))
        assert spool.append_many(rec(i) for i in range(11, 40)) == 29
        assert spool.append_many([]) == 0
        assert [num(r) for r in drain(spool)] == list(range(40))


def test_record_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=500) as spool:
        for i in range(5):
            spool.append(rec(i, size=2000 if i == 2 else 10))
        assert [num(r) for r in drain(spool)] == list(range(5))


# --------------------------------------------------------------------------- restart


def test_restart_resumes_after_the_last_ack(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=1500) as spool:
        for i in range(100):
            spool.append(rec(i))
        batch = spool.read_batch(60)
        spool.ack(batch[39][0])  # 0..39 delivered, 40..59 read but not acked
        assert len(spool) == 60
    with open_spool(tmp_path, segment_bytes=1500) as spool:
        assert len(spool) == 60
        assert spool.depth_bytes == sum(frame_len(rec(i)) for i in range(40, 100))
        for i in range(100, 110):
            spool.append(rec(i))
        assert [num(r) for r in drain(spool, batch=7)] == list(range(40, 110))
    with open_spool(tmp_path) as spool:
        assert len(spool) == 0 and spool.read_batch(10) == []
        assert spool.recovered_torn_records == 0


def test_restart_with_ack_at_a_segment_end(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=1000) as spool:
        for i in range(30):
            spool.append(rec(i))
        batch = spool.read_batch(100)
        # The last record of the first segment.
        first_seg = [p for p, _ in batch if p.segment == batch[0][0].segment]
        spool.ack(first_seg[-1])
        acked = len(first_seg)
    with open_spool(tmp_path, segment_bytes=1000) as spool:
        assert len(spool) == 30 - acked
        assert [num(r) for r in drain(spool)] == list(range(acked, 30))


def test_restart_with_nothing_acked_and_empty_spool(tmp_path: Path) -> None:
    with open_spool(tmp_path):
        pass
    with open_spool(tmp_path) as spool:
        assert len(spool) == 0
        spool.append(rec(1))
    with open_spool(tmp_path) as spool:
        assert [num(r) for r in drain(spool)] == [1]


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path), pytest.raises(RuntimeError, match="in use"):
        open_spool(tmp_path)
    open_spool(tmp_path).close()


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(RuntimeError):
        spool.append(rec(0))
    with pytest.raises(RuntimeError):
        spool.read_batch(1)


CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from collector.spool import Spool, SpoolRecord

    directory, mode, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    strict = mode == "strict"
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=8192,
                  fsync_interval_s=0 if strict else 0.05)

    def rec(i):
        return SpoolRecord(f"call-{i}".encode(), i.to_bytes(8, "big") + b"v" * 92, i, [])

    i = start
    while True:
        spool.append(rec(i))
        if strict:
            print("W", i, flush=True)
        elif i % 20 == 19:
            spool.flush()
            print("W", i, flush=True)
        if i % 50 == 49:
            # Deliver everything read so far except the last 10 records.
            batch = spool.read_batch(1000)
            if len(batch) > 10:
                pos, r = batch[-11]
                spool.ack(pos)
                print("A", int.from_bytes(r.value[:8], "big"), flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("mode", ["strict", "buffered"])
def test_sigkill_loses_nothing_that_was_durable(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    d = tmp_path / "spool"
    start = 0
    last_acked = -1
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(d), mode, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        durable = start - 1
        deadline = time.monotonic() + 60
        while durable < start + 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the child process died"
            kind, n = line.split()
            if kind == "W":
                durable = int(n)
            else:
                last_acked = int(n)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert durable >= start + 300

        with open_spool(d) as spool:
            got = [num(r) for r in drain(spool, batch=100)]
            # Resumes right after the last ack whose return we saw; an ack in flight when
            # the child died can move that one step (50 records) further, never more.
            assert got[0] in (last_acked + 1, last_acked + 51)
            assert got == list(range(got[0], got[-1] + 1))
            assert got[-1] >= durable
            assert spool.recovered_torn_records <= 1
            start = got[-1] + 1
            last_acked = got[-1]


def test_crash_without_close_keeps_flushed_records(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from pathlib import Path
            from collector.spool import Spool, SpoolRecord
            spool = Spool(Path(sys.argv[1]), max_bytes=1 << 30, segment_bytes=4096,
                          fsync_interval_s=3600)
            for i in range(100):
                spool.append(SpoolRecord(None, i.to_bytes(8, "big"), i, []))
            batch = spool.read_batch(60)
            spool.ack(batch[29][0])
            for i in range(100, 110):
                spool.append(SpoolRecord(None, i.to_bytes(8, "big"), i, []))
            spool.flush()
            spool.append(SpoolRecord(None, (999).to_bytes(8, "big"), 999, []))  # never flushed
            os._exit(0)
            """
        )
    )
    subprocess.run([sys.executable, str(script), str(tmp_path / "s")], check=True)
    with open_spool(tmp_path / "s") as spool:
        assert len(spool) == 80
        assert [num(r) for r in drain(spool)] == list(range(30, 110))


# --------------------------------------------------------------------------- torn tail


def write_and_close(d: Path, n: int, **kw: object) -> None:
    with open_spool(d, **kw) as spool:
        for i in range(n):
            assert spool.append(rec(i))


def last_data_segment(d: Path) -> Path:
    return [p for p in segment_files(d) if p.stat().st_size][-1]


@pytest.mark.parametrize("cut", [1, 5, 9, 10, 50])
def test_torn_last_record_is_truncated_and_counted(tmp_path: Path, cut: int) -> None:
    write_and_close(tmp_path, 10)
    seg = last_data_segment(tmp_path)
    size = seg.stat().st_size
    os.truncate(seg, size - cut)
    with open_spool(tmp_path) as spool:
        assert spool.recovered_torn_records == 1
        assert seg.stat().st_size == size - frame_len(rec(9))
        assert len(spool) == 9
        spool.append(rec(10))
        assert [num(r) for r in drain(spool)] == [*range(9), 10]


def test_torn_tail_after_garbage_write(tmp_path: Path) -> None:
    write_and_close(tmp_path, 5)
    seg = last_data_segment(tmp_path)
    with open(seg, "ab") as f:
        f.write(encode_record(rec(5))[:-3] + b"\x00" * 4096)  # a partial record, then zeros
    with open_spool(tmp_path) as spool:
        assert spool.recovered_torn_records == 1
        assert [num(r) for r in drain(spool)] == list(range(5))


def test_torn_tail_in_an_older_segment(tmp_path: Path) -> None:
    # A sealed segment's fsync runs in the background, so an OS crash can tear it too.
    write_and_close(tmp_path, 40, segment_bytes=1000)
    segs = segment_files(tmp_path)
    assert len(segs) > 3
    os.truncate(segs[1], segs[1].stat().st_size - 3)
    with open_spool(tmp_path) as spool:
        assert spool.recovered_torn_records == 1
        got = [num(r) for r in drain(spool)]
    assert len(got) == 39 and got == sorted(got)


def test_cursor_past_a_truncated_segment_end(tmp_path: Path) -> None:
    # The cursor was fsynced but the acked data was not: the OS lost acked records only.
    with open_spool(tmp_path) as spool:
        for i in range(10):
            spool.append(rec(i))
        spool.ack(spool.read_batch(8)[-1][0])
    seg = segment_files(tmp_path)[0]
    os.truncate(seg, frame_len(rec(0)) * 5)
    with open_spool(tmp_path) as spool:
        assert len(spool) == 0
        spool.append(rec(10))
        assert [num(r) for r in drain(spool)] == [10]


# --------------------------------------------------------------------------- bound


def test_overflow_is_refused_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flen = frame_len(rec(0))
    with open_spool(tmp_path, max_bytes=flen * 40, segment_bytes=flen * 5) as spool:
        accepted = 0
        with caplog.at_level(logging.WARNING, logger="hepwatch.spool"):
            for i in range(60):
                accepted += spool.append(rec(i))
            assert spool.append_many([rec(i) for i in range(60, 70)]) == 0
        assert accepted == 40
        assert spool.overflow_records == 30
        assert spool.appended_records == 40
        assert spool.disk_bytes <= spool.max_bytes
        warnings = [r for r in caplog.records if r.name == "hepwatch.spool"]
        assert len(warnings) == 1  # rate-limited
        assert "full" in warnings[0].getMessage()

        # Acking frees whole segments.
        batch = spool.read_batch(12)
        spool.ack(batch[-1][0])
        assert spool.disk_bytes == flen * 30
        assert spool.append_many([rec(i) for i in range(100, 120)]) == 10  # a prefix
        assert spool.overflow_records == 40
        got = [num(r) for r in drain(spool)]
    assert got == [*range(12, 40), *range(100, 110)]


def test_overflow_survives_restart_accounting(tmp_path: Path) -> None:
    flen = frame_len(rec(0))
    kw = {"max_bytes": flen * 20, "segment_bytes": flen * 4}
    with open_spool(tmp_path, **kw) as spool:
        while spool.append(rec(0)):
            pass
    with open_spool(tmp_path, **kw) as spool:
        assert not spool.append(rec(1))
        assert spool.overflow_records == 1
        assert len(spool) == 20


def test_huge_record_overflows(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=1000) as spool:
        assert not spool.append(rec(0, size=2000))
        assert spool.overflow_records == 1
        assert spool.append(rec(1, size=10))


# --------------------------------------------------------------------------- rewind / ack


def test_rewind_rereads_unacked_records(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=700) as spool:
        for i in range(30):
            spool.append(rec(i))
        first = spool.read_batch(10)
        spool.rewind()
        again = spool.read_batch(10)
        assert [r for _, r in again] == [r for _, r in first]
        assert [p for p, _ in again] == [p for p, _ in first]
        spool.ack(again[4][0])
        spool.read_batch(20)
        spool.rewind()
        assert [num(r) for r in drain(spool)] == list(range(5, 30))
        assert spool.acked_records == 30


def test_rewind_after_everything_acked(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=700) as spool:
        for i in range(20):
            spool.append(rec(i))
        drain(spool)
        spool.rewind()
        assert spool.read_batch(10) == []
        spool.append(rec(20))
        spool.rewind()
        assert [num(r) for r in drain(spool)] == [20]


def test_late_ack_after_rewind_moves_the_reader(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=700) as spool:
        for i in range(20):
            spool.append(rec(i))
        batch = spool.read_batch(15)
        spool.rewind()
        spool.ack(batch[9][0])  # a delivery report that arrived after the rewind
        assert [num(r) for r in drain(spool)] == list(range(10, 20))
        assert spool.acked_records == 20


def test_ack_rules(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(10):
            spool.append(rec(i))
        batch = spool.read_batch(5)
        with pytest.raises(ValueError):
            spool.ack(SpoolPosition(batch[-1][0].segment, 10_000, 10_100, 50))
        spool.ack(batch[2][0])
        spool.ack(batch[2][0])  # repeated: no-op
        spool.ack(batch[0][0])  # older: no-op
        assert spool.acked_records == 3
        assert len(spool) == 7
        assert spool.read_batch(0) == []


def test_depth_counts_bytes_as_framed(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=600) as spool:
        recs = [rec(i, size=i * 7) for i in range(25)]
        for r in recs:
            spool.append(r)
        sizes = [frame_len(r) for r in recs]
        assert spool.depth_bytes == sum(sizes)
        batch = spool.read_batch(11)
        assert spool.depth_bytes == sum(sizes)  # reading is not acking
        spool.ack(batch[-1][0])
        assert spool.depth_bytes == sum(sizes[11:])
        assert len(spool) == 14


# --------------------------------------------------------------------------- corruption


def record_offset(i: int) -> int:
    return sum(frame_len(rec(j)) for j in range(i))


def flip(path: Path, offset: int, value: int | None = None) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([old ^ 0x55 if value is None else value]))


@pytest.mark.parametrize("where", ["value", "crc", "magic", "flags"])
def test_corrupt_record_in_the_middle_is_skipped_counted_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    write_and_close(tmp_path, 20)
    seg = segment_files(tmp_path)[0]
    at = record_offset(10) + {"value": 60, "crc": 2, "magic": 0, "flags": 9}[where]
    flip(seg, at)
    with caplog.at_level(logging.ERROR, logger="hepwatch.spool"), open_spool(tmp_path) as spool:
        assert spool.recovered_torn_records == 0
        got = [num(r) for r in drain(spool, batch=7)]
        assert got == [*range(10), *range(11, 20)]
        assert spool.corrupt_records == 1
        assert len(spool) == 0  # the count is reconciled once the segment is acked
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_corrupt_length_field_resyncs_on_the_next_record(tmp_path: Path) -> None:
    write_and_close(tmp_path, 20)
    seg = segment_files(tmp_path)[0]
    with open(seg, "r+b") as f:
        f.seek(record_offset(10) + 5)
        f.write(struct.pack("<I", 0x00FFFFFF))  # length far past the segment end
    with open_spool(tmp_path) as spool:
        got = [num(r) for r in drain(spool)]
        assert got == [*range(10), *range(11, 20)]
        assert spool.corrupt_records == 1


def test_corruption_of_several_records_and_a_restart(tmp_path: Path) -> None:
    write_and_close(tmp_path, 30, segment_bytes=1 << 20)
    seg = segment_files(tmp_path)[0]
    for i in (3, 4, 17):
        flip(seg, record_offset(i) + 40)
    with open_spool(tmp_path) as spool:
        batch = spool.read_batch(10)
        assert [num(r) for _, r in batch] == [0, 1, 2, *range(5, 12)]
        spool.ack(batch[-1][0])
    with open_spool(tmp_path) as spool:
        got = [num(r) for r in drain(spool)]
        assert got == [*range(12, 17), *range(18, 30)]
        assert spool.corrupt_records == 1


def test_corruption_while_open(tmp_path: Path) -> None:
    with open_spool(tmp_path, fsync_interval_s=3600) as spool:
        for i in range(10):
            spool.append(rec(i))
        spool.flush()
        flip(segment_files(tmp_path)[-1], record_offset(5) + 50)
        got = [num(r) for r in drain(spool)]
        assert got == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        assert spool.corrupt_records == 1
        assert len(spool) == 0
        spool.append(rec(10))
        assert [num(r) for r in drain(spool)] == [10]


def test_garbage_segment_is_skipped_whole(tmp_path: Path) -> None:
    write_and_close(tmp_path, 30, segment_bytes=1000)
    segs = segment_files(tmp_path)
    victim = segs[1]
    size = victim.stat().st_size
    victim.write_bytes(b"\xe1" + os.urandom(size - 2) + b"\xe1")
    with open_spool(tmp_path) as spool:
        # Recovery sees no valid record in it at all: that is a torn tail from offset 0.
        got = [num(r) for r in drain(spool)]
        assert got == sorted(got) and 0 in got and 29 in got
        assert spool.recovered_torn_records == 1


def test_corrupt_cursor_redelivers_rather_than_loses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(10):
            spool.append(rec(i))
        spool.ack(spool.read_batch(4)[-1][0])
    flip(tmp_path / "cursor", 10)
    with caplog.at_level(logging.ERROR, logger="hepwatch.spool"), open_spool(tmp_path) as spool:
        assert [num(r) for r in drain(spool)] == list(range(10))
    assert any("cursor" in r.getMessage() for r in caplog.records)


def test_stale_temp_cursor_is_ignored(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(5):
            spool.append(rec(i))
        spool.ack(spool.read_batch(2)[-1][0])
    (tmp_path / "cursor.tmp").write_bytes(b"half a cursor")
    with open_spool(tmp_path) as spool:
        assert [num(r) for r in drain(spool)] == [2, 3, 4]
    assert not (tmp_path / "cursor.tmp").exists()


def test_strict_mode_is_durable_per_append(tmp_path: Path) -> None:
    with open_spool(tmp_path, fsync_interval_s=0, segment_bytes=500) as spool:
        for i in range(20):
            spool.append(rec(i))
        assert spool.append_many([rec(i) for i in range(20, 25)]) == 5
        assert [num(r) for r in drain(spool)] == list(range(25))


def test_frame_inside_a_corrupt_record_is_not_delivered(tmp_path: Path) -> None:
    # A value may legitimately contain bytes that form a valid record frame (a HEP packet
    # can carry anything). If its own record is damaged, skipping by the record's length
    # must win over scanning into its value for the next valid frame.
    inner = SpoolRecord(b"forged", b"never delivered", 7, [])
    outer = SpoolRecord(b"k", b"x" * 20 + encode_record(inner) + b"y" * 20, 8, [])
    with open_spool(tmp_path) as spool:
        for r in (rec(0), outer, rec(2)):
            spool.append(r)
    flip(segment_files(tmp_path)[0], frame_len(rec(0)) + 30)
    with open_spool(tmp_path) as spool:
        assert drain(spool) == [rec(0), rec(2)]
        assert spool.corrupt_records == 1


def test_segments_before_the_cursor_are_deleted_at_open(tmp_path: Path) -> None:
    # A crash between persisting the cursor and deleting the acked segments leaves them.
    with open_spool(tmp_path, segment_bytes=1000) as spool:
        for i in range(30):
            spool.append(rec(i))
        batch = spool.read_batch(20)
        acked_segment = segment_files(tmp_path)[0].read_bytes()
        spool.ack(batch[-1][0])
    stale = tmp_path / f"{0:020d}.seg"
    assert not stale.exists()
    stale.write_bytes(acked_segment)
    with open_spool(tmp_path, segment_bytes=1000) as spool:
        assert not stale.exists()
        assert [num(r) for r in drain(spool)] == list(range(20, 30))


def test_write_failure_keeps_records_and_retries_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_pwrite = os.pwrite
    calls = 0

    def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
        # First a short write of half the buffer, then the disk is full.
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_spool(tmp_path, fsync_interval_s=3600) as spool:
        for i in range(5):
            spool.append(rec(i))
        spool.flush()
        monkeypatch.setattr(spool_module.os, "pwrite", failing_pwrite)
        for i in range(5, 15):
            assert spool.append(rec(i))  # accepted into memory
        with caplog.at_level(logging.ERROR, logger="hepwatch.spool"), pytest.raises(OSError):
            spool.flush()
        assert spool.write_errors == 1
        assert any("kept in memory" in r.getMessage() for r in caplog.records)
        # The reader gets what is on disk, never the half-written record.
        assert [num(r) for _, r in spool.read_batch(100)] == list(range(5))
        monkeypatch.setattr(spool_module.os, "pwrite", real_pwrite)
        assert [num(r) for _, r in spool.read_batch(100)] == list(range(5, 15))
    with open_spool(tmp_path) as spool:
        assert spool.recovered_torn_records == 0 and spool.corrupt_records == 0
        assert [num(r) for r in drain(spool)] == list(range(15))
