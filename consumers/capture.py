"""Offline input: a pcap/pcapng capture read into `Observation`s for the analysis engine.

This module owns turning a capture file into observations, and counting what it could not
use. The capture may hold HEP packets (a tap between Kamailio and its collector: HEPv3, or
HEPv1/v2 over UDP, PROTOCOL.md A.1-A.7), plain SIP (a tap on the proxy's own interfaces), or
both. `collector.capfile` reads the file's frames. `collector.replay.CaptureScanner` does the
link/IP/UDP/TCP work (fragment reassembly, TCP reordering and framing) and hands back HEP
bytes, plain SIP wrapped as HEPv3 with its addresses and capture time; the collector's
decoder (`collector.hep.fast.decode`) decodes them, and `consumers.observation.from_hep`
makes the observation. The common frame (untagged Ethernet, IPv4 without fragmentation,
UDP) takes a shortcut with the same result: its headers are read by offset, HEP goes
straight to the decoder and plain SIP straight into an observation, without dpkt objects or
a HEP round trip (a test compares the two paths). The scanner, and dpkt with it, is loaded
only when a frame needs it, so a capture of common frames never imports dpkt.

Evidence ids: `ref` is "<file name>#<frame number>" (1-based, as Wireshark numbers frames);
a frame that completes several messages (TCP) gives "#17", "#17.2", ...

Observations are released in capture-time order through a bounded sort buffer
(`sort_window_s`): HEP packets from several Kamailio workers or nodes reach the capture
point slightly out of the order of their own timestamps (C.0 rule 4), and the engine's
reorder window is sized for a live stream, not for a file written by a slow collector.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socket import inet_ntoa
from struct import Struct
from typing import TYPE_CHECKING

from collector.capfile import LINKTYPE_ETHERNET, CaptureTruncated, iter_frames
from collector.hep.errors import HepError
from collector.hep.fast import decode, looks_like_sip
from collector.hep.model import PROTO_SIP
from consumers.observation import Observation, from_hep

if TYPE_CHECKING:
    from collector.replay import CaptureScanner

DEFAULT_SORT_WINDOW_S = 5.0
_HEP3_MAGICS = (b"HEP3", b"EEP3")
_FAST_MAX_PAYLOAD = 60000  # larger plain SIP goes through the scanner's size check
_CAPTURE_ID = 0  # of plain SIP found in the file (CaptureScanner's default)


# Ethernet (untagged), IPv4 header without options, UDP header: ethertype, version/IHL,
# total length, flags/fragment offset, protocol, source, destination, ports, UDP length.
_ETH_IP_UDP = Struct("!12xHBxH2xHxB2x4s4sHHH")


def _ethernet_ipv4_udp(frame: bytes) -> tuple[bytes, bytes, int, int, bytes] | None:
    """(src, dst, sport, dport, payload) of an untagged Ethernet/IPv4/UDP frame that is not
    a fragment; None for anything else (the scanner then handles it)."""
    if len(frame) < 42:
        return None
    ethertype, vihl, total, frag, proto, src, dst, sport, dport, ulen = _ETH_IP_UDP.unpack_from(
        frame
    )
    if ethertype != 0x0800 or vihl >> 4 != 4 or proto != 17 or frag & 0x3FFF:
        return None  # not IPv4, not UDP, or MF set / fragment offset non-zero
    udp = (vihl & 0x0F) * 4 + 14
    if udp != 34:  # IP options: the UDP header is further on
        if udp < 34 or len(frame) < udp + 8:
            return None
        sport, dport, ulen = _UDP.unpack_from(frame, udp)
    end = 14 + total if total else len(frame)  # 0 with segmentation offload
    if end > len(frame) or end < udp + 8:
        return None
    if ulen >= 8 and udp + ulen < end:
        end = udp + ulen
    return src, dst, sport, dport, frame[udp + 8 : end]


_UDP = Struct("!HHH")


class CaptureError(ValueError):
    """The file cannot be read as a capture at all (missing, unreadable, not pcap/pcapng)."""


@dataclass
class CaptureStats:
    """What reading one capture gave: frames, HEP packets, observations, and rejections."""

    packets: int = 0  # frames read from the file
    hep: int = 0  # HEP packets found as they were captured
    sip_wrapped: int = 0  # plain SIP messages found (wrapped as HEPv3 on the way)
    observations: int = 0  # SIP observations handed on
    truncated: bool = False  # the file ends inside a record
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count

    def reject(self, reason: str, n: int = 1) -> None:
        if n:
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def to_dict(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "hep": self.hep,
            "sip_wrapped": self.sip_wrapped,
            "observations": self.observations,
            "truncated": self.truncated,
            "rejected": dict(sorted(self.rejected.items())),
        }


class CaptureReader:
    """Iterate over the SIP observations of one capture file; `stats` is final afterwards."""

    def __init__(self, path: str | Path, *, sort_window_s: float = DEFAULT_SORT_WINDOW_S) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.sort_window_us = int(sort_window_s * 1_000_000)
        self.stats = CaptureStats()
        self._scanner: CaptureScanner | None = None
        self.fast = True  # False: every frame through the scanner (tests compare the two)

    @property
    def scanner(self) -> CaptureScanner:
        """The link/IP/UDP/TCP scanner, made when the first frame off the fast path needs it."""
        if self._scanner is None:
            from collector.replay import CaptureScanner

            self._scanner = CaptureScanner(_CAPTURE_ID)
        return self._scanner

    def __iter__(self) -> Iterator[Observation]:
        heap: list[tuple[int, int, Observation]] = []
        newest = 0
        window = self.sort_window_us
        for seq, obs in enumerate(self._unsorted()):
            heapq.heappush(heap, (obs.ts_us, seq, obs))
            if obs.ts_us > newest:
                newest = obs.ts_us
            while heap and heap[0][0] < newest - window:
                yield heapq.heappop(heap)[2]
        while heap:
            yield heapq.heappop(heap)[2]

    def _unsorted(self) -> Iterator[Observation]:
        stats = self.stats
        fast_hep = fast_sip = 0
        name = self.name
        node = str(_CAPTURE_ID)
        from_wire = self._from_wire
        fast = self.fast
        for number, (ts_us, linktype, frame) in enumerate(self._frames(), 1):
            stats.packets += 1
            # Fast path for the usual capture (Ethernet/IPv4/UDP, whole datagrams): the same
            # result as CaptureScanner without building dpkt objects or wrapping plain SIP as
            # HEP only to decode it again. Anything else goes through the scanner.
            udp = _ethernet_ipv4_udp(frame) if fast and linktype == LINKTYPE_ETHERNET else None
            if udp is not None:
                if udp[4].startswith(_HEP3_MAGICS):
                    fast_hep += 1
                    obs = from_wire(udp[4], f"{name}#{number}")
                    if obs is not None:
                        yield obs
                    continue
                if len(udp[4]) <= _FAST_MAX_PAYLOAD and looks_like_sip(udp[4]):
                    fast_sip += 1
                    stats.observations += 1
                    src, dst, sport, dport, payload = udp
                    yield Observation(
                        ts_us, inet_ntoa(src), sport, inet_ntoa(dst), dport, "udp",
                        _CAPTURE_ID, node, "", f"{name}#{number}", payload,
                    )  # fmt: skip
                    continue
            for k, wire in enumerate(self.scanner.feed(ts_us, linktype, frame), 1):
                obs = from_wire(wire, f"{name}#{number}" if k == 1 else f"{name}#{number}.{k}")
                if obs is not None:
                    yield obs
        stats.hep = fast_hep
        stats.sip_wrapped = fast_sip
        if self._scanner is None:
            return
        s = self._scanner.stats
        stats.hep += s.hep
        stats.sip_wrapped += s.sip_wrapped
        stats.reject("not_ip", s.not_ip)
        stats.reject("not_udp_tcp", s.not_udp_tcp)
        stats.reject("malformed_frame", s.malformed)
        stats.reject("not_hep_or_sip", s.ignored_payloads)
        stats.reject("tcp_gap", s.tcp_resyncs)
        stats.reject("sip_too_large", s.too_large)

    def _from_wire(self, wire: bytes, ref: str) -> Observation | None:
        """The observation a HEP packet carries, or None after counting why it has none."""
        stats = self.stats
        try:
            pkt = decode(wire)
        except HepError as exc:
            stats.reject(f"hep_{exc.reason.value}")
            return None
        if pkt.proto_type != PROTO_SIP:
            stats.reject("hep_not_sip")  # RTCP, logs, QoS reports ride HEP too
            return None
        if not pkt.payload:
            stats.reject("hep_empty_payload")
            return None
        stats.observations += 1
        return from_hep(pkt, ref)

    def _frames(self) -> Iterator[tuple[int, int, bytes]]:
        try:
            frames = iter_frames(self.path)
            first = next(frames, None)
        except FileNotFoundError as exc:
            raise CaptureError(f"{self.path}: no such file") from exc
        except IsADirectoryError as exc:
            raise CaptureError(f"{self.path}: is a directory") from exc
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        except ValueError as exc:  # collector.capfile.NotACapture
            raise CaptureError(f"{self.path}: not a pcap or pcapng file") from exc
        except CaptureTruncated as exc:
            raise CaptureError(f"{self.path}: the capture file header is truncated") from exc
        if first is None:
            return
        yield first
        try:
            yield from frames
        except CaptureTruncated:
            self.stats.truncated = True  # a capture cut while it was written: keep what is there


def read_capture(
    path: str | Path, *, sort_window_s: float = DEFAULT_SORT_WINDOW_S
) -> CaptureReader:
    """The observations of `path`, in capture-time order; see `CaptureReader.stats`."""
    return CaptureReader(path, sort_window_s=sort_window_s)
