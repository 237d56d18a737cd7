"""The C batch path (`speedups.recv_batch`, `frame_batch`, `Ingest.accept_batch`) against the
Python reference: per packet `Ingest.accept` with the C scan switched off, and `StreamFramer`.

(a) Datagrams of every kind (plain, mutated, v1/v2, noise, empty) from several senders, with
and without an auth policy: the batch path publishes the same records in the same order and
counts the same. (b) Streams cut by `frame_batch` give the packets, the stop offset and the
framing error `StreamFramer` gives. (c) The listeners publish the same with the C extension and
with the pure Python fallback. (d) `Publisher.publish_many` spools what librdkafka refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hepbuild import chunk, frame, hep3, hep12, sip_message
from hepvectors import mangled_bytes, wire_packets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_hep_speedups import mutated_plain, plain_packets

import collector.ingest as ingest_mod
from collector.auth import AuthPolicy
from collector.hep import speedups
from collector.hep.errors import RejectReason
from collector.ingest import Ingest, ListenerStats
from collector.listeners.framing import FramingError, StreamFramer
from collector.listeners.stream import StreamListener
from collector.listeners.udp import UdpListener
from collector.publisher import Publisher
from collector.spool import Spool

needs_c = pytest.mark.skipif(
    not speedups.HAVE_SPEEDUPS, reason="collector.hep._speedups was not built"
)
SOME = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))

Record = tuple[bytes | None, bytes, int, list[tuple[str, bytes]]]
AUTH = AuthPolicy({"2001": "k3y", "*": "any"})


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Every C path off: the scan in Ingest.accept and both batch functions."""
    saved = ingest_mod._scan_v3, speedups.recv_batch, speedups.frame_batch
    ingest_mod._scan_v3 = speedups.recv_batch = speedups.frame_batch = None
    try:
        yield
    finally:
        ingest_mod._scan_v3, speedups.recv_batch, speedups.frame_batch = saved


def _ingest(out: list[Record], auth: AuthPolicy | None = None, max_size: int = 65535) -> Ingest:
    return Ingest(
        lambda *rec: out.append(rec), node_name="node-b", auth=auth, max_packet_bytes=max_size
    )


def _stats() -> ListenerStats:
    return ListenerStats("udp", "test", max_senders=2)


# --- datagrams ---------------------------------------------------------------------------------

datagram = st.one_of(
    plain_packets().map(lambda c: c[0]),
    plain_packets().map(lambda c: c[0]),
    mutated_plain().map(lambda c: c[0]),
    wire_packets.map(lambda w: w.data),
    mangled_bytes(),
    st.builds(
        lambda cid: hep3(sip_message(cid)), st.from_regex(r"[a-z0-9@.]{0,12}", fullmatch=True)
    ),
    st.builds(
        lambda k: hep3(sip_message("keyed@h"), auth_key=k), st.sampled_from([b"k3y", b"any", b"no"])
    ),
    st.builds(lambda v: hep12(v, sip_message("old@h")), st.sampled_from([1, 2])),
    st.builds(
        lambda c: hep3(b"{}", proto_type=5, correlation_id=c), st.sampled_from([None, b"", b"c1"])
    ),
    st.builds(lambda: hep3(sip_message("zero@h"), ts=(0, 0))),
    st.builds(lambda: hep3(b"not sip")),
    st.just(b""),
)


