"""Property tests: parse_message and every accessor never raise, whatever the bytes.

Inputs: random bytes; random header sections built from SIP-shaped fragments; mutations
(flips, insertions, deletions, truncation, line-end changes, line duplication) of the sample
messages and, when ../shared is present, of the RFC 4475 vectors. A `parser_error` reason
would mean an accessor raised and fell back, so it counts as a failure too. The CRLF fast
path and the exact path (any line ends, folding) must agree on the same header lines.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sharedpath import shared_path
from sipsamples import ALL, touch_everything

from consumers.sip import Malformed, parse_message
from consumers.sip import message as _message

# A compiled parser calls its helpers directly: replacing one in the module reaches only the
# interpreted parser, which `make test` runs these tests against (HEPWATCH_PURE_PYTHON=1).
_interpreted_only = pytest.mark.skipif(
    not _message.__file__.endswith(".py"),
    reason="compiled parser: monkeypatching needs the interpreted one (HEPWATCH_PURE_PYTHON=1)",
)


def _vectors() -> list[bytes]:
    folder = shared_path("vectors", "rfc4475")
    return [p.read_bytes() for p in sorted(folder.glob("*.dat"))] if folder else []


SEEDS = list(ALL.values()) + _vectors()
FRAGMENTS = [
    "Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Route",
    "Record-Route", "Content-Length", "l", "Content-Type", "c", "Allow", "Supported", "k",
    "Require", "Session-Expires", "x", "Min-SE", "Retry-After", "RSeq", "RAck", "Reason",
    "Warning", "Session-ID", "P-Charging-Vector", "Event", "o", "Refer-To", "r", "Replaces",
    "Expires", "Max-Forwards", "Date", "Content-Disposition", "X-CID",
    ":", ": ", " : ", ";", ",", "=", "<", ">", '"', "\\", "%", "%4", "%00", "@", "?", "&", "/",
    " ", "\t", "\r\n", "\n", "\r\n ", "sip:", "sips:", "tel:", "SIP/2.0", "SIP/2.0/UDP",
    "z9hG4bK", "tag", "branch", "rport", "received", "expires", "lr", "refresher", "uac",
    "cause", "text", "duration", "boundary", "INVITE", "UPDATE", "[2001:db8::1]", ":5060",
    "99999999999999999999999", "0", "-1", "application/sdp", "multipart/mixed", "é", "\x00",
    "\xff", "(", ")", "*",
]  # fmt: skip
# SIP_FUZZ_EXAMPLES=20000 for a deeper run
SETTINGS = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check(data: bytes) -> None:
    m = parse_message(data)
    assert m.raw is data
    touch_everything(m)
    assert Malformed.PARSER_ERROR not in m.malformed_reasons
    assert m._parser_errors == 0  # no accessor fell back after validation either
    assert isinstance(m.malformed, bool)
    if m.content_length is not None and Malformed.TRUNCATED_BODY not in m.malformed_reasons:
        assert len(m.body) == m.content_length
    if m.trailing_bytes:
        assert m.raw.endswith(m.body + m.raw[len(m.raw) - m.trailing_bytes :])
    if m.sdp is not None:
        assert "sdp_parser_error" not in m.sdp.malformed_reasons


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    check(data)


@SETTINGS
@given(st.binary(max_size=500).map(lambda b: b"INVITE sip:a@b SIP/2.0\r\n" + b))
def test_random_bytes_after_a_start_line(data: bytes) -> None:
    check(data)


@SETTINGS
@given(
    st.sampled_from(["INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 491 x"]),
    st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join), max_size=25),
    st.binary(max_size=200),
    st.sampled_from(["\r\n", "\n"]),
)
def test_sip_shaped_headers(start: str, lines: list[str], body: bytes, eol: str) -> None:
    head = eol.join([start, *lines]) + eol + eol
    check(head.encode("utf-8", "surrogatepass") + body)


@SETTINGS
@given(
    st.sampled_from(
        ["From", "To", "Contact", "Route", "Via", "Reason", "Session-Expires", "Allow"]
    ),
    st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join),
)
def test_one_odd_header_value(name: str, value: str) -> None:
    base = ALL["ok_200"]
    data = base.replace(
        b"\r\n\r\n", f"\r\n{name}: {value}\r\n\r\n".encode("utf-8", "surrogatepass"), 1
    )
    check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "lf", "dup", "fold"]))
        if kind == "flip":
            data[where] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[where:where] = draw(st.sampled_from(FRAGMENTS)).encode("utf-8", "surrogatepass")
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 20))]
        elif kind == "truncate":
            del data[where:]
        elif kind == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(1, 30))))
        elif kind == "dup":
            start = data.rfind(b"\n", 0, where) + 1
            end = data.find(b"\n", where)
            if end > start:
                data[start:start] = data[start : end + 1]
        else:
            data[where:where] = b"\r\n "
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutations_of_samples_and_vectors(data: bytes) -> None:
    check(data)


def test_seeds_themselves() -> None:
    for data in SEEDS:
        check(data)


@_interpreted_only
def test_an_accessor_bug_is_contained(monkeypatch: object) -> None:
    import consumers.sip.message as message

    def broken(value: str) -> None:
        raise ValueError("bug")

    monkeypatch.setattr(message, "parse_cseq", broken)  # type: ignore[attr-defined]
    m = parse_message(ALL["invite"])
    assert m.cseq is None
    assert m.call_id is not None  # the rest still works
    assert Malformed.PARSER_ERROR in m.malformed_reasons


@_interpreted_only
def test_memory_error_is_not_swallowed(monkeypatch: object) -> None:
    import consumers.sip.message as message

    def exhausted(value: str) -> None:
        raise MemoryError

    monkeypatch.setattr(message, "parse_rseq", exhausted)  # type: ignore[attr-defined]
    with pytest.raises(MemoryError):
        _ = parse_message(ALL["session_progress_183"]).rseq


PLAIN_FRAGMENTS = [f for f in FRAGMENTS if "\r" not in f and "\n" not in f]


@SETTINGS
@given(
    st.lists(
        st.lists(st.sampled_from(PLAIN_FRAGMENTS), min_size=1, max_size=10)
        .map("".join)
        .filter(lambda line: line[:1] not in (" ", "\t")),
        max_size=20,
    ),
    st.binary(max_size=50),
)
def test_crlf_fast_path_equals_lf_exact_path(lines: list[str], body: bytes) -> None:
    head = ["OPTIONS sip:a@example.com SIP/2.0", *lines]
    crlf = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    lf = ("\n".join(head) + "\n\n").encode("utf-8", "surrogatepass") + body
    a, b = parse_message(crlf), parse_message(lf)
    assert a.headers == b.headers
    assert a.start_line == b.start_line and a.body == b.body
    assert a.framing_reasons == b.framing_reasons
