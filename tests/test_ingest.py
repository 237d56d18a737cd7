"""The accept path: the Kafka record contract, rejections by reason, C and Python paths equal."""

from __future__ import annotations

import pytest
from hepbuild import hep3, hep12, sip_message
from hypothesis import given, settings
from hypothesis import strategies as st

import collector.ingest as ingest_mod
from collector.auth import AuthPolicy
from collector.hep.errors import RejectReason
from collector.hep.fast import decode
from collector.ingest import Ingest, ListenerStats

Record = tuple[bytes | None, bytes, int, list[tuple[str, bytes]]]


def _run(
    packets: list[bytes], auth: AuthPolicy | None = None
) -> tuple[list[Record], ListenerStats]:
    out: list[Record] = []
    ing = Ingest(lambda *rec: out.append(rec), node_name="node-a", auth=auth)
    stats = ListenerStats("udp", "test")
    for p in packets:
        ing.accept(p, "192.0.2.77", 9999, 1_700_000_123_456_789, stats)
    return out, stats


def test_record_contract_for_v3() -> None:
    pkt = hep3(sip_message("abc@host"), ts=(1700000000, 250999))
    [(key, value, ts, headers)], stats = _run([pkt])
    assert key == b"abc@host"
    assert value == pkt
    assert ts == 1700000000250
    assert dict(headers) == {
        "hep.node": b"node-a",
        "hep.received_us": b"1700000123456789",
        "hep.sender": b"192.0.2.77:9999",
        "hep.version": b"3",
    }
    assert stats.accepted == 1 and stats.decoded_by_version[3] == 1


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_are_converted_to_v3(version: int) -> None:
    payload = sip_message(f"legacy-{version}@h")
    [(key, value, ts, headers)], _ = _run([hep12(version, payload)])
    assert key == f"legacy-{version}@h".encode()
    pkt = decode(value)
    assert pkt.version == 3 and pkt.payload == payload and pkt.src_port == 5060
    assert dict(headers)["hep.version"] == str(version).encode()
    if version == 2:
        assert ts == 1700000000250
    else:  # HEPv1 has no capture time: the receive time stands in
        assert ts == 1_700_000_123_456


def test_zero_timestamp_uses_receive_time_and_trailing_bytes_are_cut() -> None:
    pkt = hep3(sip_message("t@h"), ts=(0, 0))
    [(_, value, ts, _)], stats = _run([pkt + b"\x00junk"])
    assert ts == 1_700_000_123_456
    assert value == pkt and stats.trailing_bytes_packets == 1


def test_key_falls_back_to_correlation_id_then_sender() -> None:
    log = hep3(b"a log line", proto_type=100, correlation_id=b"cid-1")
    rtcp = hep3(b"{}", proto_type=5)
    out, _ = _run([log, rtcp])
    assert [r[0] for r in out] == [b"cid-1", b"192.0.2.77:9999"]


def test_rejections_are_counted_by_reason() -> None:
    auth = AuthPolicy({"2001": "k3y"}, ["192.0.2.0/24"])
    good = hep3(sip_message("ok@h"), auth_key=b"k3y")
    packets = [
        b"",
        b"XXXX\x00\x06",
        good[:40],
        hep3(sip_message("nokey@h")),
        hep3(sip_message("bad@h"), auth_key=b"nope"),
        hep3(b"not sip", auth_key=b"k3y"),
        good,
    ]
    out, stats = _run(packets, auth)
    assert [r[0] for r in out] == [b"ok@h"]
    assert b"k3y" not in out[0][1]  # the key never leaves the collector
    assert decode(out[0][1]).auth_key is None
    assert stats.rejected[RejectReason.AUTH] == 2
    assert stats.rejected[RejectReason.NOT_SIP] == 1
    assert stats.rejected[RejectReason.BAD_MAGIC] == 1
    assert stats.rejected[RejectReason.TRUNCATED] == 2
    assert stats.per_sender["192.0.2.77"] == [1, 6]


def test_source_allowlist() -> None:
    out, stats = _run([hep3(sip_message("x@h"))], AuthPolicy({}, ["10.0.0.0/8"]))
    assert out == [] and stats.rejected[RejectReason.AUTH] == 1


@settings(max_examples=300, deadline=None)
@given(
    call_id=st.from_regex(r"[A-Za-z0-9.@_-]{1,40}", fullmatch=True),
    v6=st.booleans(),
    auth=st.booleans(),
    corr=st.none() | st.binary(min_size=1, max_size=20),
    trailing=st.binary(max_size=8),
    compact=st.booleans(),
    proto_type=st.sampled_from([1, 1, 1, 5, 100]),
)
def test_c_and_python_paths_publish_the_same(
    call_id: str,
    v6: bool,
    auth: bool,
    corr: bytes | None,
    trailing: bytes,
    compact: bool,
    proto_type: int,
) -> None:
    payload = sip_message(call_id)
    if compact:
        payload = payload.replace(b"\r\nCall-ID:", b"\r\ni :")
    pkt = (
        hep3(
            payload,
            src="2001:db8::1" if v6 else "192.0.2.1",
            dst="2001:db8::2" if v6 else "192.0.2.2",
            auth_key=b"s" if auth else None,
            correlation_id=corr,
            proto_type=proto_type,
        )
        + trailing
    )
    policy = AuthPolicy({"*": "s"}) if auth else None
    fast = _run([pkt], policy)
    saved, ingest_mod._scan_v3 = ingest_mod._scan_v3, None
    try:
        slow = _run([pkt], policy)
    finally:
        ingest_mod._scan_v3 = saved
    assert fast[0] == slow[0]
    assert fast[1].rejected == slow[1].rejected
