"""Disk spool against a model (hypothesis) and under concurrent appenders and a drain thread."""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from collector import spool as spool_module
from collector.spool import Spool, SpoolPosition, SpoolRecord, decode_body, encode_record

records = st.builds(
    SpoolRecord,
    key=st.none() | st.binary(max_size=40),
    value=st.binary(max_size=300),
    timestamp_ms=st.integers(-(2**63), 2**63 - 1),
    headers=st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=30)), max_size=5),
)


@given(records)
def test_encode_decode_round_trip(r: SpoolRecord) -> None:
    frame = encode_record(r)
    assert decode_body(frame, 9, len(frame)) == r


class SpoolModel(RuleBasedStateMachine):
    """The spool is a FIFO whose unacked part survives reopen and crash."""

    MAX_BYTES = 12_000

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.generation = 0
        self.unacked: list[SpoolRecord] = []  # model: everything appended and not acked
        self.read: list[SpoolPosition] = []  # positions of unacked[: len(read)]

    def _open(self) -> Spool:
        return Spool(
            self.root / str(self.generation),
            max_bytes=self.MAX_BYTES,
            segment_bytes=700,
            fsync_interval_s=0.01,
        )

    @initialize()
    def start(self) -> None:
        self.spool = self._open()

    @rule(r=records)
    def append(self, r: SpoolRecord) -> None:
        before = self.spool.overflow_records
        if self.spool.append(r):
            self.unacked.append(r)
        else:
            assert self.spool.overflow_records == before + 1
            assert self.spool.disk_bytes + len(encode_record(r)) > self.MAX_BYTES

    @rule(rs=st.lists(records, max_size=8))
    def append_many(self, rs: list[SpoolRecord]) -> None:
        before = self.spool.overflow_records
        n = self.spool.append_many(rs)
        self.unacked.extend(rs[:n])
        assert self.spool.overflow_records == before + len(rs) - n

    @rule(n=st.integers(0, 12))
    def read_batch(self, n: int) -> None:
        got = self.spool.read_batch(n)
        start = len(self.read)
        assert [r for _, r in got] == self.unacked[start : start + n]
        self.read.extend(p for p, _ in got)

    @precondition(lambda self: self.read)
    @rule(k=st.integers(0, 100))
    def ack(self, k: int) -> None:
        i = k % len(self.read)
        self.spool.ack(self.read[i])
        del self.unacked[: i + 1]
        del self.read[: i + 1]

    @rule()
    def rewind(self) -> None:
        self.spool.rewind()
        self.read = []

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()
        self.read = []

    @rule()
    def crash(self) -> None:
        # What a kill -9 leaves: the files as the OS has them, after an explicit flush.
        self.spool.flush()
        src = self.root / str(self.generation)
        self.generation += 1
        shutil.copytree(src, self.root / str(self.generation))
        self.spool.close()
        self.spool = self._open()
        self.read = []
        assert self.spool.recovered_torn_records == 0

    @invariant()
    def depth_matches(self) -> None:
        if not hasattr(self, "spool"):
            return
        assert len(self.spool) == len(self.unacked)
        assert self.spool.depth_bytes == sum(len(encode_record(r)) for r in self.unacked)
        assert self.spool.disk_bytes <= self.MAX_BYTES

    def teardown(self) -> None:
        if hasattr(self, "spool"):
            self.spool.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def value_of(tid: int, seq: int) -> bytes:
    return tid.to_bytes(2, "big") + seq.to_bytes(4, "big") + b"p" * 200


@pytest.mark.parametrize(("seed", "max_bytes"), [(1, 1 << 30), (2, 1 << 30), (3, 120_000)])
def test_concurrent_appenders_and_drain_deliver_exactly_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, max_bytes: int
) -> None:
    threads, per_thread = 4, 5000
    # Small write chunks: the buffer is swapped out under the appenders' feet all the time.
    monkeypatch.setattr(spool_module, "_WRITE_CHUNK", 2048)
    # Switch threads often so appends, rolls, flushes, reads and acks interleave finely.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        run_concurrently(tmp_path, seed, max_bytes, threads, per_thread)
    finally:
        sys.setswitchinterval(old_interval)


def run_concurrently(
    tmp_path: Path, seed: int, max_bytes: int, threads: int, per_thread: int
) -> None:
    spool = Spool(tmp_path, max_bytes=max_bytes, segment_bytes=16_384, fsync_interval_s=0.005)
    accepted: list[list[int]] = [[] for _ in range(threads)]
    delivered: list[list[int]] = [[] for _ in range(threads)]
    writers_done = threading.Event()
    errors: list[BaseException] = []
    delivered_while_writing = 0

    def writer(tid: int) -> None:
        rng = random.Random(seed * 100 + tid)
        try:
            seq = 0
            while seq < per_thread:
                n = rng.choice([1, 1, 1, 5, 40])
                batch = [
                    SpoolRecord(None, value_of(tid, s), s, [("t", bytes([tid]))])
                    for s in range(seq, min(seq + n, per_thread))
                ]
                if len(batch) == 1:
                    ok = [spool.append(batch[0])]
                else:
                    k = spool.append_many(batch)
                    ok = [i < k for i in range(len(batch))]
                accepted[tid].extend(r.timestamp_ms for r, a in zip(batch, ok, strict=True) if a)
                seq += len(batch)
        except BaseException as exc:
            errors.append(exc)

    def drainer() -> None:
        nonlocal delivered_while_writing
        rng = random.Random(seed)
        try:
            while True:
                done = writers_done.is_set()
                batch = spool.read_batch(rng.randint(1, 300))
                if not batch:
                    if done:
                        return
                    continue
                if rng.random() < 0.1:
                    spool.rewind()  # a failed delivery: everything since the ack again
                    continue
                for _, r in batch:
                    delivered[int.from_bytes(r.value[:2], "big")].append(r.timestamp_ms)
                spool.ack(batch[-1][0])
                if not done:
                    delivered_while_writing += len(batch)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    drain_thread = threading.Thread(target=drainer)
    drain_thread.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    writers_done.set()
    drain_thread.join(timeout=120)
    assert not drain_thread.is_alive()
    assert not errors, errors
    assert delivered_while_writing > 0

    for tid in range(threads):
        assert delivered[tid] == accepted[tid]
    total = sum(map(len, accepted))
    assert spool.appended_records == spool.acked_records == total
    assert spool.overflow_records == threads * per_thread - total
    if max_bytes < 1 << 30:
        assert spool.overflow_records > 0
    assert len(spool) == 0
    spool.close()
