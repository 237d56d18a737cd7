"""Test helpers for the HEP codec: shared vectors, an independent wire builder, strategies.

The builder writes HEPv1/v2/v3 bytes with `struct` straight from PROTOCOL.md A.2/A.3 and
computes, next to the bytes, the HepPacket a correct decoder must return. It shares nothing
with the codec under test except the model and the chunk constants.
"""

from __future__ import annotations

import ast
import gzip
import ipaddress
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hepbuild import chunk, hep12, sip_request
from hepbuild import frame as hep3
from hypothesis import strategies as st
from sharedpath import shared_path

from collector.hep.model import HepPacket

# --- shared vectors ----------------------------------------------------------------------------


def shared_hep_dir() -> Path | None:
    """`shared/vectors/hep` beside the checkout (or under $HEPWATCH_SHARED); None if absent."""
    return shared_path("vectors", "hep")


SKIP_REASON = "shared/vectors/hep is not present (set HEPWATCH_SHARED to the shared folder)"


def load_hex(path: Path) -> bytes:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return bytes.fromhex(" ".join(lines))


@dataclass
class VectorExpectation:
    """What a vector's comment table says: header facts and one entry per chunk, in order."""

    magic: bytes | None = None
    total_length: int | None = None
    buffer_length: int | None = None
    # (type, name, chunk length, value text as printed)
    chunks: list[tuple[int, str, int, str]] = field(default_factory=list)


_HEADER_LINE = re.compile(r"#\s+header\s+magic=(\w+) total_length=(\d+) \(buffer (\d+)\)")
_CHUNK_LINE = re.compile(r"#\s+0x([0-9a-f]{4})/0x([0-9a-f]{4}) (\w+) len=(\d+)\s+(.*)$")


def read_expectation(path: Path) -> VectorExpectation:
    exp = VectorExpectation()
    for line in path.read_text().splitlines():
        if m := _HEADER_LINE.match(line):
            exp.magic = m.group(1).encode()
            exp.total_length = int(m.group(2))
            exp.buffer_length = int(m.group(3))
        elif m := _CHUNK_LINE.match(line):
            assert m.group(1) == "0000", "vectors only describe generic chunks"
            exp.chunks.append((int(m.group(2), 16), m.group(3), int(m.group(4)), m.group(5)))
    return exp


_BYTES_LITERAL = re.compile(r"(b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")(\.\.\.)?")


def printed_bytes(text: str) -> tuple[bytes, bool]:
    """A printed bytes literal, and whether the printer cut it short (a trailing '...')."""
    m = _BYTES_LITERAL.search(text)
    assert m is not None, text
    return ast.literal_eval(m.group(1)), m.group(2) is not None


_INT_FIELDS = {
    "ip_family": "family",
    "ip_proto": "ip_proto",
    "src_port": "src_port",
    "dst_port": "dst_port",
    "ts_sec": "ts_sec",
    "ts_usec": "ts_usec",
    "proto_type": "proto_type",
    "capture_id": "capture_id",
}
_IP_FIELDS = {"src_ip4": "src_ip", "dst_ip4": "dst_ip", "src_ip6": "src_ip", "dst_ip6": "dst_ip"}
_BYTES_FIELDS = {"auth_key": "auth_key", "correlation_id": "correlation_id"}


