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
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from socket import inet_ntoa
from typing import TYPE_CHECKING

from collector.capfile import LINKTYPE_ETHERNET, CaptureTruncated, iter_frames
from collector.hep.errors import HepError
from collector.hep.fast import decode, looks_like_sip
from collector.hep.model import PROTO_SIP
from consumers.observation import Observation, from_hep
from consumers.value import Value

if TYPE_CHECKING:
    from collector.replay import CaptureScanner

DEFAULT_SORT_WINDOW_S = 5.0
_HEP3_MAGICS = (b"HEP3", b"EEP3")
_FAST_MAX_PAYLOAD = 60000  # larger plain SIP goes through the scanner's size check
_CAPTURE_ID = 0  # of plain SIP found in the file (CaptureScanner's default)


def _udp_span(frame: bytes) -> tuple[int, int]:
    """(start, end) of the UDP payload of an untagged Ethernet/IPv4/UDP frame that is not a
    fragment; (0, 0) for anything else (the scanner then handles it). Read byte by byte: a
    native tuple of two ints costs nothing, unpacking the headers into objects does."""
    n = len(frame)
    if n < 42 or frame[12] != 0x08 or frame[13] != 0x00:  # ethertype IPv4
        return 0, 0
    vihl = frame[14]
    # version 4, protocol UDP, neither MF set nor a fragment offset
    if vihl >> 4 != 4 or frame[23] != 17 or frame[20] & 0x3F or frame[21]:
        return 0, 0
    udp = (vihl & 0x0F) * 4 + 14
    if udp < 34 or n < udp + 8:
        return 0, 0
    total = frame[16] << 8 | frame[17]
    end = 14 + total if total else n  # 0 with segmentation offload
    if end > n or end < udp + 8:
        return 0, 0
    ulen = frame[udp + 4] << 8 | frame[udp + 5]
    if ulen >= 8 and udp + ulen < end:
        end = udp + ulen
    return udp + 8, end


class CaptureError(ValueError):
    """The file cannot be read as a capture at all (missing, unreadable, not pcap/pcapng)."""


class CaptureStats(Value):
    """What reading one capture gave: frames, HEP packets, observations, and rejections."""

    FIELDS = ("packets", "hep", "sip_wrapped", "observations", "truncated", "rejected")

    def __init__(self) -> None:
        self.packets = 0  # frames read from the file
        self.hep = 0  # HEP packets found as they were captured
        self.sip_wrapped = 0  # plain SIP messages found (wrapped as HEPv3 on the way)
        self.observations = 0  # SIP observations handed on
        self.truncated = False  # the file ends inside a record
        self.rejected: dict[str, int] = {}  # reason -> count

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


def window_sorted(observations: Iterable[Observation], window_us: int) -> Iterator[Observation]:
    """`observations` in (capture time, arrival) order, each released once it is older than
    the newest seen by more than `window_us` (all of them at the end).

    Most of a capture is in order already: what comes in order waits in `run` (sorted by
    construction) and only what comes out of order goes through the heap; the next released
    is the smaller of the two heads."""
    run: deque[tuple[int, int, Observation]] = deque()
    heap: list[tuple[int, int, Observation]] = []
    newest = 0
    for seq, obs in enumerate(observations):
        ts = obs.ts_us
        if ts >= newest:
            newest = ts
            run.append((ts, seq, obs))
        else:
            heapq.heappush(heap, (ts, seq, obs))
        oldest = newest - window_us
        while True:
            if heap and (not run or heap[0] < run[0]):
                if heap[0][0] >= oldest:
                    break
                yield heapq.heappop(heap)[2]
            elif run and run[0][0] < oldest:
                yield run.popleft()[2]
            else:
                break
    while run or heap:
        if heap and (not run or heap[0] < run[0]):
            yield heapq.heappop(heap)[2]
        else:
            yield run.popleft()[2]


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
        return window_sorted(self._unsorted(), self.sort_window_us)

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
            start, end = _udp_span(frame) if fast and linktype == LINKTYPE_ETHERNET else (0, 0)
            if end:
                payload = frame[start:end]
                if payload.startswith(_HEP3_MAGICS):
                    fast_hep += 1
                    obs = from_wire(payload, f"{name}#{number}")
                    if obs is not None:
                        yield obs
                    continue
                if len(payload) <= _FAST_MAX_PAYLOAD and looks_like_sip(payload):
                    fast_sip += 1
                    stats.observations += 1
                    sport = frame[start - 8] << 8 | frame[start - 7]
                    dport = frame[start - 6] << 8 | frame[start - 5]
                    yield Observation(
                        ts_us, inet_ntoa(frame[26:30]), sport, inet_ntoa(frame[30:34]), dport,
                        "udp", _CAPTURE_ID, node, "", f"{name}#{number}", payload,
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
