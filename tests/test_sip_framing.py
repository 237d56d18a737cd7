"""SIP framing: start line, line ends, header split and names, body framing (consumers/sip).

One test per rule of RFC 3261 §7 and §18.3 as digested in PROTOCOL.md B.1.
"""

from __future__ import annotations

import pytest
from sipsamples import CALL_ID, INVITE, OK_200, build, sdp

from consumers.sip import Malformed, parse_message
from consumers.sip.header_names import COMPACT_FORMS

BASIC = [
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>",
    f"Call-ID: {CALL_ID}",
    "CSeq: 1 OPTIONS",
    "Max-Forwards: 70",
]


def options(headers: list[str] | None = None, **kw: object) -> bytes:
    return build("OPTIONS sip:bob@example.com SIP/2.0", BASIC if headers is None else headers, **kw)  # type: ignore[arg-type]


# -- start line -------------------------------------------------------------------------------


def test_request_line() -> None:
    m = parse_message(INVITE)
    assert m.is_request and not m.is_response
    assert m.method == "INVITE"
    assert m.request_uri_text == "sip:bob@biloxi.example.com"
    assert m.version == "SIP/2.0"
    assert m.status_code is None and m.reason_phrase is None
    assert not m.malformed


def test_method_is_case_sensitive_token() -> None:
    m = parse_message(options().replace(b"OPTIONS sip:", b"options sip:", 1))
    assert m.method == "options"
    assert Malformed.CSEQ_METHOD_MISMATCH in m.malformed_reasons  # CSeq says OPTIONS


def test_status_line() -> None:
    m = parse_message(OK_200)
    assert m.is_response and not m.is_request
    assert m.status_code == 200 and m.reason_phrase == "OK"
    assert m.method is None


def test_status_line_reason_phrase_utf8_and_escapes() -> None:
    m = parse_message(build("SIP/2.0 480 Temporärement %41bwesend", BASIC))
    assert m.reason_phrase == "Temporärement %41bwesend"
    assert m.reason_phrase_unescaped == "Temporärement Abwesend"


@pytest.mark.parametrize(
    ("line", "code", "reason"),
    [
        ("SIP/2.0 100 ", 100, None),
        ("SIP/2.0 100", 100, None),  # liberal: SP before an empty phrase missing
        ("SIP/2.0 099 Low", None, Malformed.BAD_STATUS_CODE),
        ("SIP/2.0 700 High", None, Malformed.BAD_STATUS_CODE),
        ("SIP/2.0 2000 Long", None, Malformed.BAD_STATUS_CODE),
        ("SIP/2.0 abc Text", None, Malformed.BAD_STATUS_CODE),
        ("SIP/3.0 200 OK", 200, Malformed.BAD_VERSION),
    ],
)
def test_status_codes(line: str, code: int | None, reason: str | None) -> None:
    m = parse_message(build(line, BASIC))
    assert m.is_response
    assert m.status_code == code
    if reason is None:
        assert not m.malformed, m.malformed_reasons
    else:
        assert reason in m.malformed_reasons


def test_version_is_case_insensitive() -> None:
    m = parse_message(options().replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1))
    assert not m.malformed


@pytest.mark.parametrize(
    "line",
    ["OPTIONS  sip:bob@example.com SIP/2.0", "OPTIONS sip:bob@example.com SIP/2.0 "],
)
def test_extra_spaces_in_request_line_are_flagged_but_structured(line: str) -> None:
    m = parse_message(build(line, BASIC))
    assert m.method == "OPTIONS" and m.request_uri_text == "sip:bob@example.com"
    assert m.malformed_reasons == [Malformed.BAD_START_LINE]


def test_garbage_start_line() -> None:
    m = parse_message(b"hello\r\n\r\n")
    assert not m.is_request and not m.is_response
    assert Malformed.BAD_START_LINE in m.malformed_reasons