def check_against_expectation(pkt: HepPacket, exp: VectorExpectation) -> None:
    """Assert that `pkt` carries every value the vector's comment table prints."""
    assert pkt.version == 3
    assert exp.total_length is not None and exp.buffer_length is not None
    assert pkt.trailing_bytes == exp.buffer_length - exp.total_length
    assert exp.chunks, "vector without a chunk table"
    for _ctype, name, length, text in exp.chunks:
        if name in _INT_FIELDS:
            assert getattr(pkt, _INT_FIELDS[name]) == int(text), name
        elif name in _IP_FIELDS:
            assert getattr(pkt, _IP_FIELDS[name]) == ipaddress.ip_address(text).packed, name
        elif name in _BYTES_FIELDS:
            value, cut = printed_bytes(text)
            assert not cut
            assert getattr(pkt, _BYTES_FIELDS[name]) == value, name
            assert length == 6 + len(value)
        elif name == "payload":
            value, cut = printed_bytes(text)
            assert len(pkt.payload) == length - 6
            assert pkt.payload.startswith(value) if cut else pkt.payload == value
            assert not pkt.compressed
        elif name == "compressed_payload":
            value, _cut = printed_bytes(text.removeprefix("decompressed: "))
            assert pkt.compressed
            assert pkt.payload.startswith(value)
        else:
            raise AssertionError(f"vector names a chunk this test does not know: {name}")


# --- what a packet built from chunks must decode to ------------------------------------

# type -> (HepPacket field, how the value is read)
_FIELD_READERS = {
    0x01: ("family", "u8"),
    0x02: ("ip_proto", "u8"),
    0x03: ("src_ip", "raw"),
    0x04: ("dst_ip", "raw"),
    0x05: ("src_ip", "raw"),
    0x06: ("dst_ip", "raw"),
    0x07: ("src_port", "u16"),
    0x08: ("dst_port", "u16"),
    0x09: ("ts_sec", "u32"),
    0x0A: ("ts_usec", "u32"),
    0x0B: ("proto_type", "u8"),
    0x0C: ("capture_id", "u32"),
    0x0E: ("auth_key", "raw"),
    0x0F: ("payload", "raw"),
    0x10: ("payload", "zraw"),
    0x11: ("correlation_id", "raw"),
    0x12: ("vlan_id", "u16"),
    0x13: ("node_name", "raw"),
}
VALUE_SIZE = {"u8": 1, "u16": 2, "u32": 4}
# Fixed-size generic chunks that are not HepPacket fields (PROTOCOL.md A.4 table).
EXTRA_FIXED = {0x0D: 2, 0x14: 8, 0x15: 8, 0x16: 2, 0x17: 1, 0x18: 1, 0x20: 2, 0x21: 2, 0x23: 4}


def expected_packet(
    chunks: list[tuple[int, int, bytes]], trailing: int = 0, inflated: bytes | None = None
) -> HepPacket:
    """The HepPacket for a HEPv3 packet made of `chunks` (vendor, type, value) in wire order.

    `inflated` is the payload a final 0x0010 chunk inflates to.
    """
    pkt = HepPacket(version=3, trailing_bytes=trailing)
    counts: dict[int, int] = {}
    dups: list[int] = []
    for vendor, ctype, value in chunks:
        if vendor != 0 or ctype not in _FIELD_READERS:
            pkt.extra_chunks.append((vendor, ctype, value))
            continue
        counts[ctype] = counts.get(ctype, 0) + 1
        if counts[ctype] == 2:
            dups.append(ctype)
        name, kind = _FIELD_READERS[ctype]
        if kind in VALUE_SIZE:
            setattr(pkt, name, int.from_bytes(value, "big"))
        else:
            setattr(pkt, name, value)
        if ctype in (0x0F, 0x10):
            pkt.compressed = ctype == 0x10
    if pkt.compressed:
        assert inflated is not None
        pkt.payload = inflated
    pkt.duplicate_chunks = tuple(dups)
    return pkt


def packet_diff(a: HepPacket, b: HepPacket) -> list[str]:
    """Field-by-field differences, for readable assertion messages."""
    return [
        f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}"
        for name in HepPacket.FIELDS
        if getattr(a, name) != getattr(b, name)
    ]


# --- hypothesis strategies ---------------------------------------------------------------


