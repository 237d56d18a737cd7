"""Fast paths of the SIP core are equal to the reference parser they shortcut.

- `via.origin_key` (the dedup key's originating Via) against `parse_via`;
- `via.bottom_via_text` against the last value `parse_via_values` parses.
Inputs: Via-shaped values built from fragments, mutated sample Vias, and random text.
"""

from __future__ import annotations

import gc
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.sip.via import bottom_via_text, origin_key, parse_via, parse_via_values

SETTINGS = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VIA_FRAGMENTS = [
    "SIP/2.0/UDP ", "SIP/2.0/TCP", "SIP / 2.0 / UDP ", "SIP/2.0/", "/", " ", "\t", ";", "=",
    ",", '"', "branch", "Branch", "BRANCH", "z9hG4bK", "z9hG4bK776asdhds", "rport", "received",
    "maddr", "ttl", "10.0.0.1", "pc33.example.com", "[2001:db8::1]", "[", "]", ":", ":5060",
    ":05060", ":65536", ":99999999", "a", "\\", "é", "\x00", "\r",
]  # fmt: skip

SAMPLES = [
    "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-1;rport",
    "SIP/2.0/UDP 10.0.0.2:5060;rport=5060;received=10.0.0.2;branch=z9hG4bK-1",
    "SIP/2.0/TCP pc33.example.com;branch=z9hG4bK776asdhds",
    "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx",
    "SIP / 2.0 / UDP host ; branch = z9hG4bKy",
    'SIP/2.0/UDP host;branch="q";x',
]

via_text = st.one_of(
    st.lists(st.sampled_from(VIA_FRAGMENTS), max_size=16).map("".join),
    st.builds(
        lambda base, cut, ins: base[:cut] + ins + base[cut:],
        st.sampled_from(SAMPLES),
        st.integers(0, 80),
        st.sampled_from(VIA_FRAGMENTS),
    ),
    st.text(max_size=60),
)


def _reference(text: str) -> tuple[str, str]:
    via = parse_via(text)
    return (via.branch or "", via.sent_by)


@SETTINGS
@given(via_text)
def test_origin_key_equals_parse_via(text: str) -> None:
    assert origin_key(text) == _reference(text)


def test_origin_key_samples() -> None:
    for text in SAMPLES:
        assert origin_key(text) == _reference(text)
    assert origin_key(SAMPLES[0]) == ("z9hG4bK-1", "10.0.0.2:5060")
    assert origin_key("SIP/2.0/UDP h:05060;BRANCH=b;branch=c") == ("b", "h:5060")
    assert origin_key("SIP/2.0/UDP h:70000;branch=b") == ("b", "h")


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(SAMPLES), via_text), max_size=4))
def test_bottom_via_text_is_the_last_parsed_value(values: list[str]) -> None:
    vias = parse_via_values(values)
    bottom = bottom_via_text(values)
    if not vias:
        assert bottom is None
    else:
        assert bottom is not None
        assert parse_via(bottom).raw == vias[-1].raw


# -- the C header split (consumers.sip._scan) against the Python fast and exact paths --------

import pytest  # noqa: E402
from sipsamples import ALL  # noqa: E402
from test_sip_fuzz import FRAGMENTS, SEEDS, mutated  # noqa: E402

import consumers.sip.framing as framing  # noqa: E402

EAGER = (
    "raw", "start_line", "is_request", "is_response", "method", "request_uri_text", "version",
    "status_code", "reason_phrase", "headers", "body", "content_length", "trailing_bytes",
    "framing_reasons", "malformed_reasons",
)  # fmt: skip


def _python_only(data: bytes) -> object:
    scan = framing._split_headers
    framing._split_headers = None
    try:
        return framing.parse_message(data)
    finally:
        framing._split_headers = scan


def _same(data: bytes) -> None:
    fast = framing.parse_message(data)
    slow = _python_only(data)
    for name in EAGER:
        assert getattr(fast, name) == getattr(slow, name), name


needs_c = pytest.mark.skipif(
    framing._split_headers is None, reason="consumers.sip._scan is not built (no compiler)"
)


@needs_c
def test_c_split_is_used_on_common_messages() -> None:
    for name, data in ALL.items():
        if b"\r\n\r\n" in data and max(data.split(b"\r\n\r\n")[0], default=0) < 0x80:
            assert framing._split_headers(data, 0, framing._NAME_CACHE) is not None, name


