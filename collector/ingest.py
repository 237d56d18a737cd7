"""The accept path shared by every listener: check, authenticate, normalise, key, publish.

`Ingest.accept` takes one HEP packet as bytes with its sender and arrival time and either
hands one Kafka record to the publisher or counts a rejection by reason (DESIGN "HEP in"
and "Kafka record"). It does no I/O of its own, so listeners on threads and on the event
loop share one instance; each listener keeps its own `ListenerStats` so the hot path
never takes a lock (the metrics endpoint sums them).

Kafka record contract: value = the packet as HEPv3 (v1/v2 converted, the auth key chunk
removed, trailing bytes dropped); key = the SIP Call-ID, else the correlation id chunk,
else the sender address; timestamp = the HEP capture time (arrival time when the agent
sent 0/0); headers = collector node, receive time, HEP sender address, original version.

`Ingest.accept_batch` takes the records the C batch functions (`collector.hep.speedups`)
made of many packets at once: the fast ones are published with one headers list per sender
and counted per batch, the slow ones go through `accept`. Both paths publish the same
records and count the same (tests/test_collector_batch.py compares them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from collector.auth import AuthPolicy
from collector.hep.errors import HepError, RejectReason
from collector.hep.fast import decode, encode_v3, strip_auth_key
from collector.hep.model import PROTO_SIP
from collector.hep.sipscan import find_call_id, looks_like_sip
from collector.hep.speedups import BatchRecord, Source
from collector.hep.speedups import scan_v3 as _scan_v3

log = logging.getLogger("hepwatch.ingest")

# Kafka header names (the record contract; consumers read these).
H_NODE = "hep.node"
H_RECEIVED_US = "hep.received_us"
H_SENDER = "hep.sender"
H_VERSION = "hep.version"

Headers = list[tuple[str, bytes]]
PublishFn = Callable[[bytes | None, bytes, int, Headers], None]
# publish_many(records, keys, headers): each fast record (value, key, timestamp_ms, source)
# with `key or keys[source]` and `headers[source]`, in order.
PublishManyFn = Callable[[Sequence[BatchRecord], Sequence[bytes], Sequence[Headers]], None]

_VERSION_BYTES = {1: b"1", 2: b"2", 3: b"3"}
V3 = _VERSION_BYTES[3]


@dataclass
class ListenerStats:
    """Counters of one listener; plain ints, summed by the metrics collector at scrape time."""

    transport: str
    name: str
    max_senders: int = 1000
    received: int = 0
    bytes_received: int = 0
    accepted: int = 0
    decoded_by_version: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})
    rejected: dict[RejectReason, int] = field(
        default_factory=lambda: dict.fromkeys(RejectReason, 0)
    )
    trailing_bytes_packets: int = 0
    per_sender: dict[str, list[int]] = field(default_factory=dict)  # host -> [accepted, rejected]
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    framing_errors: int = 0

    def sender(self, host: str) -> list[int]:
        entry = self.per_sender.get(host)
        if entry is None:
            if len(self.per_sender) >= self.max_senders:
                host = "other"
                entry = self.per_sender.get(host)
            if entry is None:
                entry = self.per_sender[host] = [0, 0]
        return entry


class RejectLog:
    """Logs a sample of rejected packets at a bounded rate (per minute, across reasons)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = 0.0
        self._count = 0
        self.suppressed = 0

    def __call__(self, reason: RejectReason, detail: str, sender: str, data: bytes) -> None:
        now = time.monotonic()
        if now - self._window >= 60:
            if self.suppressed:
                log.warning(
                    "%d more rejected packets not logged in the last minute", self.suppressed
                )
            self._window, self._count, self.suppressed = now, 0, 0
        if self._count >= self.per_minute:
            self.suppressed += 1
            return
        self._count += 1
        log.warning(
            "rejected packet from %s: %s%s (%d bytes, starts %s)",
            sender,
            reason.value,
            f" ({detail})" if detail else "",
            len(data),
            data[:16].hex(),
        )


