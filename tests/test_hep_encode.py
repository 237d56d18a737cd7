"""HEPv3 encoders (fast and declared), round trips, and auth key stripping."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest
from hepbuild import chunk, hep12, kamailio_packet, sip_request
from hepbuild import frame as hep3

from collector.hep.declaration import HEP1, HEP2, build_declared, parse_declared
from collector.hep.errors import HepError, RejectReason
from collector.hep.fast import decode, encode_v3, strip_auth_key
from collector.hep.model import HepPacket

Encoder = Callable[..., bytes]
SIP = sip_request()


@pytest.fixture(params=[encode_v3, build_declared], ids=["fast", "declared"])
def enc(request: pytest.FixtureRequest) -> Encoder:
    return request.param


def full_packet() -> HepPacket:
    return HepPacket(
        version=3,
        family=2,
        ip_proto=17,
        src_ip=bytes([192, 0, 2, 1]),
        dst_ip=bytes([192, 0, 2, 2]),
        src_port=5060,
        dst_port=5080,
        ts_sec=1700000000,
        ts_usec=999999,
        proto_type=1,
        capture_id=2**32 - 1,
        payload=SIP,
        auth_key=b"secret",
        correlation_id=b"corr",
        node_name=b"node1",
        vlan_id=100,
        extra_chunks=[(0, 0x0D, b"\x00\x1e"), (2, 0x20, b"k")],
    )


def test_chunk_order_is_kamailio_order(enc: Encoder) -> None:
    expected = hep3(
        b"".join(
            [
                chunk(1, b"\x02"),
                chunk(2, b"\x11"),
                chunk(3, bytes([192, 0, 2, 1])),
                chunk(4, bytes([192, 0, 2, 2])),
                chunk(7, struct.pack("!H", 5060)),
                chunk(8, struct.pack("!H", 5080)),
                chunk(9, struct.pack("!I", 1700000000)),
                chunk(10, struct.pack("!I", 999999)),
                chunk(11, b"\x01"),
                chunk(12, b"\xff\xff\xff\xff"),
                chunk(0x11, b"corr"),
                chunk(0x0E, b"secret"),
                chunk(0x13, b"node1"),
                chunk(0x12, struct.pack("!H", 100)),
                chunk(0x0D, b"\x00\x1e"),
                chunk(0x20, b"k", vendor=2),
                chunk(0x0F, SIP),
            ]
        )
    )
    assert enc(full_packet(), include_auth_key=True) == expected


def test_auth_key_is_left_out_unless_asked_for(enc: Encoder) -> None:
    pkt = full_packet()
    without = decode(enc(pkt))
    assert without.auth_key is None
    assert decode(enc(pkt, include_auth_key=True)).auth_key == b"secret"
    pkt.auth_key = None
    assert without == pkt


def test_round_trip(enc: Encoder) -> None:
    pkt = full_packet()
    assert decode(enc(pkt, include_auth_key=True)) == pkt
    assert parse_declared(enc(pkt, include_auth_key=True)) == pkt


def test_ipv6_and_mixed_families(enc: Encoder) -> None:
    v6a, v6b = bytes(range(16)), bytes(range(16, 32))
    pkt = HepPacket(version=3, family=10, src_ip=v6a, dst_ip=v6b, payload=SIP)
    assert decode(enc(pkt)) == pkt
    assert len(enc(pkt)) == 6 + 7 + 7 + 22 + 22 + 8 + 8 + 10 + 10 + 7 + 10 + 6 + len(SIP)
    mixed = HepPacket(version=3, src_ip=bytes(4), dst_ip=v6b, payload=SIP)
    wire = enc(mixed)
    assert decode(wire) == mixed
    assert wire[20:26] == bytes.fromhex("00000003000a")  # 0x0003, length 10
    assert wire[30:36] == bytes.fromhex("000000060016")  # 0x0006, length 22


def test_v1_and_v2_packets_become_v3(enc: Encoder) -> None:
    for version in (1, 2):
        legacy = decode(hep12(version, SIP))
        again = decode(enc(legacy))
        assert again.version == 3
        legacy.version = 3
        assert again == legacy


def test_compressed_packet_is_written_uncompressed(enc: Encoder) -> None:
    pkt = decode(hep3(chunk(0x10, zlib.compress(SIP))))
    assert pkt.compressed
    again = decode(enc(pkt))
    assert again.payload == SIP and not again.compressed


def test_largest_packet_fits_and_one_more_byte_does_not(enc: Encoder) -> None:
    pkt = HepPacket(version=3)
    head = len(enc(pkt))
    pkt.payload = bytes(0xFFFF - head)
    assert len(enc(pkt)) == 0xFFFF
    pkt.payload += b"x"
    with pytest.raises(ValueError):
        enc(pkt)


@pytest.mark.parametrize(
    "change",
    [
        {"src_ip": b"\x01\x02\x03"},
        {"dst_ip": bytes(5)},
        {"src_port": 65536},
        {"dst_port": -1},
        {"family": 256},
        {"ip_proto": -1},
        {"proto_type": 300},
        {"ts_sec": 2**32},
        {"capture_id": 2**32},
        {"vlan_id": 70000},
        {"correlation_id": bytes(65530)},
        {"extra_chunks": [(0, 0x0F, b"payload-as-extra")]},
        {"extra_chunks": [(0, 0x0D, b"\x00")]},
        {"extra_chunks": [(70000, 1, b"")]},
    ],
)
def test_unencodable_packets_raise_value_error(enc: Encoder, change: dict[str, object]) -> None:
    pkt = full_packet()
    for name, value in change.items():
        setattr(pkt, name, value)
    with pytest.raises(ValueError):
        enc(pkt, include_auth_key=True)


@pytest.mark.parametrize("v6", [False, True])
def test_v1_v2_declarations_build_the_legacy_layouts(v6: bool) -> None:
    src, dst = (bytes(range(16)), bytes(range(16, 32))) if v6 else (bytes(4), bytes([1, 2, 3, 4]))
    fields = {
        "family": 10 if v6 else 2,
        "ip_proto": 6,
        "src_port": 1,
        "dst_port": 2,
        "src_ip": src,
        "dst_ip": dst,
        "payload": SIP,
    }
    time_block = {"ts_sec": 3, "ts_usec": 4, "capture_id": 5}
    built1 = HEP1.build({**fields, "version": 1, "time": None})
    built2 = HEP2.build({**fields, "version": 2, "time": time_block})
    kw = {"src": src, "dst": dst, "ip_proto": 6, "sport": 1, "dport": 2}
    assert built1 == hep12(1, SIP, **kw)
    assert built2 == hep12(2, SIP, ts=(3, 4), capture_id=5, **kw)


# --- strip_auth_key -----------------------------------------------------------------------------


def test_strip_returns_the_same_object_when_there_is_no_key() -> None:
    data = kamailio_packet(SIP)
    assert strip_auth_key(data) is data
    # The 4-byte pattern of a key header inside a value is not a key chunk.
    tricky = kamailio_packet(b"\x00\x00\x00\x0e\x00\x07abc")
    assert strip_auth_key(tricky) is tricky


def test_strip_removes_every_key_and_fixes_the_length() -> None:
    body = b"".join(
        [
            chunk(0x0E, b"k1"),
            chunk(1, b"\x02"),
            chunk(0x0E, b""),
            chunk(0x0E, b"k3", vendor=7),  # a vendor's 0x000e is not the auth key
            chunk(0x0F, SIP),
            chunk(0x0E, b"last"),
        ]
    )
    stripped = strip_auth_key(hep3(body, b"EEP3") + b"tail")
    expected_body = chunk(1, b"\x02") + chunk(0x0E, b"k3", vendor=7) + chunk(0x0F, SIP)
    assert stripped == hep3(expected_body, b"EEP3") + b"tail"
    pkt = decode(stripped)
    assert pkt.auth_key is None and pkt.trailing_bytes == 4


def test_strip_of_a_kamailio_packet_equals_encoding_without_the_key() -> None:
    data = kamailio_packet(SIP, correlation_id=b"cid", auth_key=b"myHep")
    assert strip_auth_key(data) == encode_v3(decode(data))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01\x10\x02\x11\x00\x00\x00\x0e", RejectReason.BAD_MAGIC),
        (hep3(chunk(0x0E, b"k"), total=3), RejectReason.BAD_LENGTH),
        (hep3(chunk(0x0E, b"k"), total=100), RejectReason.TRUNCATED),
        (hep3(chunk(0x0E, b"k") + b"\x00\x00"), RejectReason.TRUNCATED),
        (hep3(struct.pack("!HHH", 0, 0x0E, 40) + b"k"), RejectReason.BAD_CHUNK),
    ],
)
def test_strip_refuses_broken_packets(data: bytes, why: RejectReason) -> None:
    with pytest.raises(HepError) as info:
        strip_auth_key(data)
    assert info.value.reason is why