def test_non_token_method() -> None:
    m = parse_message(options().replace(b"OPTIONS sip:", b"OPT(ONS sip:", 1))
    assert Malformed.BAD_METHOD in m.malformed_reasons


# -- line ends, keep-alives, folding ----------------------------------------------------------


def test_bare_lf_line_ends() -> None:
    crlf = parse_message(INVITE)
    lf = parse_message(build("INVITE sip:bob@biloxi.example.com SIP/2.0", [], eol=b"\n"))
    assert lf.is_request and lf.method == "INVITE"
    lf_invite = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert lf_invite.headers == crlf.headers
    assert lf_invite.call_id == CALL_ID
    assert lf_invite.top_via_branch == crlf.top_via_branch
    # the SDP lost one octet per line, so Content-Length now overshoots
    assert lf_invite.malformed_reasons == [Malformed.TRUNCATED_BODY]


def test_mixed_line_ends() -> None:
    data = options().replace(b"\r\nTo:", b"\nTo:").replace(b"\r\nCSeq:", b"\nCSeq:")
    m = parse_message(data)
    assert m.to is not None and m.cseq is not None and m.cseq.number == 1
    assert not m.malformed


def test_lf_blank_line_before_a_later_crlf_blank_line() -> None:
    # an LF-only message whose body happens to contain CRLF CRLF
    data = b"\n".join([b"MESSAGE sip:bob@example.com SIP/2.0", *[h.encode() for h in BASIC]])
    data = data.replace(b"OPTIONS", b"MESSAGE") + b"\n\nline1\r\n\r\nline3"
    m = parse_message(data)
    assert m.body == b"line1\r\n\r\nline3"
    assert m.header("cseq") == ["1 MESSAGE"]


def test_leading_crlf_keepalives_ignored() -> None:
    m = parse_message(b"\r\n\r\n" + INVITE)
    assert m.method == "INVITE" and not m.malformed
    assert m.raw == b"\r\n\r\n" + INVITE


def test_only_keepalive() -> None:
    m = parse_message(b"\r\n\r\n")
    assert m.malformed_reasons == [Malformed.EMPTY]
    assert parse_message(b"").malformed_reasons == [Malformed.EMPTY]


def test_folding_is_one_space() -> None:
    headers = [*BASIC, "Subject: first part\r\n  \t second part", "X-Long:\r\n value"]
    m = parse_message(options(headers))
    assert m.header("subject") == ["first part second part"]
    assert m.header("x-long") == ["value"]
    assert not m.malformed


def test_folded_cseq_and_via() -> None:
    headers = [
        "Via: SIP/2.0/UDP\r\n 192.0.2.1;branch=\r\n z9hG4bKfold",
        *BASIC[1:4],
        "CSeq: 0009\r\n\tOPTIONS",
    ]
    m = parse_message(options(headers))
    assert m.cseq is not None and (m.cseq.number, m.cseq.method) == (9, "OPTIONS")
    assert m.top_via_branch == "z9hG4bKfold"


def test_fold_of_the_start_line_is_flagged() -> None:
    data = options()
    rest = data[data.index(b"\r\n") + 2 :]
    m = parse_message(b"OPTIONS sip:bob@example.com SIP/2.0\r\n continued\r\n" + rest)
    assert m.malformed_reasons == [Malformed.BAD_HEADER_LINE]
    assert m.start_line == "OPTIONS sip:bob@example.com SIP/2.0" and m.call_id == CALL_ID


# -- header names -----------------------------------------------------------------------------


def test_whitespace_around_colon_and_case_insensitive_names() -> None:
    headers = [
        "vIA  :SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa",
        "FROM: <sip:a@example.com>;tag=1",
        "to\t: <sip:b@example.com>",
        "CALL-ID :   abc@host  ",
        "cseq: 5 OPTIONS",
    ]
    m = parse_message(options(headers))
    assert m.call_id == "abc@host"
    assert m.top_via_branch == "z9hG4bKa"
    assert m.to is not None and m.to.uri_text == "sip:b@example.com"
    assert set(m.headers) >= {"via", "from", "to", "call-id", "cseq"}
    assert not m.malformed


