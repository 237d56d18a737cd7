"""Hand-written SIP messages for the parser tests and the benchmark.

A session-modification story between alice (UAC, 192.0.2.10) and bob (UAS, 192.0.2.20)
through a Record-Routing proxy (198.51.100.1): initial INVITE with SDP, 183 with RSeq and
PRACK, 200 OK, re-INVITE hold, UPDATE session refresh, and the failures the detectors look
for (422, 491, 405 with Allow). Lines are written without line ends and joined with CRLF
by `build`, which also computes Content-Length (unless told otherwise).
"""

from __future__ import annotations

CALL_ID = "a84b4c76e66710@pc33.example.com"
ALICE_TAG = "1928301774"
BOB_TAG = "a6c85cf"


def build(
    start: str,
    headers: list[str],
    body: str | bytes = b"",
    *,
    eol: bytes = b"\r\n",
    content_length: int | str | None = "auto",
) -> bytes:
    """Join a start line, header lines and a body into message bytes."""
    body_bytes = body.encode() if isinstance(body, str) else body
    lines = [start, *headers]
    if content_length == "auto":
        lines.append(f"Content-Length: {len(body_bytes)}")
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    head = eol.join(line.encode("utf-8", "surrogateescape") for line in lines)
    return head + eol + eol + body_bytes


def sdp(
    version: int = 1,
    address: str = "192.0.2.10",
    port: int = 49170,
    direction: str | None = "sendrecv",
    codecs: str = "0 8 101",
) -> str:
    lines = [
        "v=0",
        f"o=alice 2890844526 {version} IN IP4 192.0.2.10",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
    ]
    if direction:
        lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def _dialog_headers(cseq: str, to_tag: str | None = BOB_TAG, from_alice: bool = True) -> list[str]:
    alice = f"Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}"
    bob = "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    return [
        f"From: {alice}" if from_alice else f"From: {bob}",
        f"To: {bob}" if from_alice else f"To: {alice}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq}",
    ]


INVITE_HEADERS = [
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK2d4790.1",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;rport=5060;branch=z9hG4bK74bf9",
    "Record-Route: <sip:198.51.100.1;lr;ftag=1928301774>",
    "Max-Forwards: 69",
    *_dialog_headers("314159 INVITE", to_tag=None),
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600",
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO",
    "Supported: 100rel, timer, replaces",
    "Session-Expires: 1800;refresher=uac",
    "Min-SE: 90",
    "User-Agent: ExamplePhone/5.2.1 (build 1142)",
    "X-CID: b2bua-aleg-7781@192.0.2.10",
    "Content-Type: application/sdp",
]

# A typical relayed initial INVITE with an offer (~900 bytes): the benchmark message.
INVITE = build("INVITE sip:bob@biloxi.example.com SIP/2.0", INVITE_HEADERS, sdp())

OK_200 = build(
    "SIP/2.0 200 OK",
    [
        "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK2d4790.1",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;rport=5060;branch=z9hG4bK74bf9",
        "Record-Route: <sip:198.51.100.1;lr;ftag=1928301774>",
        *_dialog_headers("314159 INVITE"),
        "Contact: <sip:bob@192.0.2.20:5060>",
        "Allow: INVITE, ACK, CANCEL, BYE, UPDATE",
        "Supported: timer",
        "Require: timer",
        "Session-Expires: 1800;refresher=uac",
        "Server: ExampleGW/1.0",
        "Content-Type: application/sdp",
    ],
    sdp(version=1, address="192.0.2.20", port=3456, codecs="0 101"),
)

SESSION_PROGRESS_183 = build(
    "SIP/2.0 183 Session Progress",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9",
        *_dialog_headers("314159 INVITE"),
        "Contact: <sip:bob@192.0.2.20:5060>",
        "Require: 100rel",
        "RSeq: 813520",
        "Allow: INVITE, ACK, CANCEL, BYE, PRACK, UPDATE",
        "Content-Type: application/sdp",
    ],
    sdp(version=1, address="192.0.2.20", port=3456, codecs="0 101"),
)

PRACK = build(
    "PRACK sip:bob@192.0.2.20:5060 SIP/2.0",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bfa",
        "Route: <sip:198.51.100.1;lr;ftag=1928301774>",
        "Max-Forwards: 70",
        *_dialog_headers("314160 PRACK"),
        "RAck: 813520 314159 INVITE",
    ],
)

