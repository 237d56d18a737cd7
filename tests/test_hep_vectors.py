"""Every HEP vector in shared/vectors/hep decodes, with both decoders, to what its comments say."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from hepvectors import (
    SKIP_REASON,
    check_against_expectation,
    load_hex,
    packet_diff,
    read_expectation,
    shared_hep_dir,
)

from collector.hep.declaration import build_declared, parse_declared
from collector.hep.fast import decode, encode_v3, find_call_id, looks_like_sip, strip_auth_key
from collector.hep.model import HepPacket

HEP_DIR = shared_hep_dir()
pytestmark = pytest.mark.skipif(HEP_DIR is None, reason=SKIP_REASON)

STREAM = "synthetic_tcp_stream_two_hep3.hex"
LEGACY = {"heplify_server_hepv1_200ok_options.hex", "synthetic_kamailio_style_hepv2_ipv4.hex"}
DECODERS: dict[str, Callable[[bytes], HepPacket]] = {
    "fast": decode,
    "declared": parse_declared,
}


def _names() -> list[str]:
    return sorted(p.name for p in HEP_DIR.glob("*.hex")) if HEP_DIR else []


def _v3_names() -> list[str]:
    return [n for n in _names() if n not in LEGACY and n != STREAM]


def _vector(name: str) -> bytes:
    assert HEP_DIR is not None
    return load_hex(HEP_DIR / name)


def test_the_vector_set_is_complete() -> None:
    assert len(_v3_names()) == 13 and STREAM in _names() and set(_names()) >= LEGACY


@pytest.mark.parametrize("decoder", DECODERS.values(), ids=DECODERS.keys())
@pytest.mark.parametrize("name", _v3_names())
def test_v3_vector_matches_its_comment_table(name: str, decoder: Callable[[bytes], HepPacket]):
    assert HEP_DIR is not None
    exp = read_expectation(HEP_DIR / name)
    data = _vector(name)
    assert len(data) == exp.buffer_length
    assert data[:4] == exp.magic
    pkt = decoder(data)
    check_against_expectation(pkt, exp)
    # Chunks the table does not list must not have appeared out of nowhere.
    assert pkt.extra_chunks == [] and pkt.duplicate_chunks == ()
    listed = {name for _t, name, _l, _v in exp.chunks}
    if "auth_key" not in listed:
        assert pkt.auth_key is None
    if "correlation_id" not in listed:
        assert pkt.correlation_id is None


@pytest.mark.parametrize("name", _v3_names())
def test_fast_and_declared_agree_on_vector(name: str) -> None:
    data = _vector(name)
    assert not packet_diff(decode(data), parse_declared(data))


@pytest.mark.parametrize("name", _v3_names())
def test_vector_reencodes_to_an_equal_packet(name: str) -> None:
    pkt = decode(_vector(name))
    wire = encode_v3(pkt, include_auth_key=True)
    assert wire == build_declared(pkt, include_auth_key=True)
    again = decode(wire)
    pkt.compressed = False  # the encoder always writes 0x000f
    assert not packet_diff(again, pkt)


def test_kamailio_style_vectors_reencode_byte_for_byte() -> None:
    # Same chunk set and order as siptrace, so the encoder must reproduce the exact bytes.
    for name in (
        "synthetic_kamailio_style_hep3_ipv4.hex",
        "synthetic_kamailio_style_hep3_ipv6_tls.hex",
        "hep3_spec_example.hex",
        "heplify_server_hep3_200ok_options.hex",
    ):
        data = _vector(name)
        assert encode_v3(decode(data), include_auth_key=True) == data, name


def test_heplify_empty_auth_key_is_kept_as_empty_bytes() -> None:
    pkt = decode(_vector("heplify_server_hep3_200ok_options.hex"))
    assert pkt.auth_key == b""
    assert pkt.capture_id == 0


def test_compressed_vector_inflates_to_a_register_over_tcp() -> None:
    pkt = decode(_vector("hep3_compressed_payload_frame0.hex"))
    assert pkt.compressed and pkt.ip_proto == 6
    assert pkt.payload.startswith(b"REGISTER sip:rcs.st SIP/2.0\r\n")
    assert looks_like_sip(pkt.payload)
    assert find_call_id(pkt.payload) == b"8fc0ff7e-9f0feb00-6245ba21@192.168.137.1"


@pytest.mark.parametrize("decoder", DECODERS.values(), ids=DECODERS.keys())
def test_hepv1_vector(decoder: Callable[[bytes], HepPacket]) -> None:
    # Values from the vector's layout comment: 01 10 02 11 13c4 13c4 0a000164 c0a800fe.
    data = _vector("heplify_server_hepv1_200ok_options.hex")
    pkt = decoder(data)
    assert (pkt.version, pkt.family, pkt.ip_proto) == (1, 2, 17)
    assert (pkt.src_port, pkt.dst_port) == (5060, 5060)
    assert pkt.src_ip == ipaddress.ip_address("10.0.1.100").packed
    assert pkt.dst_ip == ipaddress.ip_address("192.168.0.254").packed
    assert (pkt.ts_sec, pkt.ts_usec, pkt.capture_id) == (0, 0, 0)  # v1 has no time header
    assert pkt.payload == data[16:] and pkt.payload.startswith(b"SIP/2.0 200 OK\r\n")


@pytest.mark.parametrize("decoder", DECODERS.values(), ids=DECODERS.keys())
def test_hepv2_vector(decoder: Callable[[bytes], HepPacket]) -> None:
    # The comment gives the layout; the values are those of its bytes 16..27, read
    # little-endian: 3cf15365 -> 1700000060, 20a10700 -> 500000, d107 -> 2001.
    data = _vector("synthetic_kamailio_style_hepv2_ipv4.hex")
    pkt = decoder(data)
    assert (pkt.version, pkt.family, pkt.ip_proto) == (2, 2, 17)
    assert pkt.src_ip_text == "192.0.2.10" and pkt.dst_ip_text == "198.51.100.5"
    assert (pkt.ts_sec, pkt.ts_usec, pkt.capture_id) == (1700000060, 500000, 2001)
    assert pkt.payload == data[28:] and pkt.payload.startswith(b"BYE sip:bob@192.0.2.20 SIP/2.0")
    assert find_call_id(pkt.payload) == b"cid-0001@192.0.2.10"


def test_two_packet_stream_is_a_concatenation() -> None:
    stream = _vector(STREAM)
    first = _vector("synthetic_kamailio_style_hep3_ipv4.hex")
    second = _vector("synthetic_kamailio_style_hep3_ipv6_tls.hex")
    assert (len(first), len(second)) == (393, 389)
    assert stream == first + second
    for decoder in DECODERS.values():
        assert decoder(stream[:393]) == decoder(first)
        assert decoder(stream[393:]) == decoder(second)
        whole = decoder(stream)  # the second packet is, to a datagram decoder, trailing bytes
        assert whole.trailing_bytes == 389
        assert whole.payload == decoder(first).payload


def test_auth_key_is_stripped_from_the_wireshark_vectors() -> None:
    for path in sorted(Path(HEP_DIR or ".").glob("hep_wireshark_pcap_frame*.hex")):
        data = load_hex(path)
        stripped = strip_auth_key(data)
        assert len(stripped) == len(data) - 11
        before, after = decode(data), decode(stripped)
        assert after.auth_key is None
        before.auth_key = None
        assert after == before