@st.composite
def field_chunk(draw: st.DrawFn) -> tuple[int, int, bytes]:
    ctype = draw(st.sampled_from(sorted(set(_FIELD_READERS) - {0x0F, 0x10})))
    kind = _FIELD_READERS[ctype][1]
    if kind in VALUE_SIZE:
        return (0, ctype, draw(st.binary(min_size=VALUE_SIZE[kind], max_size=VALUE_SIZE[kind])))
    if ctype in (0x03, 0x04):
        return (0, ctype, draw(st.binary(min_size=4, max_size=4)))
    if ctype in (0x05, 0x06):
        return (0, ctype, draw(st.binary(min_size=16, max_size=16)))
    return (0, ctype, draw(st.binary(max_size=40)))


@st.composite
def extra_chunk(draw: st.DrawFn) -> tuple[int, int, bytes]:
    kind = draw(st.sampled_from(["vendor", "fixed", "opaque"]))
    if kind == "vendor":
        vendor = draw(st.integers(1, 0xFFFF))
        return (vendor, draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=30)))
    if kind == "fixed":
        ctype = draw(st.sampled_from(sorted(EXTRA_FIXED)))
        size = EXTRA_FIXED[ctype]
        return (0, ctype, draw(st.binary(min_size=size, max_size=size)))
    ctype = draw(st.sampled_from([0x00, 0x19, 0x1F, 0x22, 0x24, 0x27, 0x28, 0x29, 0x30, 0xFFFF]))
    return (0, ctype, draw(st.binary(max_size=30)))


payload_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(sip_request, st.text("abcdef0123456789@.", min_size=1, max_size=30)),
)


@st.composite
def payload_chunk(draw: st.DrawFn) -> tuple[tuple[int, int, bytes], bytes]:
    """A 0x000f or 0x0010 chunk, with the payload it carries."""
    payload = draw(payload_bytes)
    how = draw(st.sampled_from(["plain", "zlib", "gzip"]))
    if how == "plain":
        return (0, 0x0F, payload), payload
    packed = zlib.compress(payload) if how == "zlib" else gzip.compress(payload, mtime=0)
    return (0, 0x10, packed), payload


@dataclass
class WirePacket:
    data: bytes
    expected: HepPacket


@st.composite
def v3_packets(draw: st.DrawFn) -> WirePacket:
    """Valid HEPv3 packets: random chunk sets in random order, Kamailio prefix or not."""
    chunks: list[tuple[int, int, bytes]] = []
    if draw(st.booleans()):  # Kamailio's fixed prefix, so the fast path's shortcut is taken
        v6 = draw(st.booleans())
        alen = 16 if v6 else 4
        for ctype, size in ((1, 1), (2, 1), (5 if v6 else 3, alen), (6 if v6 else 4, alen)):
            chunks.append((0, ctype, draw(st.binary(min_size=size, max_size=size))))
        for ctype, size in ((7, 2), (8, 2), (9, 4), (10, 4), (11, 1), (12, 4)):
            chunks.append((0, ctype, draw(st.binary(min_size=size, max_size=size))))
    rest = draw(st.lists(st.one_of(field_chunk(), extra_chunk()), max_size=12))
    payloads = draw(st.lists(payload_chunk(), max_size=2))
    rest += [c for c, _ in payloads]
    rest = draw(st.permutations(rest))
    chunks += rest
    last_payload = [c for c in chunks if c[0] == 0 and c[1] in (0x0F, 0x10)]
    inflated = None
    if last_payload and last_payload[-1][1] == 0x10:
        inflated = zlib.decompress(last_payload[-1][2], 47)
    trailing = draw(st.one_of(st.just(b""), st.binary(max_size=10)))
    magic = draw(st.sampled_from([b"HEP3", b"HEP3", b"EEP3"]))
    body = b"".join(chunk(t, v, vendor) for vendor, t, v in chunks)
    data = hep3(body, magic) + trailing
    return WirePacket(data, expected_packet(chunks, len(trailing), inflated))