@pytest.mark.parametrize(("short", "full"), sorted(COMPACT_FORMS.items()))
def test_every_compact_form_maps_to_its_full_name(short: str, full: str) -> None:
    for spelling in (short, short.upper()):
        m = parse_message(options([*BASIC, f"{spelling}: value-{short}"]))
        assert f"value-{short}" in m.header(full)
        assert f"value-{short}" in m.header(short)  # lookups accept the compact name too


def test_compact_table_is_the_protocol_table() -> None:
    assert COMPACT_FORMS == {
        "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
        "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
        "v": "via", "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
        "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
        "d": "request-disposition", "y": "identity", "n": "identity-info",
    }  # fmt: skip


def test_compact_forms_in_a_message() -> None:
    data = build(
        "INVITE sip:bob@example.com SIP/2.0",
        [
            "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc",
            "f: <sip:a@example.com>;tag=9",
            "t: <sip:b@example.com>",
            "i: compact@host",
            "CSeq: 1 INVITE",
            "m: <sip:a@192.0.2.1>",
            "k: timer",
            "x: 1800;refresher=uac",
            "o: refer",
            "r: <sip:c@example.com>",
            "c: application/sdp",
        ],
        sdp(),
        content_length=None,
    )
    data = data.replace(b"\r\n\r\n", f"\r\nl: {len(sdp())}\r\n\r\n".encode(), 1)
    m = parse_message(data)
    assert m.call_id == "compact@host" and m.from_tag == "9"
    assert m.contact[0].uri_text == "sip:a@192.0.2.1"
    assert m.supported == frozenset({"timer"})
    assert m.session_expires is not None and m.session_expires.refresher == "uac"
    assert m.event is not None and m.event.package == "refer"
    assert m.refer_to is not None and m.refer_to.uri_text == "sip:c@example.com"
    assert m.content_length == len(sdp()) and m.sdp is not None
    assert not m.malformed, m.malformed_reasons


def test_header_line_without_colon_is_flagged() -> None:
    m = parse_message(options([*BASIC, "Garbage line"]))
    assert m.malformed_reasons == [Malformed.BAD_HEADER_LINE]
    assert m.call_id == CALL_ID


def test_header_name_not_a_token() -> None:
    m = parse_message(options([*BASIC, "Bad Name: x"]))
    assert Malformed.BAD_HEADER_LINE in m.malformed_reasons


def test_repeated_headers_keep_order_and_header_accessors() -> None:
    headers = [*BASIC, "X-Thing: one", "x-thing: two, three", 'X-THING: <a,b>, "c,d"']
    m = parse_message(options(headers))
    assert m.header("X-Thing") == ["one", "two, three", '<a,b>, "c,d"']
    assert m.header_first("x-thing") == "one"
    assert m.header_list("x-thing") == ["one", "two", "three", "<a,b>", '"c,d"']
    assert m.header("absent") == [] and m.header_first("absent") is None


# -- body framing -----------------------------------------------------------------------------


def test_content_length_frames_the_body() -> None:
    m = parse_message(INVITE)
    assert m.content_length == len(sdp()) and m.body == sdp().encode()
    assert m.trailing_bytes == 0


def test_bytes_after_content_length_discarded_and_counted() -> None:
    m = parse_message(INVITE + b"garbage after the body")
    assert m.body == sdp().encode()
    assert m.trailing_bytes == len(b"garbage after the body")
    assert not m.malformed
    assert m.raw.endswith(b"garbage after the body")


def test_short_body_is_kept_and_flagged() -> None:
    m = parse_message(INVITE[:-10])
    assert m.body == sdp().encode()[:-10]
    assert m.malformed_reasons == [Malformed.TRUNCATED_BODY]


