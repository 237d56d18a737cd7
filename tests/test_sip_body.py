"""Bodies: which SDP counts, multipart splitting (consumers/sip/body.py)."""

from __future__ import annotations

from sipsamples import CALL_ID, build, sdp

from consumers.sip import SipMessage, codecs, parse_message
from consumers.sip.body import split_multipart

HEADERS = [
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>",
    f"Call-ID: {CALL_ID}",
    "CSeq: 1 INVITE",
]
ISUP = b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03"


def invite(content_type: str, body: bytes, *extra: str) -> SipMessage:
    return parse_message(
        build(
            "INVITE sip:bob@example.com SIP/2.0",
            [*HEADERS, f"Content-Type: {content_type}", *extra],
            body,
        )
    )


def multipart(boundary: str, *parts: tuple[list[str], bytes], eol: bytes = b"\r\n") -> bytes:
    out = b"preamble, ignored" + eol
    for headers, content in parts:
        out += b"--" + boundary.encode() + eol
        out += b"".join(h.encode() + eol for h in headers) + eol + content + eol
    return out + b"--" + boundary.encode() + b"--" + eol


def test_plain_sdp_body() -> None:
    m = invite("application/sdp", sdp().encode())
    assert m.sdp is not None and codecs(m.sdp.media[0]) == ["PCMU", "PCMA", "telephone-event"]
    assert m.body_parts == []


def test_no_sdp_for_other_types_or_empty_body() -> None:
    assert invite("text/plain", b"hello").sdp is None
    assert invite("application/sdp", b"").sdp is None
    no_type = parse_message(build("INVITE sip:bob@example.com SIP/2.0", HEADERS, sdp()))
    assert no_type.sdp is None  # a body without Content-Type is not taken as SDP


def test_disposition_other_than_session_is_not_the_session_sdp() -> None:
    assert invite("application/sdp", sdp().encode(), "Content-Disposition: session").sdp is not None
    assert (
        invite("application/sdp", sdp().encode(), "Content-Disposition: early-session").sdp is None
    )


def test_multipart_mixed_with_sdp_and_isup() -> None:
    body = multipart(
        "unique-boundary-1",
        (["Content-Type: application/sdp"], sdp(port=7000).encode()),
        (
            [
                "Content-Type: application/ISUP;version=itu-t92+",
                "Content-Disposition: signal;handling=optional",
            ],
            ISUP,
        ),
    )
    m = invite('multipart/mixed;boundary="unique-boundary-1"', body)
    assert not m.malformed, m.malformed_reasons
    parts = m.body_parts
    assert [p.content_type.mime for p in parts if p.content_type] == [
        "application/sdp",
        "application/isup",
    ]
    assert parts[1].content == ISUP
    assert parts[1].disposition is not None and parts[1].disposition.handling == "optional"
    assert m.sdp is not None and m.sdp.media[0].port == 7000


def test_multipart_skips_non_session_sdp_part() -> None:
    body = multipart(
        "b1",
        (
            ["Content-Type: application/sdp", "Content-Disposition: early-session"],
            sdp(port=1111).encode(),
        ),
        (
            ["Content-Type: application/sdp", "Content-Disposition: session"],
            sdp(port=2222).encode(),
        ),
    )
    m = invite("multipart/mixed;boundary=b1", body)
    assert m.sdp is not None and m.sdp.media[0].port == 2222


def test_nested_multipart_alternative() -> None:
    inner = multipart(
        "inner",
        (["Content-Type: text/plain"], b"no media"),
        (["c: application/sdp"], sdp(port=3333).encode()),
    )
    outer = multipart("outer", (["Content-Type: multipart/alternative; boundary=inner"], inner))
    m = invite("multipart/mixed; boundary=outer", outer)
    assert m.sdp is not None and m.sdp.media[0].port == 3333


def test_multipart_with_lf_line_ends_and_binary_nuls() -> None:
    body = multipart(
        "zz",
        (["Content-Type: application/octet-stream"], b"\x00\x01--zz not a delimiter\x00"),
        (["Content-Type: application/sdp"], sdp(port=4444).replace("\r\n", "\n").encode()),
        eol=b"\n",
    )
    parts, closed = split_multipart(body, "zz")
    assert closed and parts[0].content == b"\x00\x01--zz not a delimiter\x00"
    m = invite("multipart/mixed;boundary=zz", body)
    assert m.sdp is not None and m.sdp.media[0].port == 4444


def test_multipart_without_boundary_or_close() -> None:
    assert invite("multipart/mixed", b"--x\r\n\r\nabc").sdp is None
    parts, closed = split_multipart(
        b"--x\r\nContent-Type: application/sdp\r\n\r\n" + sdp().encode(), "x"
    )
    assert not closed and len(parts) == 1 and parts[0].content == sdp().encode()
    assert split_multipart(b"no delimiter here", "x") == ([], False)
    assert split_multipart(b"", "") == ([], False)


def test_part_without_headers() -> None:
    parts, closed = split_multipart(b"--b\r\n\r\nplain\r\n--b--", "b")
    assert closed and parts[0].content == b"plain" and parts[0].content_type is None
