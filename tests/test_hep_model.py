"""`HepPacket` is a compiled plain class, not a dataclass: it keeps a dataclass's
construction (keyword or position, defaults, a new list per packet), equality, repr and
unhashability, and formats its addresses on demand."""

from __future__ import annotations

import pickle
import socket

import pytest

from collector.hep.model import AF_INET6, HepPacket


def test_defaults_and_positional_construction() -> None:
    a, b = HepPacket(3), HepPacket(version=3)
    assert a == b and a.extra_chunks == [] and a.extra_chunks is not b.extra_chunks
    assert (a.family, a.ip_proto, a.src_ip, a.duplicate_chunks) == (2, 17, bytes(4), ())
    values = HepPacket(3, payload=b"x", vlan_id=7).to_tuple()
    assert HepPacket(*values) == HepPacket(3, payload=b"x", vlan_id=7)
    assert len(values) == len(HepPacket.FIELDS) == 20


def test_equality_by_value_repr_and_no_hash() -> None:
    assert HepPacket(3, payload=b"a") != HepPacket(3, payload=b"b")
    assert HepPacket(3) != object() and HepPacket(3).__eq__(object()) is NotImplemented
    assert repr(HepPacket(3)).startswith("HepPacket(version=3, family=2, ip_proto=17,")
    with pytest.raises(TypeError):
        hash(HepPacket(3))


def test_addresses_as_text_and_as_any_buffer() -> None:
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    pkt = HepPacket(3, family=AF_INET6, src_ip=memoryview(v6), dst_ip=bytearray(v6))
    assert pkt.src_ip_text == pkt.dst_ip_text == "2001:db8::5"
    assert HepPacket(3, src_ip=bytes([192, 0, 2, 1])).src_ip_text == "192.0.2.1"
    assert pkt.timestamp_us == 0 and HepPacket(3, ts_sec=2, ts_usec=5).timestamp_us == 2_000_005


def test_pickles() -> None:
    pkt = HepPacket(3, payload=b"INVITE", extra_chunks=[(1, 2, b"v")], duplicate_chunks=(5,))
    assert pickle.loads(pickle.dumps(pkt)) == pkt
