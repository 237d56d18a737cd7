"""Replay a pcap/pcapng capture to a collector as HEP.

This module owns turning captured frames into HEP packets and sending them. The core is
sans-I/O: `CaptureScanner.feed(ts, linktype, frame)` returns the HEP packets a frame yields.
HEP found in UDP/TCP payloads (HEP3/EEP3, or a HEPv1/v2 datagram that decodes) is passed on
as it is; a plain SIP message is wrapped as HEPv3 with its addresses, ports, transport and
capture time. IPv4/IPv6 fragments are reassembled; TCP payloads are put back in sequence per
flow and cut by HEPv3 framing (or SIP Content-Length framing), so one segment may give
several packets and one packet may span segments.

Link layers (Ethernet with VLAN tags, Linux cooked SLL/SLL2, raw IP, BSD loopback) are
peeled by offset so the IP bytes stay raw for reassembly; files are read by `collector.capfile`
(pcap and pcapng), IP/UDP/TCP headers are parsed with dpkt. `iter_hep_packets` reads a file;
`Replayer`/`replay` send to udp://HOST:PORT (one datagram each) or tcp://HOST:PORT.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import dpkt

from collector.capfile import (  # the file reader; these names stay importable from here
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    iter_frames,
)
from collector.hep.errors import HepError
from collector.hep.fast import decode, encode_v3, looks_like_sip
from collector.hep.model import AF_INET, AF_INET6, PROTO_SIP, HepPacket

log = logging.getLogger("hepwatch.replay")

_RAW_LINKTYPES = {LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6}  # 12/14: DLT_RAW on BSDs

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = {0x8100, 0x88A8, 0x9100}
_BSD_AF_INET6 = {24, 28, 30}  # NetBSD/OpenBSD, FreeBSD, macOS

MAX_UDP_PAYLOAD = 65507
_MAX_PENDING_FRAGMENTS = 256
_MAX_TCP_BUFFER = 1 << 20  # a stream that frames nothing in 1 MiB is not HEP or SIP
_HEP_MAGICS = (b"HEP3", b"EEP3")
_SIP_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([0-9]+)", re.IGNORECASE)


@dataclass
class ScanStats:
    """What the scanner did with the frames it was fed."""

    frames: int = 0
    hep: int = 0  # HEP packets passed on as they were captured
    sip_wrapped: int = 0  # plain SIP messages wrapped as HEPv3
    not_ip: int = 0  # link type or ethertype without IPv4/IPv6
    not_udp_tcp: int = 0
    malformed: int = 0  # frames dpkt could not parse
    fragments: int = 0  # IP fragments seen (reassembled datagrams are counted once more)
    ignored_payloads: int = 0  # UDP datagrams / TCP data that is neither HEP nor SIP
    tcp_resyncs: int = 0  # TCP data dropped for a gap or lost framing
    too_large: int = 0  # SIP messages too big for a HEPv3 packet


# --- link and network layers ---------------------------------------------------------------------


def network_layer(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4/IPv6 packet inside a frame, or None for anything else."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        off, ethertype = 14, frame[12] << 8 | frame[13]
        while ethertype in _ETH_VLAN and len(frame) >= off + 4:
            ethertype = frame[off + 2] << 8 | frame[off + 3]
            off += 4
        return frame[off:] if ethertype in (_ETH_IPV4, _ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL:
        ok = len(frame) >= 16 and (frame[14] << 8 | frame[15]) in (_ETH_IPV4, _ETH_IPV6)
        return frame[16:] if ok else None
    if linktype == LINKTYPE_LINUX_SLL2:
        ok = len(frame) >= 20 and (frame[0] << 8 | frame[1]) in (_ETH_IPV4, _ETH_IPV6)
        return frame[20:] if ok else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        # NULL stores the family in the capturing host's byte order; LOOP in network order.
        families = {struct.unpack("<I", frame[:4])[0], struct.unpack(">I", frame[:4])[0]}
        ok = AF_INET in families or bool(families & _BSD_AF_INET6)
        return frame[4:] if ok else None
    if linktype in _RAW_LINKTYPES:
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    return None


@dataclass
class _Datagram:
    """A reassembled IP payload with what the transport layer needs to know."""

    family: int
    src: bytes
    dst: bytes
    proto: int
    payload: bytes


class _Fragments:
    """IPv4/IPv6 fragment reassembly, bounded: the oldest incomplete datagram is dropped."""

    def __init__(self) -> None:
        self._pending: OrderedDict[tuple[object, ...], dict[int, bytes]] = OrderedDict()
        self._ends: dict[tuple[object, ...], int] = {}

    def add(self, key: tuple[object, ...], offset: int, more: bool, data: bytes) -> bytes | None:
        parts = self._pending.setdefault(key, {})
        parts[offset] = data
        if not more:
            self._ends[key] = offset + len(data)
        if len(self._pending) > _MAX_PENDING_FRAGMENTS:
            old, _ = self._pending.popitem(last=False)
            self._ends.pop(old, None)
        end = self._ends.get(key)
        if end is None:
            return None
        joined = bytearray()
        for off in sorted(parts):
            if off > len(joined):
                return None  # a hole: wait for the missing fragment
            joined[off : off + len(parts[off])] = parts[off]
        if len(joined) < end:
            return None
        del self._pending[key]
        del self._ends[key]
        return bytes(joined[:end])


def _ip_datagram(raw: bytes, fragments: _Fragments, stats: ScanStats) -> _Datagram | None:
    if raw[0] >> 4 == 4:
        ip4 = dpkt.ip.IP(raw)
        start = ip4.hl * 4
        end = ip4.len if ip4.len else len(raw)  # 0 with TCP segmentation offload
        payload = raw[start:end]
        if ip4.mf or ip4.offset:
            stats.fragments += 1
            key = (4, ip4.src, ip4.dst, ip4.id, ip4.p)
            whole = fragments.add(key, ip4.offset * 8, bool(ip4.mf), payload)  # 8-byte units
            if whole is None:
                return None
            payload = whole
        return _Datagram(AF_INET, ip4.src, ip4.dst, ip4.p, payload)
    ip6 = dpkt.ip6.IP6(raw)
    ext_len = sum(ext.length for ext in ip6.all_extension_headers)
    end = 40 + ip6.plen if ip6.plen else len(raw)
    payload = raw[40 + ext_len : end]
    frag = ip6.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT)
    if frag is not None:
        stats.fragments += 1
        key = (6, ip6.src, ip6.dst, frag.id, ip6.p)
        whole = fragments.add(key, frag.frag_off * 8, bool(frag.m_flag), payload)
        if whole is None:
            return None
        payload = whole
    return _Datagram(AF_INET6, ip6.src, ip6.dst, ip6.p, payload)


# --- TCP streams ---------------------------------------------------------------------------------


@dataclass
class _Stream:
    next_seq: int | None = None
    buf: bytearray = field(default_factory=bytearray)


def _frame_one(buf: bytearray) -> tuple[str, int] | None:
    """How the stream buffer starts: ("hep"|"sip", length) when a whole message is there,
    ("junk", n) when framing is lost, None when more bytes are needed."""
    head = bytes(buf[:4])
    if head in _HEP_MAGICS:
        if len(buf) < 6:
            return None
        length = buf[4] << 8 | buf[5]
        if length < 6:
            return ("junk", len(buf))
        return ("hep", length) if len(buf) >= length else None
    if len(buf) < 4 and any(m.startswith(head) for m in _HEP_MAGICS):
        return None
    eol = buf.find(b"\n")
    if eol == -1:
        return None if len(buf) < 8192 else ("junk", len(buf))
    if not looks_like_sip(bytes(buf[: eol + 1])):
        return ("junk", len(buf))
    m = _SIP_HEADER_END.search(buf)
    if m is None:
        return None
    cl = _CONTENT_LENGTH.search(buf, 0, m.end())
    total = m.end() + (int(cl.group(1)) if cl else 0)  # RFC 3261 §18.3: 0 when absent
    return ("sip", total) if len(buf) >= total else None


class _TcpStreams:
    """Puts TCP payloads back in sequence per flow and cuts HEP/SIP messages out of them."""

    def __init__(self, stats: ScanStats) -> None:
        self._streams: dict[tuple[bytes, int, bytes, int], _Stream] = {}
        self._stats = stats

    def feed(
        self, flow: tuple[bytes, int, bytes, int], tcp: dpkt.tcp.TCP
    ) -> list[tuple[str, bytes]]:
        stream = self._streams.setdefault(flow, _Stream())
        data = bytes(tcp.data)
        seq = tcp.seq
        if tcp.flags & dpkt.tcp.TH_SYN:
            seq = (seq + 1) & 0xFFFFFFFF  # the SYN takes one sequence number
            stream.next_seq = seq
            stream.buf.clear()
        out: list[tuple[str, bytes]] = []
        if data:
            if stream.next_seq is None:
                stream.next_seq = seq  # the capture started mid-stream
            ahead = (seq - stream.next_seq) & 0xFFFFFFFF
            if ahead >= 1 << 31:  # starts before next_seq: a retransmission or an overlap
                data = data[(1 << 32) - ahead :]
                seq = stream.next_seq
            elif ahead:  # a gap: bytes were not captured, so the framing is lost
                self._stats.tcp_resyncs += 1
                stream.buf.clear()
            if data:
                stream.buf += data
                stream.next_seq = (seq + len(data)) & 0xFFFFFFFF
                out = self._cut(stream)
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            del self._streams[flow]
        return out

    def _cut(self, stream: _Stream) -> list[tuple[str, bytes]]:
        out = []
        buf = stream.buf
        while buf:
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # keep-alives between messages
                del buf[: 2 if buf[:1] == b"\r" else 1]
            if not buf:
                break
            framed = _frame_one(buf)
            if framed is None:
                if len(buf) > _MAX_TCP_BUFFER:
                    self._stats.tcp_resyncs += 1
                    buf.clear()
                break
            kind, length = framed
            if kind == "junk":
                self._stats.ignored_payloads += 1
                buf.clear()
                break
            out.append((kind, bytes(buf[:length])))
            del buf[:length]
        return out


# --- the scanner ---------------------------------------------------------------------------------


def _is_hep_datagram(payload: bytes) -> bool:
    if payload[:4] in _HEP_MAGICS:
        return True  # passed on even if malformed: the collector decides what it rejects
    if payload[:1] in (b"\x01", b"\x02"):
        try:
            decode(payload)
        except HepError:
            return False
        return True
    return False


class CaptureScanner:
    """Sans-I/O: frames in, HEP packets out. Keeps fragment and TCP state across frames."""

    def __init__(self, capture_id: int = 0) -> None:
        self.capture_id = capture_id
        self.stats = ScanStats()
        self._fragments = _Fragments()
        self._tcp = _TcpStreams(self.stats)

    def feed(self, ts_us: int, linktype: int, frame: bytes) -> list[bytes]:
        """The HEP packets one captured frame completes; `ts_us` is its capture time in µs."""
        self.stats.frames += 1
        raw = network_layer(linktype, frame)
        if raw is None:
            self.stats.not_ip += 1
            return []
        try:
            dgram = _ip_datagram(raw, self._fragments, self.stats)
            if dgram is None:
                return []
            if dgram.proto == dpkt.ip.IP_PROTO_UDP:
                udp = dpkt.udp.UDP(dgram.payload)
                payload = bytes(udp.data)
                if udp.ulen >= 8:
                    payload = payload[: udp.ulen - 8]
                return self._datagram(ts_us, dgram, udp.sport, udp.dport, payload)
            if dgram.proto == dpkt.ip.IP_PROTO_TCP:
                tcp = dpkt.tcp.TCP(dgram.payload)
                flow = (dgram.src, tcp.sport, dgram.dst, tcp.dport)
                out = []
                for kind, message in self._tcp.feed(flow, tcp):
                    if kind == "hep":
                        self.stats.hep += 1
                        out.append(message)
                    else:
                        out += self._wrap(ts_us, dgram, tcp.sport, tcp.dport, message)
                return out
        except (dpkt.UnpackError, IndexError, struct.error):
            self.stats.malformed += 1
            return []
        self.stats.not_udp_tcp += 1
        return []

    def _datagram(
        self, ts_us: int, dgram: _Datagram, sport: int, dport: int, payload: bytes
    ) -> list[bytes]:
        if _is_hep_datagram(payload):
            self.stats.hep += 1
            return [payload]
        if looks_like_sip(payload):
            return self._wrap(ts_us, dgram, sport, dport, payload)
        self.stats.ignored_payloads += 1
        return []

    def _wrap(
        self, ts_us: int, dgram: _Datagram, sport: int, dport: int, sip: bytes
    ) -> list[bytes]:
        sec, usec = divmod(ts_us, 1_000_000)
        pkt = HepPacket(
            version=3,
            family=dgram.family,
            ip_proto=dgram.proto,
            src_ip=dgram.src,
            dst_ip=dgram.dst,
            src_port=sport,
            dst_port=dport,
            ts_sec=sec,
            ts_usec=usec,
            proto_type=PROTO_SIP,
            capture_id=self.capture_id,
            payload=sip,
        )
        try:
            wire = encode_v3(pkt)
        except ValueError:
            self.stats.too_large += 1
            return []
        self.stats.sip_wrapped += 1
        return [wire]


# --- files ---------------------------------------------------------------------------------------


def scan_capture(path: str | Path, scanner: CaptureScanner) -> Iterator[tuple[float, bytes]]:
    """Feed a capture file through `scanner`; its stats are complete once this is exhausted."""
    for ts_us, linktype, frame in iter_frames(path):
        for hep in scanner.feed(ts_us, linktype, frame):
            yield ts_us / 1_000_000, hep


def iter_hep_packets(path: str | Path, *, capture_id: int = 0) -> Iterator[tuple[float, bytes]]:
    """(capture time, HEP packet bytes) for every HEP packet a capture file yields."""
    return scan_capture(path, CaptureScanner(capture_id))


# --- sending -------------------------------------------------------------------------------------


def parse_target(url: str) -> tuple[str, str, int]:
    """udp://HOST:PORT or tcp://HOST:PORT (IPv6 as [::1]) -> (scheme, host, port)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or port is None:
        raise ValueError(f"expected udp://HOST:PORT or tcp://HOST:PORT, got {url!r}")
    return parts.scheme, parts.hostname, port