@st.composite
def v12_packets(draw: st.DrawFn) -> WirePacket:
    version = draw(st.sampled_from([1, 2]))
    v6 = draw(st.booleans())
    alen = 16 if v6 else 4
    src = draw(st.binary(min_size=alen, max_size=alen))
    dst = draw(st.binary(min_size=alen, max_size=alen))
    ip_proto = draw(st.integers(0, 255))
    sport, dport = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
    ts = (draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    capture_id = draw(st.integers(0, 0xFFFF))
    payload = draw(payload_bytes)
    data = hep12(
        version,
        payload,
        src=src,
        dst=dst,
        ip_proto=ip_proto,
        sport=sport,
        dport=dport,
        ts=ts,
        capture_id=capture_id,
    )
    expected = HepPacket(
        version=version,
        family=10 if v6 else 2,
        ip_proto=ip_proto,
        src_ip=src,
        dst_ip=dst,
        src_port=sport,
        dst_port=dport,
        payload=payload,
    )
    if version == 2:
        expected.ts_sec, expected.ts_usec = ts
        expected.capture_id = capture_id
    return WirePacket(data, expected)


wire_packets = st.one_of(v3_packets(), v12_packets())


@st.composite
def encodable_packets(draw: st.DrawFn) -> HepPacket:
    """HepPackets an encoder must accept and a decoder must give back unchanged."""
    v6 = draw(st.booleans())
    alen = 16 if v6 else 4
    mixed = draw(st.integers(0, 9)) == 0  # now and then one IPv4 and one IPv6 address
    u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)
    optional_bytes = st.one_of(st.none(), st.binary(max_size=40))
    return HepPacket(
        version=3,
        family=draw(u8),
        ip_proto=draw(u8),
        src_ip=draw(st.binary(min_size=alen, max_size=alen)),
        dst_ip=draw(st.binary(min_size=20 - alen, max_size=20 - alen))
        if mixed
        else draw(st.binary(min_size=alen, max_size=alen)),
        src_port=draw(u16),
        dst_port=draw(u16),
        ts_sec=draw(u32),
        ts_usec=draw(u32),
        proto_type=draw(u8),
        capture_id=draw(u32),
        payload=draw(payload_bytes),
        auth_key=draw(optional_bytes),
        correlation_id=draw(optional_bytes),
        node_name=draw(optional_bytes),
        vlan_id=draw(st.one_of(st.none(), u16)),
        extra_chunks=draw(st.lists(extra_chunk(), max_size=4)),
    )


@st.composite
def mangled_bytes(draw: st.DrawFn) -> bytes:
    """Valid packets with bytes flipped, cut, inserted or duplicated; and plain noise."""
    how = draw(st.sampled_from(["noise", "flip", "cut", "insert", "length", "splice", "resize"]))
    if how == "noise":
        head = draw(st.sampled_from([b"", b"HEP3", b"EEP3", b"\x01", b"\x02", b"HEP3\x00"]))
        return head + draw(st.binary(max_size=120))
    data = bytearray(draw(wire_packets).data)
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif how == "length" and len(data) >= 6:
        data[4:6] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    elif how == "resize" and data[:4] in (b"HEP3", b"EEP3"):
        data = bytearray(resize_one_chunk(bytes(data), draw))
    elif how == "splice":
        other = draw(wire_packets).data
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(0, len(other)))
        data = data[:i] + other[j:]
    return bytes(data)


def resize_one_chunk(data: bytes, draw: st.DrawFn) -> bytes:
    """Grow or shrink one chunk value of a valid HEPv3 packet, keeping every length consistent."""
    total = struct.unpack_from("!H", data, 4)[0]
    spans = []
    off = 6
    while off < total:
        clen = struct.unpack_from("!H", data, off + 4)[0]
        spans.append((off, clen))
        off += clen
    if not spans:
        return data
    off, clen = draw(st.sampled_from(spans))
    value = data[off + 6 : off + clen]
    value = value + b"\x00" if draw(st.booleans()) or not value else value[:-1]
    resized = data[off : off + 4] + struct.pack("!H", 6 + len(value)) + value
    body = data[6:off] + resized + data[off + clen : total]
    return data[:4] + struct.pack("!H", 6 + len(body)) + body + data[total:]