class Ingest:
    def __init__(
        self,
        publish: PublishFn,
        *,
        node_name: str,
        auth: AuthPolicy | None = None,
        max_packet_bytes: int = 65535,
        reject_log_per_minute: int = 20,
        publish_many: PublishManyFn | None = None,
    ) -> None:
        self._publish = publish
        self._publish_many = publish_many or self._publish_each
        self._senders: dict[tuple[str, int], bytes] = {}
        self._node = node_name.encode()
        self._auth = (
            auth if auth is not None and (auth.requires_key or auth.restricts_sources) else None
        )
        self._max = max_packet_bytes
        self._reject_log = RejectLog(reject_log_per_minute)

    @property
    def batch_fast_path(self) -> bool:
        """Whether the C batch functions may publish plain packets themselves (`fast`).

        Not with an auth policy: its checks are per packet, in `accept`.
        """
        return self._auth is None

    @property
    def max_packet_bytes(self) -> int:
        return self._max

    def source_allowed(self, host: str) -> bool:
        return self._auth is None or self._auth.source_allowed(host)

    def accept(
        self, data: bytes, host: str, port: int, received_us: int, stats: ListenerStats
    ) -> bool:
        """Publish one packet or count its rejection; True when it was accepted."""
        stats.received += 1
        stats.bytes_received += len(data)
        scanned = _scan_v3(data, self._max) if _scan_v3 is not None else None
        try:
            if scanned is not None:
                # C fast path: a plain, valid HEPv3 packet (see collector.hep.speedups).
                (ts_sec, ts_usec, proto_type, capture_id, _ps, _pe, a0, a1, c0, c1,
                 total, call_id, is_sip) = scanned  # fmt: skip
                version = 3
                auth_key = data[a0:a1] if a0 >= 0 else None
                correlation_id = data[c0:c1] if c0 >= 0 else None
                trailing = len(data) - total
                value = data if not trailing else data[:total]
                if auth_key is not None:
                    value = strip_auth_key(value)
            else:
                pkt = decode(data, self._max)
                version = pkt.version
                ts_sec, ts_usec = pkt.ts_sec, pkt.ts_usec
                proto_type, capture_id = pkt.proto_type, pkt.capture_id
                auth_key, correlation_id = pkt.auth_key, pkt.correlation_id
                trailing = pkt.trailing_bytes
                if proto_type == PROTO_SIP:
                    is_sip = looks_like_sip(pkt.payload)
                    call_id = find_call_id(pkt.payload) if is_sip else None
                if version == 3 and not pkt.compressed:
                    value = data if not trailing else data[: len(data) - trailing]
                    if auth_key is not None:
                        value = strip_auth_key(value)
                else:
                    # v1/v2 are converted; compressed v3 is stored inflated.
                    value = encode_v3(pkt)
            auth = self._auth
            if auth is not None:
                if not auth.source_allowed(host):
                    raise HepError(RejectReason.AUTH, "source address not in the allowlist")
                if not auth.key_valid(capture_id, auth_key):
                    raise HepError(
                        RejectReason.AUTH,
                        "missing auth key" if auth_key is None else "wrong auth key",
                    )
            key: bytes | None
            if proto_type == PROTO_SIP:
                if not is_sip:
                    raise HepError(RejectReason.NOT_SIP, "payload is not a SIP message")
                key = call_id or correlation_id
            else:
                key = correlation_id
        except HepError as exc:
            stats.rejected[exc.reason] += 1
            stats.sender(host)[1] += 1
            self._reject_log(exc.reason, exc.detail, f"{host}:{port}", data)
            return False

        sender = f"{host}:{port}".encode()
        if trailing:
            stats.trailing_bytes_packets += 1
        ts_ms = ts_sec * 1000 + ts_usec // 1000
        if ts_ms == 0:
            ts_ms = received_us // 1000
        self._publish(
            key or sender,
            value,
            ts_ms,
            [
                (H_NODE, self._node),
                (H_RECEIVED_US, b"%d" % received_us),
                (H_SENDER, sender),
                (H_VERSION, _VERSION_BYTES[version]),
            ],
        )
        stats.accepted += 1
        stats.decoded_by_version[version] += 1
        entry = stats.per_sender.get(host)
        if entry is None:
            entry = stats.sender(host)
        entry[0] += 1
        return True

    def _sender_bytes(self, host: str, port: int) -> bytes:
        sender = self._senders.get((host, port))
        if sender is None:
            if len(self._senders) >= 4096:
                self._senders.clear()
            sender = self._senders[(host, port)] = f"{host}:{port}".encode()
        return sender

    def _publish_each(
        self, records: Sequence[BatchRecord], keys: Sequence[bytes], headers: Sequence[Headers]
    ) -> None:
        publish = self._publish
        for value, key, ts_ms, src in records:
            publish(key or keys[src], value, ts_ms, headers[src])

    def accept_batch(
        self,
        received_us: int,
        records: list[BatchRecord],
        sources: Sequence[Source],
        n_slow: int,
        fast_bytes: int,
        fast_trailing: int,
        stats: ListenerStats,
    ) -> None:
        """Publish a batch made by `speedups.recv_batch` / `frame_batch`; count it like `accept`.

        `sources[source]` is (host, port, fast records from it). Fast records are published in
        order with the records `accept` would make of them; slow ones go through `accept`.
        """
        n_fast = len(records) - n_slow
        if n_fast:
            received = b"%d" % received_us
            node = self._node
            keys = []
            headers = []
            for host, port, _count in sources:
                sender = self._sender_bytes(host, port)
                keys.append(sender)
                headers.append(
                    [(H_NODE, node), (H_RECEIVED_US, received), (H_SENDER, sender), (H_VERSION, V3)]
                )
            if n_slow:
                publish = self._publish
                for value, key, ts_ms, src in records:
                    if ts_ms >= 0:
                        publish(key or keys[src], value, ts_ms, headers[src])
                    else:
                        host, port, _ = sources[src]
                        self.accept(value, host, port, received_us, stats)
            else:
                self._publish_many(records, keys, headers)
            stats.received += n_fast
            stats.bytes_received += fast_bytes
            stats.accepted += n_fast
            stats.decoded_by_version[3] += n_fast
            stats.trailing_bytes_packets += fast_trailing
            for host, _port, count in sources:
                if count:
                    stats.sender(host)[0] += count
        elif n_slow:
            accept = self.accept
            for value, _key, _ts, src in records:
                host, port, _ = sources[src]
                accept(value, host, port, received_us, stats)