@needs_c
def test_c_split_name_table_follows_the_dict() -> None:
    """The C side remembers the names dict's answers; another dict gets its own answers."""
    data = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: a\r\n\r\n"
    assert framing._split_headers(data, 0, framing._NAME_CACHE) is not None
    assert framing._split_headers(data, 0, {}) is None
    other = {"Via": "via", "Call-ID": "call-id"}
    split = framing._split_headers(data, 0, other)
    assert split is not None and split[1] == {"via": ("SIP/2.0/UDP h",), "call-id": ("a",)}
    assert framing._split_headers(data, 0, {"Via": "via"}) is None
    split = framing._split_headers(data, 0, framing._NAME_CACHE)
    assert split is not None and split[1] == {"via": ("SIP/2.0/UDP h",), "call-id": ("a",)}


@needs_c
def test_c_split_headers_are_invisible_to_the_cycle_collector() -> None:
    """Each value tuple, and so the dict, is untracked: a message kept for the life of its
    call adds no container for the collector to rescan. Repeated headers keep their order."""
    data = b"INVITE sip:b@x SIP/2.0\r\nVia: a\r\nCall-ID: c\r\nv: b\r\nVia: d, e\r\n\r\n"
    split = framing._split_headers(data, 0, framing._NAME_CACHE)
    assert split is not None
    headers = split[1]
    assert headers == {"via": ("a", "b", "d, e"), "call-id": ("c",)}
    assert not gc.is_tracked(headers)
    assert not any(gc.is_tracked(values) for values in headers.values())
    msg = framing.parse_message(data)
    assert msg.headers == headers and not gc.is_tracked(msg.headers)


START_LINES = [
    "SIP/2.0 200 OK", "sip/2.0 200 OK", "Sip/2.0 183 Session Progress", "SIP/2.0 200",
    "SIP/2.0 200 ", "SIP/2.0 200  OK", "SIP/2.0  200 OK", "SIP/2.0 2000 x", "SIP/2.0 099 x",
    "SIP/2.0 700 x", "SIP/2.0 699 x", "SIP/2.0 100 Trying", "SIP/2.0 20x OK", "SIP/2.00 200 OK",
    "SIP/2.0 100\t", "SIP/2.0\t200 OK", "SIP/3.0 200 OK", "SIP/", "INVITE sip:a SIP/2.0",
    "INVITE  sip:a SIP/2.0", "invite sip:a SIP/2.0", "FOO sip:a SIP/2.0", "INVITE <sip:a> SIP/2.0",
    "INVITE sip:a sip/2.0", "INVITE sip:a SIP/2.0 ", " INVITE sip:a SIP/2.0", "INVITE sip:a",
    "ACK sip:a;x SIP/2.0", "PUBLISH a\tb SIP/2.0", "INVITE sip:a SIP/2.0x", "BYE  SIP/2.0",
]  # fmt: skip


@needs_c
def test_c_start_line_equals_python() -> None:
    for line in START_LINES:
        data = f"{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: a\r\n\r\n"
        assert framing._split_headers(data.encode(), 0, framing._NAME_CACHE) is not None
        _same(data.encode())


@needs_c
def test_c_split_samples_and_seeds() -> None:
    for data in SEEDS:
        _same(data)
        _same(b"\r\n" + data)


@needs_c
@SETTINGS
@given(mutated())
def test_c_split_mutated(data: bytes) -> None:
    _same(data)