class Pacer:
    """How long to wait before the next packet to keep `rate` packets/s (None: no waiting)."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._start: float | None = None
        self._count = 0

    def delay(self, now: float) -> float:
        if self.rate is None:
            return 0.0
        if self._start is None:
            self._start = now
        due = self._start + self._count / self.rate
        self._count += 1
        return max(0.0, due - now)


@dataclass
class ReplayResult:
    packets: int = 0  # HEP packets taken from the capture (all loops)
    sent: int = 0
    skipped: int = 0  # cannot travel on this transport (v1/v2 on TCP, > 65507 bytes on UDP)
    errors: int = 0  # UDP sends refused by the peer (ICMP port unreachable)
    bytes_sent: int = 0
    seconds: float = 0.0
    scan: ScanStats = field(default_factory=ScanStats)

    def __str__(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"sent {self.sent} of {self.packets} HEP packets ({self.bytes_sent} bytes) in "
            f"{self.seconds:.3f} s ({rate:.0f}/s); skipped {self.skipped}, errors {self.errors}; "
            f"capture: {self.scan.hep} HEP, {self.scan.sip_wrapped} SIP wrapped, "
            f"{self.scan.ignored_payloads} other payloads"
        )


class Replayer:
    """A connected UDP or TCP socket that sends HEP packets; keep it thin."""

    def __init__(self, to_url: str, *, timeout: float = 10.0) -> None:
        self.scheme, host, port = parse_target(to_url)
        if self.scheme == "tcp":
            self._sock = socket.create_connection((host, port), timeout=timeout)
        else:
            family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.settimeout(timeout)
            self._sock.connect(addr)

    def can_send(self, hep: bytes) -> bool:
        if self.scheme == "tcp":
            return hep[:4] in _HEP_MAGICS  # v1/v2 have no length field, so no stream framing
        return len(hep) <= MAX_UDP_PAYLOAD

    def send(self, hep: bytes) -> None:
        if self.scheme == "tcp":
            self._sock.sendall(hep)
        else:
            self._sock.send(hep)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay(
    path: str | Path,
    to_url: str,
    rate: float | None = None,
    loop: int = 1,
    *,
    capture_id: int = 0,
) -> ReplayResult:
    """Send every HEP packet of a capture `loop` times, at `rate` packets/s if given."""
    if loop < 1:
        raise ValueError("loop must be at least 1")
    pacer = Pacer(rate)
    result = ReplayResult()
    start = time.monotonic()
    with Replayer(to_url) as out:
        for _ in range(loop):
            scanner = CaptureScanner(capture_id)
            for _ts, hep in scan_capture(path, scanner):
                result.packets += 1
                if not out.can_send(hep):
                    result.skipped += 1
                    continue
                wait = pacer.delay(time.monotonic())
                if wait > 0:
                    time.sleep(wait)
                try:
                    out.send(hep)
                except ConnectionRefusedError:
                    result.errors += 1
                    continue
                result.sent += 1
                result.bytes_sent += len(hep)
            result.scan = scanner.stats
    result.seconds = time.monotonic() - start
    log.info("%s", result)
    return result
