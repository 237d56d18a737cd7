"""from_hep: a decoded HEP packet to an Observation (addresses as text, node, correlation id)."""

from __future__ import annotations

import socket

import pytest

from collector.hep.model import AF_INET6, HepPacket
from consumers.observation import from_hep


def _pkt(**kw: object) -> HepPacket:
    base: dict[str, object] = {
        "version": 3,
        "src_ip": socket.inet_aton("192.0.2.1"),
        "dst_ip": socket.inet_aton("198.51.100.7"),
        "src_port": 5060,
        "dst_port": 5080,
        "ts_sec": 1_700_000_000,
        "ts_usec": 42,
        "capture_id": 2001,
        "payload": b"OPTIONS sip:x SIP/2.0\r\n\r\n",
    }
    base.update(kw)
    return HepPacket(**base)  # type: ignore[arg-type]


def test_fields() -> None:
    obs = from_hep(_pkt(), "t/0/5", "edge-1")
    assert (obs.src_ip, obs.src_port, obs.dst_ip, obs.dst_port) == (
        "192.0.2.1",
        5060,
        "198.51.100.7",
        5080,
    )
    assert obs.ts_us == 1_700_000_000_000_042
    assert (obs.transport, obs.capture_id, obs.node, obs.correlation_id, obs.ref) == (
        "udp",
        2001,
        "edge-1",
        "",
        "t/0/5",
    )
    assert obs.payload == b"OPTIONS sip:x SIP/2.0\r\n\r\n"


def test_node_and_correlation_from_the_packet() -> None:
    obs = from_hep(_pkt(node_name=b"kam\xff", correlation_id=b"abc"), "r")
    assert obs.node == "kam\ufffd"
    assert obs.correlation_id == "abc"
    assert from_hep(_pkt(), "r").node == "2001"  # no node name: the capture id


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_address_buffers(wrap: type) -> None:
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    # the same packed address twice: the second lookup may come from the cache
    for _ in range(2):
        obs = from_hep(
            _pkt(family=AF_INET6, src_ip=wrap(v6), dst_ip=wrap(socket.inet_aton("10.9.8.7"))),
            "r",
        )
        assert (obs.src_ip, obs.dst_ip) == ("2001:db8::5", "10.9.8.7")


def test_address_of_a_wrong_length_is_empty() -> None:
    obs = from_hep(_pkt(src_ip=b"\x01\x02\x03", dst_ip=b""), "r")
    assert (obs.src_ip, obs.dst_ip) == ("", "")


def test_transport_names() -> None:
    assert from_hep(_pkt(ip_proto=6), "r").transport == "tcp"
    assert from_hep(_pkt(ip_proto=132), "r").transport == "sctp"
    assert from_hep(_pkt(ip_proto=99), "r").transport == "ip99"
