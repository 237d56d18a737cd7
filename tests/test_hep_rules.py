"""One test per decoding rule (PROTOCOL.md A.1, A.2, A.6), run against both decoders."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable

import pytest
from hepbuild import chunk, hep12, kamailio_packet, sip_request
from hepbuild import frame as hep3

from collector.hep import spec
from collector.hep.declaration import GENERIC_VALUES, parse_declared
from collector.hep.errors import HepError, RejectReason
from collector.hep.fast import decode
from collector.hep.model import HepPacket

Decoder = Callable[..., HepPacket]


@pytest.fixture(params=[decode, parse_declared], ids=["fast", "declared"])
def dec(request: pytest.FixtureRequest) -> Decoder:
    return request.param


def reason(dec: Decoder, data: bytes, **kw: int) -> RejectReason:
    with pytest.raises(HepError) as info:
        dec(data, **kw)
    return info.value.reason


SIP = sip_request()
BASIC = [
    chunk(1, b"\x02"),
    chunk(2, b"\x11"),
    chunk(3, bytes([192, 0, 2, 1])),
    chunk(4, bytes([192, 0, 2, 2])),
    chunk(7, struct.pack("!H", 5060)),
    chunk(8, struct.pack("!H", 5080)),
    chunk(9, struct.pack("!I", 1700000000)),
    chunk(10, struct.pack("!I", 123456)),
    chunk(11, b"\x01"),
    chunk(12, struct.pack("!I", 7)),
]


# --- A.1 dispatch ----------------------------------------------------------------------------


def test_empty_input_is_truncated(dec: Decoder) -> None:
    assert reason(dec, b"") is RejectReason.TRUNCATED


@pytest.mark.parametrize("data", [b"H", b"HE", b"HEP", b"E", b"EEP"])
def test_prefix_of_a_magic_is_truncated(dec: Decoder, data: bytes) -> None:
    assert reason(dec, data) is RejectReason.TRUNCATED


@pytest.mark.parametrize(
    "data", [b"X", b"HX", b"HEP2\x00\x06", b"GET / HTTP/1.1\r\n", b"\x03" + bytes(40), b"\x00"]
)
def test_anything_else_is_bad_magic(dec: Decoder, data: bytes) -> None:
    assert reason(dec, data) is RejectReason.BAD_MAGIC


def test_bad_magic_is_checked_before_length(dec: Decoder) -> None:
    assert reason(dec, b"HEP4" + bytes(200)) is RejectReason.BAD_MAGIC


# --- A.3 / A.6 HEPv3 header ------------------------------------------------------------------


def test_header_without_chunks_is_a_valid_empty_packet(dec: Decoder) -> None:
    assert dec(b"HEP3\x00\x06") == HepPacket(version=3)


def test_eep3_magic_is_accepted(dec: Decoder) -> None:
    body = b"".join([*BASIC, chunk(0x0F, SIP)])
    assert dec(hep3(body, b"EEP3")) == dec(hep3(body))


@pytest.mark.parametrize("data", [b"HEP3", b"HEP3\x00", b"EEP3\x00"])
def test_short_header_is_truncated(dec: Decoder, data: bytes) -> None:
    assert reason(dec, data) is RejectReason.TRUNCATED


@pytest.mark.parametrize("total", [0, 1, 5])
def test_total_length_below_6_is_bad_length(dec: Decoder, total: int) -> None:
    assert reason(dec, hep3(chunk(0x0F, SIP), total=total)) is RejectReason.BAD_LENGTH


def test_total_length_past_the_data_is_truncated(dec: Decoder) -> None:
    data = hep3(chunk(0x0F, SIP))
    assert reason(dec, data[:-1]) is RejectReason.TRUNCATED


def test_total_length_above_max_size_is_oversize(dec: Decoder) -> None:
    data = hep3(chunk(0x0F, SIP))
    assert dec(data, max_size=len(data)).payload == SIP
    assert reason(dec, data, max_size=len(data) - 1) is RejectReason.OVERSIZE
    # Oversize is decided from the header, before the missing bytes are noticed.
    assert reason(dec, data[:10], max_size=len(data) - 1) is RejectReason.OVERSIZE


def test_exactly_total_length_is_parsed_and_the_rest_counted(dec: Decoder) -> None:
    data = hep3(b"".join([*BASIC, chunk(0x0F, SIP)]))
    pkt = dec(data + b"\x00garbage HEP3")
    assert pkt.trailing_bytes == 13
    assert pkt.payload == SIP
    assert dec(data).trailing_bytes == 0


# --- A.6 rule 2: chunk framing -----------------------------------------------------------------


@pytest.mark.parametrize("left", [1, 2, 3, 4, 5])
def test_partial_chunk_header_is_truncated(dec: Decoder, left: int) -> None:
    body = b"".join(BASIC) + bytes(left)
    assert reason(dec, hep3(body)) is RejectReason.TRUNCATED


@pytest.mark.parametrize("clen", [0, 1, 5])
def test_chunk_length_below_6_is_bad_chunk(dec: Decoder, clen: int) -> None:
    body = b"".join(BASIC) + struct.pack("!HHH", 0, 0x0F, clen) + SIP
    assert reason(dec, hep3(body)) is RejectReason.BAD_CHUNK


def test_chunk_running_past_total_length_is_bad_chunk(dec: Decoder) -> None:
    body = b"".join(BASIC) + struct.pack("!HHH", 0, 0x0F, 6 + len(SIP) + 1) + SIP
    assert reason(dec, hep3(body)) is RejectReason.BAD_CHUNK
    # Even when the datagram has the bytes: the chunk must end inside the packet.
    assert reason(dec, hep3(body) + b"\x00\x00") is RejectReason.BAD_CHUNK


def test_first_bad_chunk_decides(dec: Decoder) -> None:
    body = struct.pack("!HHH", 0, 7, 9) + b"xyz" + b"\x00\x00\x00"  # bad size, then partial
    assert reason(dec, hep3(body)) is RejectReason.BAD_CHUNK
    body = bytes(3) + struct.pack("!HHH", 0, 7, 9)
    assert reason(dec, hep3(body[:3])) is RejectReason.TRUNCATED


# --- A.6 rule 3: fixed sizes -------------------------------------------------------------------


@pytest.mark.parametrize("ctype", sorted(spec.FIXED_VALUE_SIZE))
@pytest.mark.parametrize("delta", [-1, 1])
def test_fixed_size_chunk_with_wrong_size_is_bad_chunk(dec: Decoder, ctype: int, delta: int):
    size = spec.FIXED_VALUE_SIZE[ctype] + delta
    body = b"".join([*BASIC, chunk(ctype, bytes(size)), chunk(0x0F, SIP)])
    assert reason(dec, hep3(body)) is RejectReason.BAD_CHUNK


@pytest.mark.parametrize("ctype", sorted(spec.FIXED_VALUE_SIZE))
def test_fixed_size_chunk_with_right_size_is_accepted(dec: Decoder, ctype: int) -> None:
    body = b"".join([*BASIC, chunk(ctype, bytes(spec.FIXED_VALUE_SIZE[ctype]))])
    dec(hep3(body))


def test_fixed_size_rule_does_not_apply_to_vendor_chunks(dec: Decoder) -> None:
    pkt = dec(hep3(chunk(1, b"\x02\x03\x04", vendor=2)))
    assert pkt.extra_chunks == [(2, 1, b"\x02\x03\x04")]
    assert pkt.family == 2  # the default: a vendor chunk never sets a field


def test_declaration_sizes_match_the_table() -> None:
    for ctype, size in spec.FIXED_VALUE_SIZE.items():
        assert GENERIC_VALUES[ctype].sizeof() == size, hex(ctype)


# --- chunk semantics ----------------------------------------------------------------------------


def test_all_fields_are_read(dec: Decoder) -> None:
    body = b"".join(
        [
            *BASIC,
            chunk(0x0E, b"secret"),
            chunk(0x11, b"corr\x00id"),
            chunk(0x12, struct.pack("!H", 42)),
            chunk(0x13, b"node1"),
            chunk(0x0F, SIP),
        ]
    )
    assert dec(hep3(body)) == HepPacket(
        version=3,
        family=2,
        ip_proto=17,
        src_ip=bytes([192, 0, 2, 1]),
        dst_ip=bytes([192, 0, 2, 2]),
        src_port=5060,
        dst_port=5080,
        ts_sec=1700000000,
        ts_usec=123456,
        proto_type=1,
        capture_id=7,
        payload=SIP,
        auth_key=b"secret",
        correlation_id=b"corr\x00id",  # strings end with the chunk, not at a NUL
        node_name=b"node1",
        vlan_id=42,
    )


def test_chunk_order_does_not_matter(dec: Decoder) -> None:
    body = b"".join([*BASIC, chunk(0x0F, SIP)])
    shuffled = b"".join([chunk(0x0F, SIP), *reversed(BASIC)])
    assert dec(hep3(body)) == dec(hep3(shuffled))


def test_ipv6_addresses(dec: Decoder) -> None:
    src, dst = bytes(range(16)), bytes(range(16, 32))
    pkt = dec(hep3(chunk(1, b"\x0a") + chunk(5, src) + chunk(6, dst)))
    assert (pkt.family, pkt.src_ip, pkt.dst_ip) == (10, src, dst)
    assert pkt.src_ip_text == "1:203:405:607:809:a0b:c0d:e0f"


def test_duplicates_last_wins_and_are_listed_once_in_order(dec: Decoder) -> None:
    body = b"".join(
        [
            chunk(7, struct.pack("!H", 1)),
            chunk(0x0F, b"first"),
            chunk(7, struct.pack("!H", 2)),
            chunk(0x0F, b"second"),
            chunk(7, struct.pack("!H", 3)),
            chunk(0x0E, b"k"),
        ]
    )
    pkt = dec(hep3(body))
    assert (pkt.src_port, pkt.payload) == (3, b"second")
    assert pkt.duplicate_chunks == (7, 0x0F)


def test_duplicate_after_kamailio_prefix_is_listed(dec: Decoder) -> None:
    data = kamailio_packet(SIP)
    extra = chunk(7, struct.pack("!H", 9999))
    data = hep3(data[6:] + extra)
    pkt = dec(data)
    assert pkt.src_port == 9999 and pkt.duplicate_chunks == (7,)


def test_ipv4_and_ipv6_chunks_share_a_field_without_being_duplicates(dec: Decoder) -> None:
    v6 = bytes(range(16))
    pkt = dec(hep3(chunk(3, bytes([10, 0, 0, 1])) + chunk(5, v6) + chunk(4, bytes(4))))
    assert (pkt.src_ip, pkt.dst_ip, pkt.duplicate_chunks) == (v6, bytes(4), ())


def test_unknown_and_vendor_chunks_are_kept_in_order(dec: Decoder) -> None:
    extras = [
        (0, 0x0D, struct.pack("!H", 30)),  # keep-alive: generic, fixed size, not a field
        (2, 0x0F, b"vendor payload"),  # a vendor chunk never means the generic type
        (0, 0x27, b"\x00"),  # typed uint16 by the table but without a fixed length
        (0, 0x00, b""),
        (0, 0x4242, b"future"),
        (0x0005, 0x0001, b"x" * 10),
    ]
    body = b"".join([*BASIC, *(chunk(t, v, vendor) for vendor, t, v in extras), chunk(0x0F, SIP)])
    pkt = dec(hep3(body))
    assert pkt.extra_chunks == extras
    assert pkt.payload == SIP and pkt.duplicate_chunks == ()


def test_missing_chunks_leave_the_defaults(dec: Decoder) -> None:
    pkt = dec(hep3(chunk(0x0F, SIP)))
    assert pkt == HepPacket(version=3, payload=SIP)


def test_payload_bytes_are_kept_raw(dec: Decoder) -> None:
    raw = b"INVITE sip:x SIP/2.0\r\nSubject: \xff\xfe\x00\r\n\r\n\x00\x01binary"
    assert dec(hep3(chunk(0x0F, raw))).payload == raw


# --- 0x0010 compressed payload -------------------------------------------------------------------


@pytest.mark.parametrize("pack", [zlib.compress, lambda b: gzip.compress(b, mtime=0)])
def test_compressed_payload_is_inflated(dec: Decoder, pack: Callable[[bytes], bytes]) -> None:
    pkt = dec(hep3(b"".join([*BASIC, chunk(0x10, pack(SIP))])))
    assert pkt.payload == SIP and pkt.compressed


@pytest.mark.parametrize(
    "value",
    [b"", b"not deflate", zlib.compress(SIP)[:-5], b"\x78\x9c" + bytes(20)],
    ids=["empty", "garbage", "cut", "bad-stream"],
)
def test_bad_compressed_payload(dec: Decoder, value: bytes) -> None:
    assert reason(dec, hep3(chunk(0x10, value))) is RejectReason.BAD_COMPRESSION


def test_zip_bomb_is_oversize_without_inflating_it(dec: Decoder) -> None:
    bomb = zlib.compress(bytes(50_000_000), 9)  # ~49 kB inflating to 50 MB
    assert len(bomb) < 65000
    assert reason(dec, hep3(chunk(0x10, bomb))) is RejectReason.OVERSIZE


def test_inflated_payload_is_bounded_by_max_size(dec: Decoder) -> None:
    data = hep3(chunk(0x10, zlib.compress(b"a" * 1000)))
    assert dec(data, max_size=1000).payload == b"a" * 1000
    assert reason(dec, data, max_size=999) is RejectReason.OVERSIZE


def test_last_payload_chunk_wins_and_only_it_is_inflated(dec: Decoder) -> None:
    z = chunk(0x10, zlib.compress(b"zipped"))
    plain = chunk(0x0F, b"plain")
    pkt = dec(hep3(z + plain))
    assert (pkt.payload, pkt.compressed) == (b"plain", False)
    pkt = dec(hep3(plain + z))
    assert (pkt.payload, pkt.compressed) == (b"zipped", True)
    # A broken 0x0010 that a later 0x000f replaces is never looked at.
    pkt = dec(hep3(chunk(0x10, b"junk") + plain))
    assert pkt.payload == b"plain"


def test_bad_chunk_after_a_bad_compressed_payload_is_bad_chunk(dec: Decoder) -> None:
    # Framing is checked over the whole packet before the payload is inflated.
    body = chunk(0x10, b"junk") + struct.pack("!HHH", 0, 0x11, 3)
    assert reason(dec, hep3(body)) is RejectReason.BAD_CHUNK


# --- Kamailio prefix shortcut --------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True])
def test_kamailio_prefix_and_generic_walk_agree(dec: Decoder, v6: bool) -> None:
    addrs = {"src": bytes(range(16)), "dst": bytes(range(1, 17))} if v6 else {}
    fast_path = kamailio_packet(SIP, correlation_id=b"cid", auth_key=b"key", **addrs)
    body = fast_path[6:]
    # Same chunks, the first two swapped: no prefix match, generic walk only.
    generic = hep3(body[7:14] + body[:7] + body[14:])
    assert dec(fast_path) == dec(generic)


def test_kamailio_prefix_with_a_wrong_chunk_length_is_bad_chunk(dec: Decoder) -> None:
    data = bytearray(kamailio_packet(SIP))
    # 0x0007 is the fifth chunk: 6 + 7 + 7 + 10 + 10 = offset 40, length field at 44.
    assert data[40:46] == bytes.fromhex("000000070008")
    data[45] = 9
    assert reason(dec, bytes(data)) is RejectReason.BAD_CHUNK


def test_kamailio_ipv6_prefix_with_a_wrong_address_length_is_bad_chunk(dec: Decoder) -> None:
    data = bytearray(kamailio_packet(SIP, src=bytes(16), dst=bytes(16)))
    assert data[20:26] == bytes.fromhex("000000050016")
    data[25] = 0x0A  # an IPv6 source chunk claiming IPv4 length
    assert reason(dec, bytes(data)) is RejectReason.BAD_CHUNK


def test_packet_cut_inside_the_kamailio_prefix(dec: Decoder) -> None:
    data = kamailio_packet(SIP)
    # Chunk 0x0009 has its header at 56..62 and its value at 62..66.
    assert reason(dec, hep3(data[6:64])) is RejectReason.BAD_CHUNK  # cut inside a value
    assert reason(dec, hep3(data[6:60])) is RejectReason.TRUNCATED  # cut inside a header
    assert reason(dec, data[:60]) is RejectReason.TRUNCATED


# --- A.2 HEPv1 / HEPv2 ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("v6", [False, True])
def test_v1_v2_layouts(dec: Decoder, version: int, v6: bool) -> None:
    src = bytes(range(1, 17)) if v6 else bytes([10, 0, 0, 1])
    dst = bytes(range(17, 33)) if v6 else bytes([10, 0, 0, 2])
    data = hep12(
        version, SIP, src=src, dst=dst, ip_proto=6, sport=1, dport=2, ts=(3, 4), capture_id=513
    )
    pkt = dec(data)
    timed = version == 2
    assert pkt == HepPacket(
        version=version,
        family=10 if v6 else 2,
        ip_proto=6,
        src_ip=src,
        dst_ip=dst,
        src_port=1,
        dst_port=2,
        ts_sec=3 if timed else 0,
        ts_usec=4 if timed else 0,
        capture_id=513 if timed else 0,
        payload=SIP,
    )


def test_v2_time_header_is_little_endian(dec: Decoder) -> None:
    data = hep12(2, b"", ts=(0x01020304, 0x0A0B0C0D), capture_id=0x0102)
    assert data[16:28] == bytes.fromhex("04030201 0d0c0b0a 0201 0000")
    pkt = dec(data)
    assert (pkt.ts_sec, pkt.ts_usec, pkt.capture_id) == (0x01020304, 0x0A0B0C0D, 0x0102)


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_empty_payload(dec: Decoder, version: int) -> None:
    assert dec(hep12(version, b"")).payload == b""


@pytest.mark.parametrize("hp_l", [0, 8, 15, 17, 28, 39, 41, 255])
def test_v1_v2_bad_header_length(dec: Decoder, hp_l: int) -> None:
    assert reason(dec, hep12(1, SIP, hp_l=hp_l)) is RejectReason.BAD_LENGTH


@pytest.mark.parametrize(("hp_l", "family"), [(16, 10), (40, 2), (16, 28), (40, 30), (16, 0)])
def test_v1_v2_family_must_match_the_header_length(dec: Decoder, hp_l: int, family: int):
    data = hep12(2, SIP, hp_l=hp_l, family=family)
    assert reason(dec, data) is RejectReason.BAD_LENGTH


@pytest.mark.parametrize(
    ("version", "v6", "size"),
    [(1, False, 15), (2, False, 27), (1, True, 39), (2, True, 51), (1, False, 3), (2, False, 1)],
)
def test_v1_v2_short_header_is_truncated(dec: Decoder, version: int, v6: bool, size: int):
    src = bytes(16) if v6 else bytes(4)
    data = hep12(version, b"", src=src, dst=src)
    assert len(data) == size + 1 or size < 4
    assert reason(dec, data[:size]) is RejectReason.TRUNCATED


def test_v1_v2_datagram_above_max_size_is_oversize(dec: Decoder) -> None:
    data = hep12(2, SIP)
    assert dec(data, max_size=len(data)).payload == SIP
    assert reason(dec, data, max_size=len(data) - 1) is RejectReason.OVERSIZE


def test_v1_v2_proto_type_defaults_to_sip(dec: Decoder) -> None:
    assert dec(hep12(1, SIP)).proto_type == 1


# --- only HepError --------------------------------------------------------------------------


def test_hep_error_carries_reason_and_detail(dec: Decoder) -> None:
    with pytest.raises(HepError) as info:
        dec(hep3(struct.pack("!HHH", 0, 7, 2)))
    assert info.value.reason is RejectReason.BAD_CHUNK
    assert str(info.value).startswith("bad_chunk")
    assert isinstance(info.value, ValueError)