def _udp_pair(family: int = socket.AF_INET) -> tuple[socket.socket, list[socket.socket]]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    rx = socket.socket(family, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind((host, 0))
    senders = []
    for _ in range(3):
        tx = socket.socket(family, socket.SOCK_DGRAM)
        tx.bind((host, 0))
        senders.append(tx)
    return rx, senders


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _receive_all(
    rx: socket.socket, count: int, slots: int, max_size: int, fast: bool
) -> list[speedups.RecvResult]:
    assert speedups.recv_batch is not None
    arena = bytearray(slots * 65535)
    batches = []
    got = 0
    while got < count:
        batch = speedups.recv_batch(rx, arena, slots, max_size, fast)
        assert 1 <= len(batch[1]) <= slots
        batches.append(batch)
        got += len(batch[1])
    assert got == count
    return batches


def _check_recv(
    packets: list[tuple[bytes, int]],
    slots: int,
    auth: AuthPolicy | None,
    max_size: int,
    family: int = socket.AF_INET,
) -> None:
    rx, senders = _udp_pair(family)
    try:
        for data, who in packets:
            senders[who].sendto(data, rx.getsockname())
        addresses = [s.getsockname()[:2] for s in senders]
        fast_out: list[Record] = []
        fast_ingest = _ingest(fast_out, auth, max_size)
        fast_stats = _stats()
        batches = _receive_all(rx, len(packets), slots, max_size, fast_ingest.batch_fast_path)
        for batch in batches:
            fast_ingest.accept_batch(*batch, fast_stats)
    finally:
        rx.close()
        for s in senders:
            s.close()

    # The reference: one Ingest.accept per datagram, pure Python, same receive times.
    ref_out: list[Record] = []
    ref_stats = _stats()
    with pure_python():
        ref_ingest = _ingest(ref_out, auth, max_size)
        i = 0
        for received_us, records, sources, n_slow, _bytes, _trailing in batches:
            fast = 0
            for value, key, ts_ms, src in records:
                data, who = packets[i]
                i += 1
                host, port, _ = sources[src]
                assert (host, port) == addresses[who]
                if ts_ms < 0:
                    assert value == data and key is None
                else:
                    fast += 1
                ref_ingest.accept(data, host, port, received_us, ref_stats)
            assert fast == sum(n for _h, _p, n in sources) == len(records) - n_slow
    assert fast_out == ref_out
    assert fast_stats == ref_stats


@needs_c
@SOME
@given(
    packets=st.lists(st.tuples(datagram, st.integers(0, 2)), min_size=1, max_size=24),
    slots=st.sampled_from([1, 2, 5, 64]),
    auth=st.sampled_from([None, None, AUTH]),
    max_size=st.sampled_from([65535, 65535, 300]),
)
def test_recv_batch_publishes_what_accept_publishes(
    packets: list[tuple[bytes, int]], slots: int, auth: AuthPolicy | None, max_size: int
) -> None:
    _check_recv(packets, slots, auth, max_size)


@needs_c
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_recv_batch_ipv6_senders() -> None:
    packets = [(hep3(sip_message(f"v6-{i}@h")), i % 3) for i in range(10)] + [(b"junk", 1)]
    _check_recv(packets, 4, None, 65535, socket.AF_INET6)


@needs_c
def test_recv_batch_sources_and_counts() -> None:
    rx, senders = _udp_pair()
    a, b, c = (s.getsockname() for s in senders)
    try:
        good = hep3(sip_message("a@h")) + b"xy"  # two trailing bytes
        for tx, data in zip(senders, [good, b"bad", good], strict=True):
            tx.sendto(data, rx.getsockname())
        senders[0].sendto(good, rx.getsockname())
        received_us, records, sources, n_slow, fast_bytes, trailing = _receive_all(
            rx, 4, 8, 65535, True
        )[0]
    finally:
        rx.close()
        for s in senders:
            s.close()
    assert abs(received_us - time.time_ns() // 1000) < 10_000_000
    assert sources == [(a[0], a[1], 2), (b[0], b[1], 0), (c[0], c[1], 1)]
    assert [r[3] for r in records] == [0, 1, 2, 0]
    assert records[1] == (b"bad", None, -1, 1)
    assert records[0] == (good[:-2], b"a@h", 1700000000250, 0)
    assert (n_slow, fast_bytes, trailing) == (1, 3 * len(good), 3)


@needs_c
def test_recv_batch_arguments_and_errors() -> None:
    assert speedups.recv_batch is not None
    rx, senders = _udp_pair()
    try:
        with pytest.raises(ValueError):
            speedups.recv_batch(rx, bytearray(100), 0, 65535, True)
        with pytest.raises(ValueError):
            speedups.recv_batch(rx, bytearray(100), 1025, 65535, True)
        with pytest.raises(ValueError):
            speedups.recv_batch(rx, bytearray(3), 4, 65535, True)
        with pytest.raises(BufferError):
            speedups.recv_batch(rx, b"read-only" * 100, 1, 65535, True)
        with pytest.raises(TypeError):
            speedups.recv_batch(rx, bytearray(100), 1, 65535)
        with pytest.raises(TypeError):
            speedups.recv_batch("not a socket", bytearray(100), 1, 65535, True)
        # A datagram longer than a slot is cut to the slot (slots hold 65535 in the listener).
        senders[0].sendto(hep3(sip_message("long@h")), rx.getsockname())
        _, records, _, n_slow, _, _ = speedups.recv_batch(rx, bytearray(100), 1, 65535, True)
        assert len(records[0][0]) == 100 and n_slow == 1
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            speedups.recv_batch(rx, bytearray(100), 1, 65535, True)
    finally:
        rx.close()
        for s in senders:
            s.close()
    with pytest.raises((OSError, ValueError)):
        speedups.recv_batch(rx, bytearray(100), 1, 65535, True)


@needs_c
def test_recv_batch_waits_without_the_gil() -> None:
    """A blocked recv_batch lets other threads run; a datagram wakes it."""
    rx, senders = _udp_pair()
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.append(speedups.recv_batch(rx, bytearray(65535 * 4), 4, 65535, True))
    )
    try:
        t.start()
        spins = 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            spins += 1
        assert spins > 1000 and not result
        senders[0].sendto(hep3(sip_message("wake@h")), rx.getsockname())
        t.join(5)
        assert result and result[0][1][0][1] == b"wake@h"
    finally:
        rx.close()
        for s in senders:
            s.close()


# --- streams -----------------------------------------------------------------------------------

stream_piece = st.one_of(
    plain_packets().map(lambda c: c[0][: int.from_bytes(c[0][4:6], "big")]),  # no trailing bytes
    st.builds(
        lambda cid: hep3(sip_message(cid)), st.from_regex(r"[a-z0-9@.]{1,12}", fullmatch=True)
    ),
    st.builds(lambda k: hep3(sip_message("keyed@h"), auth_key=k), st.sampled_from([b"k3y", b"no"])),
    st.builds(lambda: hep3(b"not sip")),
    st.builds(lambda: hep3(b"{}", proto_type=100, correlation_id=b"cid")),
    st.builds(lambda: frame(chunk(0x0F, b"x"), total=6)),  # declared length 6: an empty packet
    mutated_plain().map(lambda c: c[0]),
    st.binary(max_size=12),
)


def _frame_reference(data: bytes, limit: int) -> tuple[list[bytes], int, RejectReason | None]:
    """StreamFramer fed byte by byte: the packets before a framing error, and the error."""
    framer = StreamFramer(limit)
    packets: list[bytes] = []
    try:
        for i in range(len(data)):
            packets += framer.feed(data[i : i + 1])
    except FramingError as exc:
        return packets, sum(map(len, packets)), exc.reason
    return packets, sum(map(len, packets)), None


def _check_frames(data: bytes, limit: int, max_size: int, auth: AuthPolicy | None) -> None:
    assert speedups.frame_batch is not None
    received_us = 1_700_000_123_456_789
    out: list[Record] = []
    ing = _ingest(out, auth, max_size)
    records, used, n_slow, fast_bytes, error = speedups.frame_batch(
        data, 0, len(data), limit, max_size, received_us, ing.batch_fast_path
    )
    packets, ref_used, ref_error = _frame_reference(data, limit)
    assert used == ref_used
    assert (speedups.FRAME_ERRORS[error] if error else None) == ref_error
    assert [r[0] if r[2] < 0 else None for r in records] == [
        p if r[2] < 0 else None for p, r in zip(packets, records, strict=True)
    ]
    stats = _stats()
    sources = [("192.0.2.9", 5061, len(records) - n_slow)]
    ing.accept_batch(received_us, records, sources, n_slow, fast_bytes, 0, stats)

    ref_out: list[Record] = []
    ref_stats = _stats()
    with pure_python():
        ref = _ingest(ref_out, auth, max_size)
        for p in packets:
            ref.accept(p, "192.0.2.9", 5061, received_us, ref_stats)
    assert out == ref_out
    assert stats == ref_stats


@needs_c
@MANY
@given(
    pieces=st.lists(stream_piece, max_size=8),
    limit=st.sampled_from([65535, 65535, 400, 6, 5]),
    max_size=st.sampled_from([65535, 65535, 300]),
    auth=st.sampled_from([None, None, AUTH]),
)
@example(pieces=[b"HEP3\x00\x05"], limit=65535, max_size=65535, auth=None)
@example(pieces=[b"HEP3\x01\x00"], limit=200, max_size=65535, auth=None)
@example(pieces=[b"GET / HTTP/1.1\r\n"], limit=65535, max_size=65535, auth=None)
def test_frame_batch_cuts_like_stream_framer(
    pieces: list[bytes], limit: int, max_size: int, auth: AuthPolicy | None
) -> None:
    _check_frames(b"".join(pieces), limit, max_size, auth)


@needs_c
def test_frame_batch_ranges_and_buffers() -> None:
    assert speedups.frame_batch is not None
    one = hep3(sip_message("r@h"))
    data = b"junk" + one + one + one[:10]
    for buf in (data, bytearray(data), memoryview(data)):
        records, used, n_slow, fast_bytes, error = speedups.frame_batch(
            buf, 4, len(data), 65535, 65535, 0, True
        )
        assert [r[0] for r in records] == [one, one] and used == 4 + 2 * len(one)
        assert (n_slow, fast_bytes, error) == (0, 2 * len(one), 0)
    assert speedups.frame_batch(data, 4, 4 + len(one) - 1, 65535, 65535, 0, True)[:2] == ([], 4)
    assert speedups.frame_batch(data, 0, 10, 65535, 65535, 0, True)[1:] == (0, 0, 0, 1)
    for start, end in ((-1, 5), (5, 4), (0, len(data) + 1)):
        with pytest.raises(ValueError):
            speedups.frame_batch(data, start, end, 65535, 65535, 0, True)
    with pytest.raises(TypeError):
        speedups.frame_batch("text", 0, 1, 65535, 65535, 0, True)
    with pytest.raises(TypeError):
        speedups.frame_batch(data, 0, 1, 65535, 65535, 0)
    # A zero capture time falls back to the receive time, floored to milliseconds.
    zero = hep3(sip_message("z@h"), ts=(0, 0))
    assert speedups.frame_batch(zero, 0, len(zero), 65535, 65535, 1_999_999, True)[0][0][2] == 1999


# --- listeners: C and pure Python publish the same ------------------------------------------------


def _normalise(records: list[Record], sender: bytes) -> list[Record]:
    """Receive times and sender ports differ between runs: check them, then blank them."""
    out = []
    for key, value, ts, headers in records:
        h = dict(headers)
        assert abs(int(h["hep.received_us"]) - time.time_ns() // 1000) < 60_000_000
        assert h["hep.sender"] == sender
        h["hep.received_us"] = h["hep.sender"] = b""
        if abs(ts - time.time_ns() // 1_000_000) < 60_000:
            ts = 0  # no capture time: the receive time stands in
        out.append((b"<sender>" if key == sender else key, value, ts, sorted(h.items())))
    return out


def _mixed_packets() -> list[bytes]:
    rnd = random.Random(7)
    packets = []
    for i in range(300):
        kind = rnd.randrange(8)
        if kind == 0:
            packets.append(hep12(rnd.choice([1, 2]), sip_message(f"old-{i}@h")))
        elif kind == 1:
            packets.append(hep3(b"not sip"))
        elif kind == 2:
            packets.append(hep3(b"{}", proto_type=5, correlation_id=b"c%d" % i) + b"tail")
        elif kind == 3:
            packets.append(hep3(sip_message(f"z-{i}@h"), ts=(0, 0)))
        else:
            packets.append(hep3(sip_message(f"call-{i}@h", cseq=i)))
    return packets


def _udp_listener_records(packets: list[bytes]) -> tuple[list[Record], ListenerStats]:
    out: list[Record] = []
    listener = UdpListener("127.0.0.1", 0, _ingest(out), receive_buffer=4 << 20)
    listener.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.0.1", 0))
            for p in packets:
                tx.sendto(p, listener.address)
            host, port = tx.getsockname()
            sender = f"{host}:{port}"
            deadline = time.monotonic() + 10
            while listener.stats.received < len(packets) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        listener.stop()
    return _normalise(out, sender.encode()), listener.stats


def test_udp_listener_c_and_python_publish_the_same() -> None:
    packets = _mixed_packets()
    with pure_python():
        slow = _udp_listener_records(packets)
    fast = _udp_listener_records(packets)
    assert fast[0] == slow[0] and len(fast[0]) == fast[1].accepted
    assert fast[1].received == len(packets)
    fast[1].name = slow[1].name = "udp"
    assert fast[1] == slow[1]
    assert fast[1].trailing_bytes_packets == slow[1].trailing_bytes_packets > 0


async def _stream_records(
    chunks: list[bytes], tail: bytes = b""
) -> tuple[list[Record], ListenerStats]:
    out: list[Record] = []
    listener = StreamListener("tcp", "127.0.0.1", 0, _ingest(out), max_packet_bytes=65535)
    await listener.start()
    expected = sum(1 for _ in StreamFramer().feed(b"".join(chunks)))
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        host, port = writer.get_extra_info("sockname")[:2]
        sender = f"{host}:{port}"
        for c in chunks:
            writer.write(c)
            await writer.drain()
        deadline = time.monotonic() + 10
        while listener.stats.received < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if tail:
            writer.write(tail)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        deadline = time.monotonic() + 5
        while listener.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await listener.stop()
    listener.stats.name = "tcp"
    return _normalise(out, sender.encode()), listener.stats


@pytest.mark.parametrize("tail", [b"", b"GARBAGE-NOT-HEP", b"HEP3\x00\x05", b"HEP3\x00\x40partial"])
def test_stream_listener_c_and_python_publish_the_same(tail: bytes) -> None:
    packets = [p[: int.from_bytes(p[4:6], "big")] for p in _mixed_packets() if p[:4] == b"HEP3"]
    stream = b"".join(packets)
    rnd = random.Random(11)
    chunks = []
    i = 0
    while i < len(stream):
        n = rnd.choice([1, 5, 7, 100, 700, 5000, 70000])
        chunks.append(stream[i : i + n])
        i += n
    with pure_python():
        slow = asyncio.run(_stream_records(chunks, tail))
    fast = asyncio.run(_stream_records(chunks, tail))
    assert fast[0] == slow[0] and len(fast[0]) == fast[1].accepted
    assert fast[1] == slow[1]
    assert fast[1].received == len(packets)
    if tail.startswith(b"HEP3\x00\x40"):
        assert fast[1].rejected[RejectReason.TRUNCATED] == 1
    elif tail:
        assert fast[1].framing_errors == 1
        assert fast[1].rejected[RejectReason.TRUNCATED] == 0


# --- Publisher.publish_many --------------------------------------------------------------------


class _FakeProducer:
    """Takes `room` records, then raises BufferError like a full librdkafka queue."""

    room = 3

    def __init__(self, _config: dict[str, Any]) -> None:
        self.records: list[tuple[Any, ...]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        if len(self.records) >= self.room:
            raise BufferError("full")
        self.records.append((topic, key, value, kw["timestamp"], kw["headers"]))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.records)


def _publisher(tmp_path: Path) -> Publisher:
    pub = Publisher(
        {}, "t", Spool(tmp_path / "spool", max_bytes=1 << 20), producer_factory=_FakeProducer
    )
    pub._stop.set()  # no publisher thread: nothing drains the spool behind the test's back
    pub._thread.join()
    return pub


def test_publish_many_spools_what_the_queue_refuses(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    h0, h1 = [("hep.node", b"a")], [("hep.node", b"b")]
    records = [(b"v%d" % i, b"k%d" % i if i % 2 else None, 1000 + i, i % 2) for i in range(6)]
    pub.publish_many(records, [b"s0", b"s1"], [h0, h1])
    producer = pub._producer
    assert isinstance(producer, _FakeProducer)
    assert producer.records == [
        ("t", b"s0", b"v0", 1000, h0),
        ("t", b"k1", b"v1", 1001, h1),
        ("t", b"s0", b"v2", 1002, h0),
    ]
    assert pub.stats.produced == 3 and pub.spooling
    spooled = [r for _pos, r in pub.spool.read_batch(10)]
    assert [(r.key, r.value, r.timestamp_ms, r.headers) for r in spooled] == [
        (b"k3", b"v3", 1003, h1),
        (b"s0", b"v4", 1004, h0),
        (b"k5", b"v5", 1005, h1),
    ]
    # While spooling, everything goes to the spool, behind what is there.
    pub.publish_many([(b"v6", None, 1006, 0)], [b"s0"], [h0])
    assert len(producer.records) == 3 and len(pub.spool) == 4
    pub.spool.close()


def test_publish_many_samples_latency_once_per_256(tmp_path: Path) -> None:
    _FakeProducer.room = 10_000
    try:
        pub = _publisher(tmp_path)
        pub.publish_many([(b"v", b"k", 1, 0)] * 255, [b"s"], [[]])
        assert not pub._latency_marks
        pub.publish_many([(b"v", b"k", 1, 0)] * 300, [b"s"], [[]])
        assert [m[0] for m in pub._latency_marks] == [555]
        assert pub.stats.produced == 555
        pub.spool.close()
    finally:
        _FakeProducer.room = 3


def test_publish_many_serves_delivery_reports_and_survives_a_failing_poll(
    tmp_path: Path,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    pub = _publisher(tmp_path)
    polls: list[float] = []

    def failing_poll(timeout: float = 0) -> int:
        polls.append(timeout)
        raise KafkaException(KafkaError(KafkaError._FATAL, "gone"))

    pub._producer.poll = failing_poll  # type: ignore[method-assign]
    pub.publish_many([(b"v", b"k", 1, 0)], [b"s"], [[]])
    assert polls == [0] and pub._fatal and pub.stats.produced == 1
    pub.spool.close()