@needs_c
@SETTINGS
@given(
    st.sampled_from(["INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 491 x"]),
    st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join), max_size=25),
    st.binary(max_size=200),
    st.sampled_from(["\r\n", "\n", "\r\n\r\n"]),
)
def test_c_split_sip_shaped(start: str, lines: list[str], body: bytes, eol: str) -> None:
    _same((eol.join([start, *lines]) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body)


@needs_c
@SETTINGS
@given(st.binary(max_size=600))
def test_c_split_random_bytes(data: bytes) -> None:
    _same(data)
    _same(b"SIP/2.0 200 OK\r\nVia: x\r\n" + data)


# -- the dedup key read from the bytes (dedup.fast_key) against the key of the full parse ---

from consumers.dedup import dedup_key, fast_key  # noqa: E402
from consumers.observation import Observation  # noqa: E402


def _obs(data: bytes) -> Observation:
    return Observation(1, "10.0.0.1", 5060, "10.0.0.2", 5062, "udp", 1, "n", "", "r", data)


def _same_key(data: bytes) -> None:
    obs = _obs(data)
    key = fast_key(obs)
    if key is None:
        return
    msg = framing.parse_message(data)
    # only for messages the engine keeps, and then exactly the full parse's key
    assert msg.is_request or msg.is_response
    assert msg.call_id and msg.cseq is not None
    assert key == dedup_key(msg, obs)


@needs_c
def test_fast_key_on_samples_and_seeds() -> None:
    used = 0
    for data in [*ALL.values(), *SEEDS]:
        for variant in (data, b"\r\n" + data, data.replace(b"\r\n", b"\n")):
            _same_key(variant)
        used += fast_key(_obs(data)) is not None
    assert used >= len(ALL) // 2  # the common shapes do take the fast path


@needs_c
def test_fast_key_spellings() -> None:
    base = (
        "{start}\r\n{via}: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp\r\n"
        "{via}: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa1\r\n"
        "{fr}: <sip:a@x>;tag=a1\r\n{to}: <sip:b@x>;tag=b1\r\n{cid}: abc@x\r\n"
        "{cseq}: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    for start in ("INVITE sip:b@x SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 100", "sip/2.0 183 S"):
        for via, to, cid, cseq in (
            ("Via", "To", "Call-ID", "CSeq"),
            ("v", "t", "i", "CSEQ"),
            ("VIA", "TO", "CALL-ID", "cseq"),
            ("V", "T", "I", "Cseq"),
        ):
            data = base.format(start=start, via=via, fr="f", to=to, cid=cid, cseq=cseq).encode()
            assert fast_key(_obs(data)) is not None, (start, via)
            _same_key(data)
    # refused, the full parse decides: uncommon method, name with LWS, folded line, no Via
    for data in (
        b"FOO sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z\r\nCall-ID: a\r\nCSeq: 1 FOO\r\n\r\n",
        b"BYE sip:b@x SIP/2.0\r\nVia : SIP/2.0/UDP h;branch=z\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n",
        b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z\r\nCall-ID: a\r\nCSeq: 1 BYE"
        b"\r\n\r\n",
        b"BYE sip:b@x SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n",
        b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z\r\nCall-ID:\r\nCSeq: 1 BYE\r\n\r\n",
        b"SIP/2.0 99 x\r\nVia: SIP/2.0/UDP h;branch=z\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n",
        b"SIP/2.0 2000 x\r\nVia: SIP/2.0/UDP h;branch=z\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n",
    ):
        assert fast_key(_obs(data)) is None, data


@needs_c
@SETTINGS
@given(mutated())
def test_fast_key_mutated(data: bytes) -> None:
    _same_key(data)


KEY_LINES = [
    "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa1", "v: SIP/2.0/TCP h;branch=b, SIP/2.0/UDP g",
    "Via:", "Via: ,", "Call-ID: x@y", "i: other", "CALL-ID:", "CSeq: 1 INVITE", "cseq: 2 BYE",
    "CSeq: x", "To: <sip:b@x>;tag=t1", "t: \"B\" <sip:b@x>;TAG=t2", "To: sip:b@x;tag=", "Via : x",
    " folded", "\tfolded", "", "Contact: <sip:a@h>", "Max-Forwards: 70", "é: x", "no colon",
]  # fmt: skip


@needs_c
@SETTINGS
@given(
    st.sampled_from(
        [
            "INVITE sip:bob@example.com SIP/2.0",
            "ACK sip:b SIP/2.0",
            "SIP/2.0 200 OK",
            "SIP/2.0 100",
            "SIP/2.0 100 Trying",
            "SIP/2.0 491 x",
            "FOO x SIP/2.0",
            "INVITE <sip:b> SIP/2.0",
            "INVITE  sip:b SIP/2.0",
            "SIP/2.0 200  OK",
        ]
    ),
    st.lists(
        st.one_of(
            st.sampled_from(KEY_LINES),
            st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join),
        ),
        max_size=14,
    ),
    st.sampled_from(["\r\n", "\n"]),
)
def test_fast_key_sip_shaped(start: str, lines: list[str], eol: str) -> None:
    _same_key((eol.join([start, *lines]) + "\r\n\r\n").encode("utf-8", "surrogatepass"))


@needs_c
@SETTINGS
@given(st.binary(max_size=400))
def test_fast_key_random_bytes(data: bytes) -> None:
    _same_key(data)
    _same_key(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n" + data
    )