REINVITE_HOLD = build(
    "INVITE sip:bob@192.0.2.20:5060 SIP/2.0",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bfb;rport",
        "Route: <sip:198.51.100.1;lr;ftag=1928301774>",
        "Max-Forwards: 70",
        *_dialog_headers("314161 INVITE"),
        "Contact: <sip:alice@192.0.2.10:5060>",
        "Supported: timer",
        "Session-Expires: 1800;refresher=uac",
        "Content-Type: application/sdp",
    ],
    sdp(version=2, direction="sendonly"),
)

# RFC 2543 style hold: c=0.0.0.0 and no direction attribute.
REINVITE_LEGACY_HOLD = build(
    "INVITE sip:bob@192.0.2.20:5060 SIP/2.0",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bfc",
        *_dialog_headers("314162 INVITE"),
        "Content-Type: application/sdp",
    ],
    sdp(version=3, address="0.0.0.0", direction=None),
)

UPDATE = build(
    "UPDATE sip:bob@192.0.2.20:5060 SIP/2.0",
    [
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK74bfd",
        "Max-Forwards: 70",
        *_dialog_headers("314163 UPDATE"),
        "Contact: <sip:alice@192.0.2.10:5060;transport=tcp>",
        "Supported: timer",
        "x: 1800;refresher=uas",
    ],
)

RESPONSE_422 = build(
    "SIP/2.0 422 Session Interval Too Small",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9",
        *_dialog_headers("314159 INVITE"),
        "Min-SE: 1800",
    ],
)

RESPONSE_491 = build(
    "SIP/2.0 491 Request Pending",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bfb;rport=5060",
        *_dialog_headers("314161 INVITE"),
        "Retry-After: 3 (glare);duration=60",
        'Reason: SIP ;cause=491 ;text="Request Pending", Q.850;cause=16',
    ],
)

RESPONSE_405 = build(
    "SIP/2.0 405 Method Not Allowed",
    [
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK74bfd",
        *_dialog_headers("314163 UPDATE"),
        "Allow: INVITE, ACK, CANCEL, BYE",
        'Warning: 399 gw.biloxi.example.com "UPDATE not supported"',
    ],
)

RESPONSE_500_RETRY = build(
    "SIP/2.0 500 Server Internal Error",
    [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bfb",
        *_dialog_headers("314161 INVITE"),
        "Retry-After: 5",
    ],
)

ALL = {
    "invite": INVITE,
    "ok_200": OK_200,
    "session_progress_183": SESSION_PROGRESS_183,
    "prack": PRACK,
    "reinvite_hold": REINVITE_HOLD,
    "reinvite_legacy_hold": REINVITE_LEGACY_HOLD,
    "update": UPDATE,
    "response_422": RESPONSE_422,
    "response_491": RESPONSE_491,
    "response_405": RESPONSE_405,
    "response_500_retry": RESPONSE_500_RETRY,
}


def touch_everything(message: object) -> None:
    """Read every public accessor of a SipMessage and of the values it returns (tests that
    nothing raises)."""
    from consumers.sip import SipMessage, codecs, effective_direction

    assert isinstance(message, SipMessage)
    m = message
    for name in dir(m):
        if not name.startswith("_") and name not in ("header", "header_first", "header_list"):
            getattr(m, name)
    for name in list(m.headers)[:5]:
        m.header(name), m.header_first(name), m.header_list(name)
    for via in m.vias:
        _ = via.errors, via.branch, via.rport, via.ttl, via.sent_by, via.other_params
        _ = via.has_rfc3261_branch, repr(via)
    for na in [*m.contact, *m.route, *m.record_route, m.from_, m.to, m.refer_to]:
        if na is not None:
            uri = na.uri
            _ = na.errors, na.tag, na.expires, na.q, na.lr, repr(na)
            _ = uri.errors, uri.is_sip, uri.transport, uri.host_port
    if m.request_uri is not None:
        _ = m.request_uri.errors
    for part in m.body_parts:
        _ = part.content_type, part.disposition
    if m.sdp is not None:
        for media in m.sdp.media:
            _ = codecs(media), effective_direction(media), media.legacy_hold, media.payload_types
    repr(m)
