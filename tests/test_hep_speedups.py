"""The C accept path `speedups.scan_v3` and the C decoder `_speedups.decode_v3` against the
Python reference (fast.decode_python, sipscan).

(a) plain packets: scan_v3 accepts them and agrees field by field; (b) anything else (mangled
packets, noise, the shared vectors): scan_v3 may decline, but whatever it accepts Python
accepts with the same result; (c) payload scans on arbitrary bytes equal the Python ones.
"""

from __future__ import annotations

import struct

import pytest
from hepbuild import chunk, frame
from hepvectors import SKIP_REASON, load_hex, mangled_bytes, shared_hep_dir, wire_packets
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from collector.hep.errors import HepError
from collector.hep.fast import _decode_plain as decode_v3
from collector.hep.fast import decode_python as decode
from collector.hep.model import HepPacket
from collector.hep.sipscan import find_call_id, looks_like_sip
from collector.hep.speedups import HAVE_SPEEDUPS, scan_v3

pytestmark = pytest.mark.skipif(
    not HAVE_SPEEDUPS,
    reason="collector.hep._speedups was not built (no C compiler at install time?); "
    "reinstall with `pip install -e .` where a compiler is available",
)

MANY = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


def hep3(chunks: list[bytes], magic: bytes = b"HEP3", trailing: bytes = b"") -> bytes:
    return frame(b"".join(chunks), magic) + trailing


def check_agrees(data: bytes, max_size: int, result: tuple) -> None:
    """`result` (a scan_v3 tuple) must be exactly what the Python path makes of `data`."""
    pkt = decode(data, max_size)  # raises if C accepted what Python rejects
    assert len(result) == 13
    (ts_sec, ts_usec, proto_type, capture_id, ps, pe, a_s, a_e, c_s, c_e, total, call_id, sip) = (
        result
    )
    assert pkt.version == 3
    assert not pkt.compressed
    assert pkt.extra_chunks == []
    assert pkt.duplicate_chunks == ()
    assert (ts_sec, ts_usec, proto_type, capture_id) == (
        pkt.ts_sec,
        pkt.ts_usec,
        pkt.proto_type,
        pkt.capture_id,
    )
    assert 0 <= ps <= pe <= total <= len(data)
    assert data[ps:pe] == pkt.payload
    if pkt.auth_key is None:
        assert (a_s, a_e) == (-1, -1)
    else:
        assert 6 <= a_s <= a_e <= total and data[a_s:a_e] == pkt.auth_key
    if pkt.correlation_id is None:
        assert (c_s, c_e) == (-1, -1)
    else:
        assert 6 <= c_s <= c_e <= total and data[c_s:c_e] == pkt.correlation_id
    assert len(data) - total == pkt.trailing_bytes
    assert call_id == find_call_id(pkt.payload)
    assert type(call_id) in (bytes, type(None))
    assert sip is looks_like_sip(pkt.payload)


# --- SIP-ish payloads --------------------------------------------------------------------------