def test_no_content_length_means_body_to_the_end() -> None:
    m = parse_message(options(content_length=None) + b"body without length")
    assert m.content_length is None and m.content_length_missing
    assert m.body == b"body without length"
    assert not m.malformed


@pytest.mark.parametrize("value", ["-5", "five", "1.5", "99999999999999999999999", ""])
def test_bad_content_length(value: str) -> None:
    m = parse_message(options(content_length=value) + b"abc")
    assert m.content_length is None
    assert m.body == b"abc"  # never repaired
    assert m.malformed_reasons == [Malformed.BAD_CONTENT_LENGTH]


def test_several_content_lengths() -> None:
    m = parse_message(options([*BASIC, "Content-Length: 3"], content_length=1) + b"abc")
    assert m.content_length is None and m.body == b"abc"
    assert m.malformed_reasons == [Malformed.CONTENT_LENGTH_MULTI]


def test_missing_blank_line() -> None:
    m = parse_message(options()[:-4] + b"\r\n")
    assert m.call_id == CALL_ID
    assert Malformed.MISSING_BLANK_LINE in m.malformed_reasons


def test_binary_body_is_untouched() -> None:
    body = bytes(range(256)) * 2
    m = parse_message(options([*BASIC, "Content-Type: application/octet-stream"], body=body))
    assert m.body == body and not m.malformed


# -- bytes that are not UTF-8 -----------------------------------------------------------------


def test_non_utf8_header_bytes_survive_exactly() -> None:
    raw_call_id = b"\xff\xfe-odd\x80@host"
    data = options().replace(CALL_ID.encode(), raw_call_id)
    m = parse_message(data)
    assert m.call_id_bytes == raw_call_id
    assert m.call_id is not None and m.call_id.encode("utf-8", "surrogateescape") == raw_call_id
    assert m.raw == data


def test_utf8_display_name_decodes() -> None:
    m = parse_message(options().replace(b"From: <", 'From: "Jürgen Groß" <'.encode()))
    assert m.from_ is not None and m.from_.display_name == "Jürgen Groß"


# -- reason codes and memo tables ---------------------------------------------------------------


def test_reason_codes_are_stable_snake_case_and_distinct() -> None:
    from consumers.sip.reasons import SdpMalformed, all_codes

    sip, sdp_codes = all_codes(Malformed), all_codes(SdpMalformed)
    assert len(sip) == len([k for k in vars(Malformed) if k.isupper()])
    assert all(code.replace("_", "").isalnum() and code.islower() for code in sip | sdp_codes)
    assert all(code.startswith("sdp_") for code in sdp_codes) and not sip & sdp_codes
    assert {
        "bad_start_line",
        "bad_header_line",
        "truncated_body",
        "bad_cseq",
        "missing_call_id",
    } <= sip
    assert {"bad_version", "bad_status_code", "bad_uri", "bad_via", "bad_name_addr"} <= sip


def test_framing_reasons_are_the_cheap_subset() -> None:
    m = parse_message(INVITE[:-10])
    assert m.framing_reasons == [Malformed.TRUNCATED_BODY]
    clean_framing = parse_message(options([*BASIC[:1], *BASIC[2:]]))  # no From
    assert clean_framing.framing_reasons == []
    assert clean_framing.malformed_reasons == [Malformed.MISSING_FROM]


def test_memo_tables_do_not_change_results() -> None:
    from consumers.sip.memo import clear_all

    first = [parse_message(INVITE).malformed_reasons, parse_message(OK_200).allow]
    clear_all()
    assert [parse_message(INVITE).malformed_reasons, parse_message(OK_200).allow] == first


def test_memo_tables_are_bounded() -> None:
    from consumers.sip import memo

    t: dict[str, int] = memo.table()
    for i in range(memo.LIMIT + 10):
        memo.remember(t, str(i), i)
    assert len(t) <= memo.LIMIT
    assert memo.remember(t, "x" * (memo.MAX_KEY + 1), 1) == 1 and "x" * (memo.MAX_KEY + 1) not in t
