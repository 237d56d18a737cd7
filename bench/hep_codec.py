"""Throughput of the HEP codec: packets (or payloads) per second, best of several runs.

Run: .venv/bin/python bench/hep_codec.py [--seconds 0.5]

The "Kamailio" packet is what siptrace sends with hep_version=3, a correlation id and an auth
key: 13 chunks and an ~800-byte INVITE. The "generic" packet has the same chunks with the
first two swapped, so the fast decoder cannot take its prefix shortcut.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hepbuild import chunk, frame  # the test-side packet builder

from collector.hep.declaration import build_declared, parse_declared
from collector.hep.fast import (
    decode,
    encode_v3,
    find_call_id,
    looks_like_sip,
    strip_auth_key,
)
from collector.hep.speedups import scan_v3

SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    "c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 9 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    "INVITE sip:bob@198.51.100.5:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060>\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, UPDATE, PRACK\r\n"
    "Supported: replaces, timer, 100rel\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "User-Agent: bench-ua/1.0\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
).encode()


def hep3(chunks: list[bytes]) -> bytes:
    return frame(b"".join(chunks))


KAMAILIO_CHUNKS = [
    chunk(1, b"\x02"),
    chunk(2, b"\x11"),
    chunk(3, bytes([192, 0, 2, 10])),
    chunk(4, bytes([198, 51, 100, 5])),
    chunk(7, struct.pack("!H", 5060)),
    chunk(8, struct.pack("!H", 5060)),
    chunk(9, struct.pack("!I", 1700000000)),
    chunk(10, struct.pack("!I", 250000)),
    chunk(11, b"\x01"),
    chunk(12, struct.pack("!I", 2001)),
    chunk(0x11, b"a84b4c76e66710@pc33.example.com"),
    chunk(0x0E, b"myHep"),
    chunk(0x0F, INVITE),
]
KAMAILIO = hep3(KAMAILIO_CHUNKS)
KAMAILIO6 = hep3(
    [
        *KAMAILIO_CHUNKS[:2],
        chunk(5, bytes.fromhex("20010db8000000000000000000000010")),
        chunk(6, bytes.fromhex("20010db8000000000000000000000020")),
        *KAMAILIO_CHUNKS[4:],
    ]
)
GENERIC = hep3([KAMAILIO_CHUNKS[1], KAMAILIO_CHUNKS[0], *KAMAILIO_CHUNKS[2:]])
COMPRESSED = hep3([*KAMAILIO_CHUNKS[:-1], chunk(0x10, zlib.compress(INVITE))])


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second: best of five timed batches of about `seconds` each."""
    n = 1
    while True:  # size a batch
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5:
            break
        n *= 2
    batch = max(1, int(n * seconds / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed batch")
    args = parser.parse_args()

    pkt = decode(KAMAILIO)
    assert pkt == parse_declared(KAMAILIO) == decode(GENERIC)
    assert encode_v3(pkt, include_auth_key=True) == KAMAILIO
    payload = pkt.payload
    print(f"Kamailio packet: {len(KAMAILIO)} bytes, 13 chunks, payload {len(payload)} bytes")

    cases: list[tuple[str, Callable[[], object]]] = [
        ("construct parse_declared (Kamailio packet)", lambda: parse_declared(KAMAILIO)),
        ("construct build_declared", lambda: build_declared(pkt)),
        ("fast decode, Kamailio prefix", lambda: decode(KAMAILIO)),
        ("fast decode, Kamailio IPv6 prefix", lambda: decode(KAMAILIO6)),
        ("fast decode, generic chunk walk", lambda: decode(GENERIC)),
        ("fast decode, 0x0010 zlib payload", lambda: decode(COMPRESSED)),
        ("encode_v3", lambda: encode_v3(pkt)),
        ("strip_auth_key (key present)", lambda: strip_auth_key(KAMAILIO)),
        ("find_call_id", lambda: find_call_id(payload)),
        ("looks_like_sip", lambda: looks_like_sip(payload)),
    ]
    if scan_v3 is not None:  # the C extension: walk + find_call_id + looks_like_sip in one call
        cases.append(("C scan_v3 (Kamailio packet)", lambda: scan_v3(KAMAILIO, 65535)))
    for name, fn in cases:
        print(f"{name:45s} {rate(fn, args.seconds):>12,.0f} /s")


if __name__ == "__main__":
    main()
