"""Property tests: the fast codec agrees with the construct declaration, always.

(a) On generated valid packets (v1, v2, v3 with random chunk sets, vendor chunks, IPv6,
    compressed payloads) both decoders return the packet the generator built, and both
    encoders write the same bytes for the same HepPacket.
(b) On mangled, truncated and random bytes both decoders either succeed with equal results or
    raise HepError with the same reason; nothing else escapes. The reasons agree exactly
    because both follow the single validation order documented in `collector.hep.spec`.
"""

from __future__ import annotations

import contextlib

import pytest
from hepvectors import (
    WirePacket,
    encodable_packets,
    mangled_bytes,
    packet_diff,
    wire_packets,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector.hep.declaration import build_declared, parse_declared
from collector.hep.errors import HepError
from collector.hep.fast import decode, decode_python, encode_v3, strip_auth_key
from collector.hep.model import HepPacket

# `decode` takes the C path for plain packets when the extension is built; `decode_python`
# is the pure Python decoder (the fallback without a compiler): both must hold everything.
DECODERS = pytest.mark.parametrize("decode", [decode, decode_python], ids=["decode", "python"])

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DECODERS
@PROPERTY
@given(wire_packets)
def test_both_decoders_return_the_generated_packet(decode, w: WirePacket) -> None:
    fast = decode(w.data)
    declared = parse_declared(w.data)
    assert not packet_diff(fast, w.expected)
    assert not packet_diff(declared, w.expected)


@DECODERS
@PROPERTY
@given(encodable_packets(), st.booleans())
def test_encoders_agree_byte_for_byte_and_round_trip(
    decode, pkt: HepPacket, with_key: bool
) -> None:
    wire = encode_v3(pkt, include_auth_key=with_key)
    assert wire == build_declared(pkt, include_auth_key=with_key)
    if not with_key:
        pkt.auth_key = None
    assert not packet_diff(decode(wire), pkt)
    assert not packet_diff(parse_declared(wire), pkt)


@PROPERTY
@given(encodable_packets())
def test_strip_auth_key_equals_encoding_without_it(pkt: HepPacket) -> None:
    with_key = encode_v3(pkt, include_auth_key=True)
    without = encode_v3(pkt)
    assert strip_auth_key(with_key) == without
    stripped_again = strip_auth_key(without)
    assert stripped_again == without


def outcome(decoder: object, data: bytes, max_size: int) -> HepPacket | str:
    try:
        return decoder(data, max_size=max_size)  # type: ignore[operator]
    except HepError as exc:
        return f"HepError({exc.reason.value})"


max_sizes = st.one_of(st.just(65535), st.just(65535), st.integers(0, 400))


@DECODERS
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_bytes(), max_sizes)
@example(b"", 65535)
@example(b"HEP3\x00\x06", 0)
@example(b"HEP3\x00\x0d\x00\x00\x00\x10\x00\x07\x00", 65535)
@example(b"\x02\x28\x0a\x11" + bytes(48), 65535)
def test_mangled_bytes_give_the_same_outcome(decode, data: bytes, max_size: int) -> None:
    fast = outcome(decode, data, max_size)
    declared = outcome(parse_declared, data, max_size)
    if isinstance(fast, HepPacket) and isinstance(declared, HepPacket):
        assert not packet_diff(fast, declared)
    else:
        assert fast == declared


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_hep_error(data: bytes) -> None:
    for decoder in (decode, decode_python, parse_declared):
        with contextlib.suppress(HepError):
            decoder(data)
