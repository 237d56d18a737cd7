"""detectors.wire: two copies said to have the same session-timer headers or body parse to
the same values; copies the cheap check cannot vouch for are answered "not the same"."""

from __future__ import annotations

import random

import pytest

from consumers.detectors.wire import TIMER_HEADERS, head_end, same_body, same_header_lines
from consumers.sip import parse_message

BASE = (
    b"INVITE sip:b@10.0.0.3 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKa1\r\n"
    b"From: <sip:a@example.com>;tag=a1\r\n"
    b"To: <sip:b@example.com>\r\n"
    b"Call-ID: c1@x\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Supported: timer, replaces\r\n"
    b"Session-Expires: 90;refresher=uac\r\n"
    b"Min-SE: 90\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 24\r\n"
    b"\r\n"
    b"v=0\r\no=a 1 1 IN IP4 a\r\n"
)
PROXIED = BASE.replace(
    b"Via: SIP/2.0/UDP 10.0.0.2",
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>\r\nVia: SIP/2.0/UDP 10.0.0.2",
)

EDITS = [
    (b"Session-Expires: 90;refresher=uac", b"Session-Expires: 90;refresher=uas"),
    (b"Session-Expires: 90;refresher=uac", b"x: 90;refresher=uac"),
    (b"Session-Expires: 90;refresher=uac", b"session-expires \t: 90;refresher=uac"),
    (b"Session-Expires: 90;refresher=uac\r\n", b""),
    (b"Min-SE: 90", b"Min-SE: 120"),
    (b"Min-SE: 90", b"MIN-SE:90"),
    (b"Supported: timer, replaces", b"k: replaces"),
    (b"Supported: timer, replaces", b"Supported: timer,\r\n replaces"),
    (b"Supported: timer, replaces", b"Supported: timer, replaces\r"),
    (b"Supported: timer, replaces\r\n", b"Require: timer\r\nSupported: timer, replaces\r\n"),
    (b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\n"),
    (b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\n\r\n"),
    (b"To: <sip:b@example.com>", b"To: <sip:b@example.com>\r"),
    (b"Content-Length: 24", b"Content-Length: 20"),
    (b"Content-Length: 24", b"l: 24"),
    (b"o=a 1 1", b"o=a 1 2"),
    (b"INVITE sip", b"\r\nINVITE sip"),
    (b"\r\n\r\nv=0", b"\n\nv=0"),
    (b"Call-ID: c1@x", b"Call-ID: c1@x\r\nX-Note: Session-Expires: 1"),
]


def _timer_view(raw: bytes) -> tuple[object, ...]:
    m = parse_message(raw)
    return (m.session_expires, m.min_se, m.supported, m.require)


def _mutants(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        raw = rng.choice([BASE, PROXIED])
        for _ in range(rng.randint(0, 3)):
            old, new = rng.choice(EDITS)
            raw = raw.replace(old, new, 1)
        out.append(raw)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_same_means_same_parsed_values(seed: int) -> None:
    msgs = _mutants(seed, 120)
    said_same = said_differ = 0
    for a in msgs:
        for b in msgs[:40]:
            if same_header_lines(a, b, TIMER_HEADERS):
                said_same += 1
                assert _timer_view(a) == _timer_view(b), (a, b)
            else:
                said_differ += 1
            if same_body(a, b):
                assert parse_message(a).body == parse_message(b).body, (a, b)
    assert said_same and said_differ


def test_proxy_copy_with_own_via_and_record_route_is_the_same() -> None:
    assert same_header_lines(BASE, PROXIED, TIMER_HEADERS)
    assert same_body(BASE, PROXIED)


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n" + BASE,  # keep-alive CRLF before the start line
        BASE.replace(b"Min-SE: 90\r\n", b"Min-SE: 90\n"),  # an LF-only line end
        BASE.replace(b"Min-SE: 90", b"Min-SE: 90\r\n 100"),  # folded
        BASE.replace(b"Min-SE: 90", b"Min-SE: 90\r"),  # a stray CR
        BASE.replace(b"\r\n\r\n", b"\r\n"),  # no end of the header section
    ],
)
def test_not_plain_is_never_vouched_for(raw: bytes) -> None:
    assert head_end(raw) == -1
    assert not same_header_lines(raw, raw, TIMER_HEADERS)
    assert not same_body(raw, raw)


def test_differences_are_seen() -> None:
    for old, new in EDITS[:8]:
        other = PROXIED.replace(old, new, 1)
        assert not same_header_lines(BASE, other, TIMER_HEADERS), new
    assert not same_body(BASE, BASE.replace(b"o=a 1 1", b"o=a 1 2"))
    assert not same_body(BASE, BASE.replace(b"Content-Length: 24", b"Content-Length: 20"))