TOKEN_CHARS = "abcXYZ019.!%*_+`'~-"
start_lines = st.one_of(
    st.sampled_from(
        [
            b"INVITE sip:bob@example.com SIP/2.0",
            b"ACK sip:bob@[2001:db8::20]:5061;transport=tls SIP/2.0",
            b"SIP/2.0 200 OK",
            b"SIP/2.0 100 ",
            b"sip/2.0 486 Busy Here",
            b"SIP/2.0 4294967301 big",
            b"SIP/2.0 OK",
            b"SIP/2.0",
            b"INVITE  sip:user@example.com  SIP/2.0 \t",
            b"OPTIONS sip:x SIP/7.0",
            b"INVITE sip:user@example.com; lr SIP/2.0",
            b"INVITE SIP/2.0",
            b" INVITE sip:a SIP/2.0",
            b"INVITE sip:a SIP/2.0x",
            b"GET / HTTP/1.1",
            b"",
            b'{"json": 1}',
        ]
    ),
    st.builds(
        lambda method, sp1, uri, sp2, version, tail: method + sp1 + uri + sp2 + version + tail,
        st.one_of(
            st.sampled_from([b"INVITE", b"BYE", b"invite", b"", b"A"]),
            st.text(TOKEN_CHARS + " \t/:", max_size=8).map(str.encode),
        ),
        st.sampled_from([b" ", b"  ", b"", b"\t"]),
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b" ", b"  ", b"", b"\t", b" \t "]),
        st.one_of(
            st.sampled_from(
                [b"SIP/2.0", b"sip/2.0", b"SIP/10.23", b"SIP/2.", b"SIP/.0", b"SIP2.0"]
            ),
            st.text("SIPsip/0123456789. ", max_size=9).map(str.encode),
        ),
        st.sampled_from([b"", b" ", b"\t", b"\r", b" \r", b"x"]),
    ),
    st.builds(
        lambda sip, ver, sp, code, tail: sip + ver + sp + code + tail,
        st.sampled_from([b"SIP/", b"sIp/", b"SIP", b"SIP/ "]),
        st.text("0123456789.", max_size=5).map(str.encode),
        st.sampled_from([b" ", b"  ", b"", b"\t"]),
        st.text("0123456789", max_size=5).map(str.encode),
        st.sampled_from([b"", b" ", b"\t", b"\r", b" OK", b"x", b".5"]),
    ),
)
call_id_names = st.sampled_from(
    [
        b"Call-ID",
        b"call-id",
        b"CALL-ID",
        b"cAlL-iD",
        b"i",
        b"I",
        b"Call-Id",
        b"CallID",
        b"Call-",
        b"X-Call-ID",
        b"Call-IDs",
        b"In",
        b"Via",
        b"From",
        b" Call-ID",
        b"\tI",
        b"v",
        b"id",
    ]
)
header_values = st.one_of(
    st.sampled_from([b"a84b4c76e66710@pc33.example.com", b"", b"  ", b"\t x \t", b" a b "]),
    st.binary(max_size=16).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
spaces = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])


