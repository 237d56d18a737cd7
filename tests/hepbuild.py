"""Test-side HEP packet builder, written independently of the codec under test.

Builds HEPv1, HEPv2 and HEPv3 packets with `struct` straight from PROTOCOL.md A.2/A.3, so
tests check the collector against the format rather than against itself.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib

Address = str | bytes  # text ("192.0.2.10", "2001:db8::1") or packed (4 or 16 octets)


def _packed(addr: Address) -> bytes:
    return addr if isinstance(addr, bytes) else ipaddress.ip_address(addr).packed


def chunk(ctype: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(value)) + value


def frame(body: bytes, magic: bytes = b"HEP3", total: int | None = None) -> bytes:
    """A HEPv3 packet around already built chunks; `total` overrides the length field."""
    return magic + struct.pack("!H", 6 + len(body) if total is None else total) + body


def sip_message(call_id: str, method: str = "INVITE", cseq: int = 1, body: bytes = b"") -> bytes:
    return (
        f"{method} sip:bob@198.51.100.5 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{call_id[:8]}{cseq}\r\n"
        f"From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def sip_request(
    call_id: str = "abc@192.0.2.10", method: str = "INVITE", body: bytes = b""
) -> bytes:
    return (
        f"{method} sip:bob@198.51.100.5 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{zlib.crc32(call_id.encode())}\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def hep3(
    payload: bytes,
    *,
    src: Address = "192.0.2.10",
    dst: Address = "198.51.100.5",
    sport: int = 5060,
    dport: int = 5060,
    ts: tuple[int, int] = (1700000000, 250000),
    capture_id: int = 2001,
    proto_type: int = 1,
    ip_proto: int = 17,
    auth_key: bytes | None = None,
    correlation_id: bytes | None = None,
    compress: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A HEPv3 packet in Kamailio siptrace's chunk order (PROTOCOL.md A.9)."""
    s, d = _packed(src), _packed(dst)
    v6 = len(s) == 16
    return frame(
        b"".join(
            [
                chunk(1, bytes([10 if v6 else 2])),
                chunk(2, bytes([ip_proto])),
                chunk(5 if v6 else 3, s),
                chunk(6 if v6 else 4, d),
                chunk(7, struct.pack("!H", sport)),
                chunk(8, struct.pack("!H", dport)),
                chunk(9, struct.pack("!I", ts[0])),
                chunk(10, struct.pack("!I", ts[1])),
                chunk(11, bytes([proto_type])),
                chunk(12, struct.pack("!I", capture_id)),
                chunk(0x11, correlation_id) if correlation_id is not None else b"",
                chunk(0x0E, auth_key) if auth_key is not None else b"",
                extra,
                chunk(0x10, zlib.compress(payload)) if compress else chunk(0x0F, payload),
            ]
        )
    )


def kamailio_packet(
    payload: bytes,
    *,
    src: Address = "192.0.2.10",
    dst: Address = "198.51.100.5",
    correlation_id: bytes | None = None,
    auth_key: bytes | None = None,
) -> bytes:
    return hep3(
        payload, src=src, dst=dst, dport=5062, correlation_id=correlation_id, auth_key=auth_key
    )


def hep12(
    version: int,
    payload: bytes,
    *,
    src: Address = "192.0.2.10",
    dst: Address = "198.51.100.5",
    ip_proto: int = 17,
    sport: int = 5060,
    dport: int = 5060,
    ts: tuple[int, int] = (1700000000, 250000),
    capture_id: int = 2001,
    hp_l: int | None = None,
    family: int | None = None,
) -> bytes:
    """HEPv1/v2 as Kamailio lays it out; `hp_l` and `family` override the header bytes."""
    s, d = _packed(src), _packed(dst)
    v6 = len(s) == 16
    head = struct.pack(
        "!BBBBHH",
        version,
        (40 if v6 else 16) if hp_l is None else hp_l,
        (10 if v6 else 2) if family is None else family,
        ip_proto,
        sport,
        dport,
    )
    head += s + d
    if version == 2:
        head += struct.pack("<IIHH", ts[0], ts[1], capture_id, 0)
    return head + payload