@st.composite
def sip_payloads(draw: st.DrawFn) -> bytes:
    """SIP-ish messages: odd Call-ID spellings, compact form, folding, bare LF, empty lines,
    a Call-ID in the body, mixed line ends."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    out = [draw(start_lines)]
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.integers(0, 11))
        sep = eol if draw(st.integers(0, 5)) else draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
        if kind == 0:
            line = b""  # end of the header section (or an empty body line)
        elif kind == 1:
            line = draw(st.sampled_from([b" ", b"\t"])) + draw(header_values)  # folding
        elif kind == 2:
            line = draw(st.binary(max_size=12))  # anything, even more line ends
        else:
            line = draw(call_id_names) + draw(spaces) + b":" + draw(spaces) + draw(header_values)
        out.append(sep + line)
    out.append(draw(st.sampled_from([b"", eol, eol + eol, b"\r", b"\n\r"])))
    return b"".join(out)


interesting_bytes = st.lists(
    st.sampled_from(
        [
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b"i",
            b"I",
            b"call-id",
            b"Call-ID",
            b"CALL-",
            b"SIP/",
            b"sip/",
            b"2.0",
            b"0",
            b"9",
            b".",
            b"INVITE",
            b"x",
            b"\x00",
            b"\xff",
            b"-",
            b"\r\n",
            b"call",
            b"id",
            b"\x0d",
            b"\x09",
            b"\x2d",
        ]
    ),
    max_size=40,
).map(b"".join)
payloads = st.one_of(sip_payloads(), interesting_bytes, st.binary(max_size=80))


# --- plain HEPv3 packets -----------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)


@st.composite
def plain_packets(draw: st.DrawFn) -> tuple[bytes, int]:
    """Valid plain HEPv3 packets (random chunk subset and order) and a max_size they fit."""
    v6 = draw(st.booleans())
    alen = 16 if v6 else 4
    fixed = [
        chunk(1, bytes([draw(st.sampled_from([2, 10, 0, 255]))])),
        chunk(2, bytes([draw(st.integers(0, 255))])),
        chunk(5 if v6 else 3, draw(st.binary(min_size=alen, max_size=alen))),
        chunk(6 if v6 else 4, draw(st.binary(min_size=alen, max_size=alen))),
        chunk(7, struct.pack("!H", draw(st.integers(0, 0xFFFF)))),
        chunk(8, struct.pack("!H", draw(st.integers(0, 0xFFFF)))),
        chunk(9, struct.pack("!I", draw(u32))),
        chunk(10, struct.pack("!I", draw(u32))),
        chunk(11, bytes([draw(st.sampled_from([1, 1, 100, 0, 255]))])),
        chunk(12, struct.pack("!I", draw(u32))),
    ]
    kamailio = draw(st.booleans())  # all ten in Kamailio's order: the Python prefix shortcut
    chunks = fixed if kamailio else [c for c in fixed if draw(st.integers(0, 4))]
    optional = []
    if draw(st.booleans()):
        optional.append(chunk(0x0E, draw(st.binary(max_size=12))))
    if draw(st.booleans()):
        optional.append(chunk(0x11, draw(st.binary(max_size=40))))
    if draw(st.integers(0, 3)) == 0:
        optional.append(chunk(0x13, draw(st.binary(max_size=8))))
    if draw(st.integers(0, 3)) == 0:
        optional.append(chunk(0x12, struct.pack("!H", draw(st.integers(0, 0xFFFF)))))
    optional.append(chunk(0x0F, draw(payloads)))
    if kamailio:
        chunks = chunks + draw(st.permutations(optional))
    else:
        chunks = draw(st.permutations(chunks + optional))
    magic = draw(st.sampled_from([b"HEP3", b"HEP3", b"EEP3"]))
    trailing = draw(st.one_of(st.just(b""), st.binary(max_size=8)))
    data = hep3(chunks, magic, trailing)
    total = len(data) - len(trailing)
    max_size = draw(st.one_of(st.just(65535), st.integers(total, 65535), st.just(total)))
    return data, max_size


@MANY
@given(plain_packets())
def test_plain_packets_are_accepted_and_agree(case: tuple[bytes, int]) -> None:
    data, max_size = case
    result = scan_v3(data, max_size)
    assert result is not None, "scan_v3 declined a plain packet"
    check_agrees(data, max_size, result)


def check_decoded(data: bytes, max_size: int, pkt: HepPacket) -> None:
    """`pkt` (from decode_v3) must be exactly what the Python decoder makes of `data`."""
    want = decode(data, max_size)  # raises if C accepted what Python rejects
    assert type(pkt) is HepPacket
    for name in HepPacket.FIELDS:
        got, expected = getattr(pkt, name), getattr(want, name)
        assert got == expected, name
        assert type(got) is type(expected), name


@MANY
@given(plain_packets())
def test_decode_v3_accepts_plain_packets_and_agrees(case: tuple[bytes, int]) -> None:
    data, max_size = case
    pkt = decode_v3(data, max_size, HepPacket)
    assert pkt is not None, "decode_v3 declined a plain packet"
    check_decoded(data, max_size, pkt)


# --- anything else: decline or agree -----------------------------------------------------------


@st.composite
def mutated_plain(draw: st.DrawFn) -> tuple[bytes, int]:
    data, max_size = draw(plain_packets())
    b = bytearray(data)
    how = draw(
        st.sampled_from(["flip", "cut", "insert", "length", "dup", "max", "type", "payload"])
    )
    if how == "payload":  # overwrite payload bytes: framing intact, the scans see new text
        off = 6
        while struct.unpack_from("!HH", b, off) != (0, 0x0F):
            off += struct.unpack_from("!H", b, off + 4)[0]
        end = off + struct.unpack_from("!H", b, off + 4)[0]
        for _ in range(draw(st.integers(0, 6))):
            if end > off + 6:
                i = draw(st.integers(off + 6, end - 1))
                b[i] = draw(st.sampled_from(b"\r\n \t:iIcC-SIP/0.\x00\xff"))
    elif how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
    elif how == "cut":
        b = b[: draw(st.integers(0, len(b)))]
    elif how == "insert":
        i = draw(st.integers(0, len(b)))
        b[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif how == "length":
        b[4:6] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    elif how == "dup":  # append a copy of one chunk inside the total length
        total = struct.unpack_from("!H", b, 4)[0]
        off, spans = 6, []
        while off < total:
            clen = struct.unpack_from("!H", b, off + 4)[0]
            spans.append(bytes(b[off : off + clen]))
            off += clen
        extra = draw(st.sampled_from(spans))
        b = bytearray(hep3([bytes(b[6:total]), extra], bytes(b[:4]), bytes(b[total:])))
    elif how == "max":
        max_size = draw(st.integers(-2, len(b) + 2))
    elif how == "type":  # retype one chunk header at a chunk boundary
        total = struct.unpack_from("!H", b, 4)[0]
        off, offs = 6, []
        while off < total:
            offs.append(off)
            off += struct.unpack_from("!H", b, off + 4)[0]
        off = draw(st.sampled_from(offs))
        vendor = draw(st.sampled_from([0, 0, 0, 1, 2, 0xFFFF]))
        ctype = draw(st.one_of(st.integers(0, 0x14), st.integers(0, 0xFFFF)))
        b[off : off + 4] = struct.pack("!HH", vendor, ctype)
    return bytes(b), max_size


max_sizes = st.one_of(st.just(65535), st.integers(0, 400), st.integers(-5, 2**70))
anything = st.one_of(
    mutated_plain(),
    mutated_plain(),
    mutated_plain(),
    st.tuples(mangled_bytes(), max_sizes),
    st.tuples(wire_packets.map(lambda w: w.data), max_sizes),
    st.tuples(st.binary(max_size=120), max_sizes),
    st.tuples(
        st.tuples(st.sampled_from([b"HEP3", b"EEP3", b"HEP3\x00", b"EEP"]), st.binary()).map(
            b"".join
        ),
        max_sizes,
    ),
)


def outcome_agrees(data: bytes, max_size: int) -> bool:
    """True if scan_v3 accepted (and agreed), False if it declined."""
    result = scan_v3(data, max_size)
    if result is None:
        return False
    check_agrees(data, max_size, result)
    return True


@MANY
@given(anything)
@example((b"", 65535))
@example((b"HEP3\x00\x06", 65535))
@example((b"HEP3\x00\x06", 5))
@example((b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x06", 65535))
def test_whatever_scan_v3_accepts_python_accepts_the_same(case: tuple[bytes, int]) -> None:
    data, max_size = case
    try:
        event("C accepted" if outcome_agrees(data, max_size) else "C declined")
    except HepError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"scan_v3 accepted what fast.decode rejects: {exc}")


@MANY
@given(anything)
@example((b"HEP3\x00\x06", 65535))
@example((b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x06", 65535))
def test_whatever_decode_v3_accepts_python_accepts_the_same(case: tuple[bytes, int]) -> None:
    data, max_size = case
    pkt = decode_v3(data, max_size, HepPacket)
    event("C accepted" if pkt is not None else "C declined")
    if pkt is not None:
        check_decoded(data, max_size, pkt)


def test_shared_vectors() -> None:
    directory = shared_hep_dir()
    if directory is None:
        pytest.skip(SKIP_REASON)
    accepted = []
    for path in sorted(directory.glob("*.hex")):
        data = load_hex(path)
        records = [data]
        if "stream" in path.name:  # two packets back to back
            n = struct.unpack_from("!H", data, 4)[0]
            records += [data[:n], data[n:]]
        for rec in records:
            for max_size in (65535, len(rec), len(rec) - 1, 6):
                if outcome_agrees(rec, max_size) and max_size == 65535:
                    accepted.append(path.name)
                pkt = decode_v3(rec, max_size, HepPacket)
                if pkt is not None:
                    check_decoded(rec, max_size, pkt)
    # The Kamailio-style vectors are plain and must take the C path.
    assert "synthetic_kamailio_style_hep3_ipv4.hex" in accepted
    assert "synthetic_kamailio_style_hep3_ipv6_tls.hex" in accepted


# --- payload scans -----------------------------------------------------------------------------


def wrap(payload: bytes) -> bytes:
    return hep3([chunk(11, b"\x01"), chunk(0x0F, payload)])


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(payloads, st.binary(max_size=300), interesting_bytes))
@example(b"INVITE sip:a SIP/2.0\n\ni: x")
@example(b"INVITE sip:a SIP/2.0\r\n\r\ni: x")
@example(b"\n\ni: x")
@example(b"\ni: x")
@example(b"\n\r\ni: x")
@example(b"x\ni\r:")
@example(b"x\ncall-id:")
@example(b"x\ncall-i")
@example(b"x\n\rcall-id: a")
@example(b"x\ncall\rid: a")  # (c | 0x20) == "-" would take CR for "-"
@example(b"SIP/2.0 200")
@example(b"A \n SIP/2.0")
@example(b"A SIP/2.0")
@example(b"A  B SIP/2.0")
def test_payload_scans_equal_python(payload: bytes) -> None:
    data = wrap(payload)
    result = scan_v3(data, 65535)
    assert result is not None
    assert result[11] == find_call_id(payload)
    assert result[12] is looks_like_sip(payload)


# --- examples ----------------------------------------------------------------------------------

INVITE = (
    b"INVITE sip:bob@198.51.100.5:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n"
)
KAMAILIO = [
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
    chunk(0x11, b"corr-1"),
    chunk(0x0E, b"myHep"),
    chunk(0x0F, INVITE),
]


def test_kamailio_packet() -> None:
    data = hep3(KAMAILIO, trailing=b"xy")
    result = scan_v3(data, 65535)
    assert result is not None
    check_agrees(data, 65535, result)
    total = len(data) - 2
    pay = total - len(INVITE)
    auth = pay - 6 - 5
    corr = auth - 6 - 6
    assert result == (
        1700000000,
        250000,
        1,
        2001,
        pay,
        total,
        auth,
        auth + 5,
        corr,
        corr + 6,
        total,
        b"a84b4c76e66710@pc33.example.com",
        True,
    )


def test_defaults_for_absent_chunks() -> None:
    data = hep3([chunk(0x0F, b"hello")], b"EEP3")
    assert scan_v3(data, 65535) == (0, 0, 1, 0, 12, 17, -1, -1, -1, -1, 17, None, False)
    check_agrees(data, 65535, scan_v3(data, 65535))


@pytest.mark.parametrize(
    ("data", "max_size"),
    [
        (b"", 65535),
        (b"HEP3", 65535),
        (b"HEP3\x00\x06", 65535),  # no payload chunk
        (b"HEP2" + hep3(KAMAILIO)[4:], 65535),
        (hep3(KAMAILIO)[:-1], 65535),  # truncated
        (hep3(KAMAILIO), len(hep3(KAMAILIO)) - 1),  # over max_size
        (hep3(KAMAILIO), -1),
        (hep3([*KAMAILIO, chunk(9, b"\x00\x00\x00\x01")]), 65535),  # duplicate
        (hep3([*KAMAILIO, chunk(0x11, b"again")]), 65535),  # duplicate correlation id
        (hep3([*KAMAILIO, chunk(0x0F, b"second")]), 65535),  # two payloads
        (hep3([*KAMAILIO[:-1], chunk(0x10, b"x\x9c\x03\x00\x00\x00\x00\x01")]), 65535),
        (hep3([*KAMAILIO, chunk(0x10, b"")]), 65535),  # 0x000f and 0x0010
        (hep3([*KAMAILIO, chunk(0x0D, b"\x00\x05")]), 65535),  # keep-alive: an extra chunk
        (hep3([*KAMAILIO, chunk(0x20, b"\x00\x05")]), 65535),  # other generic type
        (hep3([*KAMAILIO, chunk(0x0F, b"", vendor=2)]), 65535),  # vendor chunk
        (hep3([*KAMAILIO, chunk(0, b"")]), 65535),  # type 0
        (hep3([*KAMAILIO, chunk(0x12, b"\x00")]), 65535),  # VLAN id of the wrong size
        (hep3([chunk(3, b"\x01\x02\x03"), KAMAILIO[-1]]), 65535),  # address of the wrong size
        (hep3([KAMAILIO[-1], b"\x00\x00\x00\x0b\x00\x05"]), 65535),  # chunk length < 6
        (hep3([KAMAILIO[-1], b"\x00\x00\x00"]), 65535),  # partial chunk header
        (b"\x01\x10\x02\x11" + bytes(12) + INVITE, 65535),  # HEPv1
    ],
)
def test_declines(data: bytes, max_size: int) -> None:
    assert scan_v3(data, max_size) is None


def test_bad_arguments() -> None:
    data = hep3(KAMAILIO)
    with pytest.raises(TypeError):
        scan_v3(bytearray(data), 65535)
    with pytest.raises(TypeError):
        scan_v3(memoryview(data), 65535)
    with pytest.raises(TypeError):
        scan_v3(data)
    with pytest.raises(TypeError):
        scan_v3(data, "65535")
    assert scan_v3(data, 2**100) is not None  # no OverflowError: just "no limit"
    assert scan_v3(data, -(2**100)) is None


def test_bytes_subclass_and_big_packet() -> None:
    class B(bytes):
        pass

    data = B(hep3(KAMAILIO))
    assert scan_v3(data, 65535) is not None
    big = hep3([chunk(0x0F, INVITE + b"x" * (65535 - 12 - len(INVITE)))])
    assert len(big) == 65535
    result = scan_v3(big, 65535)
    assert result is not None and result[5] == 65535
    check_agrees(big, 65535, result)
