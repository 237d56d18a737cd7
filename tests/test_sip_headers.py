"""Structured header values of SipMessage (consumers/sip): one test per rule."""

from __future__ import annotations

import pytest
from sipsamples import CALL_ID, build

from consumers.sip import Malformed, SipMessage, parse_message

BASE = [
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>",
    f"Call-ID: {CALL_ID}",
    "CSeq: 1 INVITE",
]


def msg(*extra: str, base: list[str] | None = None, start: str = "") -> SipMessage:
    headers = [*(BASE if base is None else base), *extra]
    return parse_message(build(start or "INVITE sip:bob@example.com SIP/2.0", headers))


def with_header(name: str, value: str) -> SipMessage:
    base = [h for h in BASE if not h.lower().startswith(name.lower() + ":")]
    return msg(f"{name}: {value}", base=base)


# -- Call-ID and CSeq -------------------------------------------------------------------------


def test_call_id_is_exact() -> None:
    m = with_header("Call-ID", "Ab-Cd.ef@Host")
    assert m.call_id == "Ab-Cd.ef@Host"
    assert m.call_id_bytes == b"Ab-Cd.ef@Host"


def test_call_id_with_space_is_bad() -> None:
    assert Malformed.BAD_CALL_ID in with_header("Call-ID", "a b").malformed_reasons


def test_missing_call_id() -> None:
    m = msg(base=[h for h in BASE if not h.startswith("Call-ID")])
    assert m.call_id is None
    assert Malformed.MISSING_CALL_ID in m.malformed_reasons


@pytest.mark.parametrize(
    ("value", "number", "method"),
    [
        ("1 INVITE", 1, "INVITE"),
        ("0009   INVITE", 9, "INVITE"),
        ("4294967295 INVITE", 2**32 - 1, "INVITE"),
    ],
)
def test_cseq(value: str, number: int, method: str) -> None:
    m = with_header("CSeq", value)
    assert m.cseq is not None and (m.cseq.number, m.cseq.method) == (number, method)
    assert not m.malformed


@pytest.mark.parametrize("value", ["4294967296 INVITE", "INVITE", "1", "x INVITE", "1 INVITE x"])
def test_bad_cseq(value: str) -> None:
    m = with_header("CSeq", value)
    assert m.cseq is None
    assert Malformed.BAD_CSEQ in m.malformed_reasons


def test_cseq_method_case_sensitive_mismatch() -> None:
    m = with_header("CSeq", "1 invite")
    assert m.cseq is not None and m.cseq.method == "invite"
    assert Malformed.CSEQ_METHOD_MISMATCH in m.malformed_reasons


# -- From / To: name-addr variants and tags ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display", "uri", "tag"),
    [
        ("<sip:a@example.com>;tag=x1", None, "sip:a@example.com", "x1"),
        ('"Alice A." <sip:a@example.com>;tag=x1', "Alice A.", "sip:a@example.com", "x1"),
        ("Alice <sip:a@example.com>;tag=x1", "Alice", "sip:a@example.com", "x1"),
        ("Alice Smith <sip:a@example.com>", "Alice Smith", "sip:a@example.com", None),
        ("caller<sip:a@example.com>;tag=x1", "caller", "sip:a@example.com", "x1"),  # no LWS
        ('"Bob \\"B\\" \\\\" <sip:b@example.com>;tag=2', 'Bob "B" \\', "sip:b@example.com", "2"),
        ("sip:a@example.com;tag=x1", None, "sip:a@example.com", "x1"),  # addr-spec
        ("sip:a@example.com ;  tag  =  x1", None, "sip:a@example.com", "x1"),
        ("<sip:a@example.com;transport=tcp>;TAG=Up", None, "sip:a@example.com;transport=tcp", "Up"),
        ('"" <sip:a@example.com>', "", "sip:a@example.com", None),
        ("<tel:+15551234567>;tag=t", None, "tel:+15551234567", "t"),
    ],
)
def test_name_addr_variants(value: str, display: str | None, uri: str, tag: str | None) -> None:
    m = with_header("From", value)
    assert m.from_ is not None
    assert m.from_.display_name == display
    assert m.from_.uri_text == uri
    assert m.from_tag == tag == m.from_.tag
    assert not m.malformed, m.malformed_reasons


def test_to_tag_absent_and_present() -> None:
    assert msg().to_tag is None
    assert with_header("To", "<sip:b@example.com>;tag=abc").to_tag == "abc"


def test_tag_param_inside_uri_is_not_the_tag() -> None:
    m = with_header("To", "<sip:b@example.com;tag=uri-param>")
    assert m.to_tag is None
    assert m.to is not None and m.to.uri.params["tag"] == "uri-param"


def test_quoted_display_name_with_semicolon_and_tag() -> None:
    m = with_header("From", '"a;tag=fake" <sip:a@example.com>;tag=real')
    assert m.from_tag == "real"


def test_header_params_vs_uri_params() -> None:
    # RFC 4475 cparam01 / cparam02: without <> the param belongs to the header
    bare = msg("Contact: sip:a@192.0.2.1;expires=60")
    assert bare.contact[0].params == {"expires": "60"} and bare.contact[0].uri.params == {}
    bracketed = msg("Contact: <sip:a@192.0.2.1;expires=60>")
    assert bracketed.contact[0].params == {} and bracketed.contact[0].uri.params == {
        "expires": "60"
    }


@pytest.mark.parametrize(
    "value",
    [
        '"unterminated <sip:a@example.com>;tag=1',  # quotbal
        "Bell, Alexander <sip:a@example.com>;tag=1",  # baddn
        "< sip:a@example.com >;tag=1",  # badaspec
        "sip:a@example.com?Route=x;tag=1",  # regbadct
        "<sip:a@example.com>;;tag=1",  # badinv01
        '"Joe" sip:a@example.com;tag=1',  # quoted name without <>
    ],
)
def test_bad_name_addr_is_flagged_but_extracted(value: str) -> None:
    m = with_header("From", value)
    assert m.from_ is not None and "a@example.com" in m.from_.uri_text
    assert m.from_tag == "1"
    assert Malformed.BAD_NAME_ADDR in m.malformed_reasons


def test_bad_uri_in_name_addr() -> None:
    m = with_header("To", "<sip:b@exa mple.com>")
    assert Malformed.BAD_URI in m.malformed_reasons


def test_missing_from_and_to() -> None:
    m = msg(base=BASE[:1] + BASE[3:])
    assert m.from_ is None and m.to is None and m.from_tag is None
    assert {Malformed.MISSING_FROM, Malformed.MISSING_TO} <= set(m.malformed_reasons)


# -- Via ----------------------------------------------------------------------------------------


def test_via_fields() -> None:
    m = with_header(
        "Via",
        "SIP/2.0/udp [2001:db8::1]:5062;received=192.0.2.7;rport=5063;branch=z9hG4bKx;ttl=5;x",
    )
    via = m.top_via
    assert via is not None
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "[2001:db8::1]",
        5062,
    )
    assert via.branch == "z9hG4bKx" and via.received == "192.0.2.7"
    assert via.has_rport and via.rport == 5063 and via.ttl == 5
    assert via.other_params == {"x": ""}
    assert via.sent_by == "[2001:db8::1]:5062"
    assert not m.malformed


def test_via_rport_without_value() -> None:
    via = with_header("Via", "SIP/2.0/UDP host;rport;branch=z9hG4bKa").top_via
    assert via is not None and via.has_rport and via.rport is None and via.port is None


def test_comma_joined_vias_on_one_line() -> None:
    # SIPp joins Via values on one line
    m = with_header("Via", "SIP/2.0/UDP p1:5060;branch=z9hG4bK1, SIP/2.0/TCP p2;branch=z9hG4bK2")
    assert [v.host for v in m.vias] == ["p1", "p2"]
    assert [v.transport for v in m.vias] == ["UDP", "TCP"]
    assert m.top_via_branch == "z9hG4bK1"
    assert not m.malformed


def test_multiple_via_headers_keep_order() -> None:
    base = [h for h in BASE if not h.startswith("Via")]
    m = msg(
        "Via: SIP/2.0/UDP p1;branch=z9hG4bK1",
        "v: SIP/2.0/UDP p2;branch=z9hG4bK2, SIP/2.0/UDP p3;branch=z9hG4bK3",
        "VIA: SIP/2.0/UDP p4;branch=z9hG4bK4",
        base=base,
    )
    assert [v.host for v in m.vias] == ["p1", "p2", "p3", "p4"]
    assert m.top_via is not None and m.top_via.host == "p1"


def test_top_via_branch_without_parsing_and_with_odd_spelling() -> None:
    assert with_header("Via", "SIP/2.0/UDP h;BRANCH=z9hG4bKup").top_via_branch == "z9hG4bKup"
    assert with_header("Via", "SIP/2.0/UDP h ; branch = z9hG4bKsp").top_via_branch == "z9hG4bKsp"
    assert with_header("Via", "SIP/2.0/UDP h").top_via_branch is None


def test_via_with_lws_everywhere() -> None:
    m = with_header("Via", "SIP  /   2.0 /UDP    192.0.2.2  :  5060 ;branch=390skdjuw")
    via = m.top_via
    assert via is not None and (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0", "UDP", "192.0.2.2", 5060,
    )  # fmt: skip
    assert not m.malformed


def test_rfc3261_branch_flag() -> None:
    assert with_header("Via", "SIP/2.0/UDP h;branch=z9hG4bKabc").top_via.has_rfc3261_branch  # type: ignore[union-attr]
    assert not with_header("Via", "SIP/2.0/UDP h;branch=z9hG4bK").top_via.has_rfc3261_branch  # type: ignore[union-attr]
    assert not with_header("Via", "SIP/2.0/UDP h;branch=1234").top_via.has_rfc3261_branch  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "SIP/2.0/UDP",
        "SIP/2.0 host;branch=z9hG4bKa",
        "SIP/2.0/UDP host:70000;branch=z9hG4bKa",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;branch=z9hG4bKa,",
    ],
)
def test_bad_via(value: str) -> None:
    assert Malformed.BAD_VIA in with_header("Via", value).malformed_reasons


def test_missing_via() -> None:
    m = msg(base=BASE[1:])
    assert m.vias == [] and m.top_via is None and m.top_via_branch is None
    assert Malformed.MISSING_VIA in m.malformed_reasons


# -- Contact, Route, Record-Route -------------------------------------------------------------


def test_contact_list_with_params() -> None:
    m = msg(
        'Contact: "A" <sip:a@192.0.2.1:5060;transport=tcp>;expires=3600;q=0.7,'
        " <sip:a@[2001:db8::2]>",
        "m: sip:a@192.0.2.3",
    )
    first, second, third = m.contact
    assert first.display_name == "A" and first.expires == 3600 and first.q == 0.7
    assert first.uri.transport == "tcp" and first.uri.port == 5060 and first.uri.user == "a"
    assert second.uri.host == "[2001:db8::2]" and second.expires is None
    assert third.uri_text == "sip:a@192.0.2.3" and not third.bracketed
    assert not m.contact_wildcard
    assert not m.malformed


def test_contact_wildcard() -> None:
    m = parse_message(
        build(
            "REGISTER sip:example.com SIP/2.0",
            [*BASE[:4], "CSeq: 2 REGISTER", "Contact: *", "Expires: 0"],
        )
    )
    assert m.contact_wildcard and m.contact == [] and m.expires == 0
    assert not m.malformed


def test_contact_expires_too_large() -> None:
    m = msg("Contact: <sip:a@h>;expires=280297596632815")
    assert m.contact[0].expires is None
    assert Malformed.BAD_EXPIRES in m.malformed_reasons


def test_record_route_and_route_lr() -> None:
    m = msg(
        "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr;ftag=x>",
        "Record-Route: <sip:p3.example.com>",
        "Route: <sip:198.51.100.1;lr>",
    )
    assert [r.uri.host for r in m.record_route] == [
        "p1.example.com",
        "p2.example.com",
        "p3.example.com",
    ]
    assert [r.lr for r in m.record_route] == [True, True, False]
    assert [r.uri.lr for r in m.route] == [True]
    assert not m.malformed


def test_empty_element_in_route_list() -> None:
    assert Malformed.BAD_NAME_ADDR in msg("Route: <sip:p1;lr>,,<sip:p2;lr>").malformed_reasons


def test_max_forwards_and_expires() -> None:
    assert msg("Max-Forwards: 0068").max_forwards == 68
    bad = msg("Max-Forwards: 256")
    assert bad.max_forwards is None and Malformed.BAD_MAX_FORWARDS in bad.malformed_reasons
    assert msg("Expires: 300").expires == 300
    assert Malformed.BAD_EXPIRES in msg("Expires: 1" + "0" * 40).malformed_reasons


# -- capabilities ---------------------------------------------------------------------------------


def test_allow_absent_empty_listed() -> None:
    assert msg().allow is None  # no information [RFC 3261 §20.5]
    empty = msg("Allow:")
    assert empty.allow == frozenset() and not empty.malformed
    listed = msg("Allow: INVITE, ACK,BYE ,  UPDATE", "Allow: PRACK")
    assert listed.allow == frozenset({"INVITE", "ACK", "BYE", "UPDATE", "PRACK"})


def test_allow_methods_are_exact_tokens() -> None:
    m = msg("Allow: INVITE, update")
    assert m.allow == frozenset({"INVITE", "update"})
    assert "UPDATE" not in m.allow  # case-sensitive [RFC 3311 §7]


def test_option_tags_lower_cased_and_absent_vs_empty() -> None:
    m = msg("Supported: 100REL, Timer", "k: replaces", "Require: 100rel", "Proxy-Require: Foo")
    assert m.supported == frozenset({"100rel", "timer", "replaces"})
    assert m.require == frozenset({"100rel"})
    assert m.proxy_require == frozenset({"foo"})
    assert m.unsupported is None
    assert msg("Supported:").supported == frozenset()
    assert msg("Unsupported: timer").unsupported == frozenset({"timer"})


def test_bad_token_list() -> None:
    assert Malformed.BAD_TOKEN_LIST in msg("Allow: INVITE,,BYE").malformed_reasons
    assert Malformed.BAD_TOKEN_LIST in msg("Supported: 100rel; x").malformed_reasons


# -- session timers, 100rel, retries ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "delta", "refresher"),
    [
        ("1800", 1800, None),
        ("1800;refresher=uac", 1800, "uac"),
        ("90 ; refresher = UAS", 90, "uas"),
        ("4000;refresher=uac;x=y", 4000, "uac"),
    ],
)
def test_session_expires(value: str, delta: int, refresher: str | None) -> None:
    for name in ("Session-Expires", "x"):
        m = msg(f"{name}: {value}")
        assert m.session_expires is not None
        assert (m.session_expires.delta, m.session_expires.refresher) == (delta, refresher)
        assert not m.malformed


@pytest.mark.parametrize("value", ["abc", "1800;refresher=both", "-1", "1800;refresher"])
def test_bad_session_expires(value: str) -> None:
    assert Malformed.BAD_SESSION_EXPIRES in msg(f"Session-Expires: {value}").malformed_reasons


def test_min_se() -> None:
    assert msg("Min-SE: 90").min_se == 90
    assert msg("Min-SE: 1800;lr").min_se == 1800
    bad = msg("Min-SE: ninety")
    assert bad.min_se is None and Malformed.BAD_MIN_SE in bad.malformed_reasons


@pytest.mark.parametrize(
    ("value", "seconds", "comment", "duration"),
    [
        ("5", 5, None, None),
        ("18000;duration=3600", 18000, None, 3600),
        ("120 (I'm in a meeting)", 120, "I'm in a meeting", None),
        ("3 (glare) ;duration=60", 3, "glare", 60),
    ],
)
def test_retry_after(value: str, seconds: int, comment: str | None, duration: int | None) -> None:
    m = parse_message(build("SIP/2.0 500 Server Internal Error", [*BASE, f"Retry-After: {value}"]))
    ra = m.retry_after
    assert ra is not None and (ra.seconds, ra.comment, ra.duration) == (seconds, comment, duration)
    assert not m.malformed


def test_bad_retry_after() -> None:
    m = msg("Retry-After: 949302838503028349304023988")
    assert m.retry_after is None and Malformed.BAD_RETRY_AFTER in m.malformed_reasons


def test_rseq_and_rack() -> None:
    m = parse_message(
        build("SIP/2.0 183 Session Progress", [*BASE, "RSeq: 988789", "Require: 100rel"])
    )
    assert m.rseq == 988789 and m.require == frozenset({"100rel"})
    prack = parse_message(
        build(
            "PRACK sip:bob@example.com SIP/2.0",
            [*BASE[:4], "CSeq: 2 PRACK", "RAck: 988789   1 INVITE"],
        )
    )
    assert prack.rack is not None
    assert (prack.rack.rseq, prack.rack.cseq, prack.rack.method) == (988789, 1, "INVITE")
    assert not prack.malformed


def test_bad_rseq_and_rack() -> None:
    assert Malformed.BAD_RSEQ in msg("RSeq: 0").malformed_reasons
    assert Malformed.BAD_RACK in msg("RAck: 1 INVITE").malformed_reasons


def test_reason_may_repeat() -> None:
    m = msg(
        'Reason: SIP ;cause=580;text="Precondition Failure", Q.850;cause=16',
        'Reason: X.int;text="a, b"',
    )
    assert [(r.protocol, r.cause, r.text) for r in m.reason] == [
        ("SIP", 580, "Precondition Failure"),
        ("Q.850", 16, None),
        ("X.int", None, "a, b"),
    ]
    assert not m.malformed
    assert msg().reason == []
    assert Malformed.BAD_REASON in msg("Reason: SIP;cause=abc").malformed_reasons


def test_warning() -> None:
    m = msg(
        'Warning: 370 devnull "Choose a bigger pipe", 307 isi.edu "Session parameter \\"foo\\""'
    )
    assert [(w.code, w.agent, w.text) for w in m.warning] == [
        (370, "devnull", "Choose a bigger pipe"),
        (307, "isi.edu", 'Session parameter "foo"'),
    ]
    assert not m.malformed
    bad = msg('Warning: 1812 overture "In Progress"')
    assert bad.warning == [] and Malformed.BAD_WARNING in bad.malformed_reasons


# -- content description ----------------------------------------------------------------------


def test_content_type_and_disposition() -> None:
    m = msg(
        "Content-Type: Application/SDP ; charset=UTF-8",
        "Content-Disposition: session;handling=Required",
    )
    assert m.content_type is not None
    assert m.content_type.mime == "application/sdp" and m.content_type.params == {
        "charset": "UTF-8"
    }
    assert m.content_disposition is not None
    assert m.content_disposition.type == "session" and m.content_disposition.handling == "required"
    assert not m.malformed


def test_bad_content_type() -> None:
    m = msg("Content-Type: sdp")
    assert m.content_type is None and Malformed.BAD_CONTENT_TYPE in m.malformed_reasons


def test_user_agent_and_server() -> None:
    m = msg("User-Agent: Foo/1.0 (Linux)", "Server: Bar/2")
    assert m.user_agent == "Foo/1.0 (Linux)" and m.server == "Bar/2"
    assert msg().user_agent is None


def test_date_must_be_gmt() -> None:
    assert not msg("Date: Sat, 13 Nov 2010 23:29:00 GMT").malformed
    assert Malformed.BAD_DATE in msg("Date: Fri, 01 Jan 2010 16:00:00 EST").malformed_reasons


# -- leg correlation --------------------------------------------------------------------------


def test_x_cid() -> None:
    assert msg("X-CID: aleg-call-id@10.0.0.1").x_cid == "aleg-call-id@10.0.0.1"


def test_session_id() -> None:
    local, remote = "ab30317f1a784dc48ff824d0d3715d86", "47755a9de7794ba387653f2099600ef2"
    m = msg(f"Session-ID: {local.upper()};remote={remote}")
    assert m.session_id is not None
    assert (m.session_id.local, m.session_id.remote) == (local, remote)
    assert msg(f"Session-ID: {local}").session_id.remote is None  # type: ignore[union-attr]
    bad = msg("Session-ID: not-a-uuid")
    assert bad.session_id is None and Malformed.BAD_SESSION_ID in bad.malformed_reasons


def test_p_charging_vector() -> None:
    m = msg(
        'P-Charging-Vector: icid-value="AyretyU0dm+6O2IrT5tAFrbHLso=";'
        "icid-generated-at=192.0.6.8;orig-ioi=home1.net"
    )
    pcv = m.p_charging_vector
    assert pcv is not None and pcv.icid_value == "AyretyU0dm+6O2IrT5tAFrbHLso="
    assert pcv.params["icid-generated-at"] == "192.0.6.8" and pcv.orig_ioi == "home1.net"


def test_event_refer_to_replaces() -> None:
    m = msg(
        "Event: refer;id=93809824",
        "Refer-To: <sip:carol@example.com?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        "Replaces: 425928@bobster.example.org;to-tag=7743;from-tag=6472;early-only",
    )
    assert m.event is not None and (m.event.package, m.event.id) == ("refer", "93809824")
    assert m.refer_to is not None
    assert m.refer_to.uri.headers == {"Replaces": "abc@host;to-tag=1;from-tag=2"}
    rep = m.replaces
    assert rep is not None
    assert (rep.call_id, rep.to_tag, rep.from_tag, rep.early_only) == (
        "425928@bobster.example.org", "7743", "6472", True,
    )  # fmt: skip
    assert not m.malformed


def test_absent_optional_headers_are_none() -> None:
    m = msg()
    for name in (
        "session_expires", "min_se", "retry_after", "rseq", "rack", "content_type",
        "content_disposition", "x_cid", "session_id", "p_charging_vector", "event",
        "refer_to", "replaces", "max_forwards", "expires", "user_agent", "server", "sdp",
    ):  # fmt: skip
        assert getattr(m, name) is None, name
    for name in ("contact", "record_route", "route", "reason", "warning", "body_parts"):
        assert getattr(m, name) == [], name


def test_duplicate_single_valued_header() -> None:
    m = msg("Max-Forwards: 70", "Max-Forwards: 69")
    assert m.max_forwards == 70  # the first one is used
    assert Malformed.DUPLICATE_HEADER in m.malformed_reasons


def test_contact_with_quoted_params_and_commas_in_display_names() -> None:
    data = build(
        "REGISTER sip:example.com SIP/2.0",
        [
            *BASE[:1],
            'From: "A, B" <sip:a@example.com>;x="y;tag=z";tag=q',
            *BASE[2:4],
            "CSeq: 1 REGISTER",
            'Contact: "Doe, John" <sip:jd@192.0.2.4>;+sip.instance='
            '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1,'
            ' "x" <sip:x@192.0.2.5>;expires=0',
        ],
    )
    m = parse_message(data)
    first, second = m.contact
    assert first.display_name == "Doe, John"
    assert first.params == {
        "+sip.instance": "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        "reg-id": "1",
    }
    assert second.uri.user == "x" and second.expires == 0
    assert m.from_tag == "q" and m.from_ is not None and m.from_.params["x"] == "y;tag=z"
    assert not m.malformed, m.malformed_reasons


def test_via_received_bare_ipv6() -> None:
    m = with_header("Via", "SIP/2.0/UDP [2001:db8::9]:5060;received=2001:db8::9;branch=z9hG4bKv6")
    assert m.top_via is not None and m.top_via.received == "2001:db8::9"
    assert not m.malformed, m.malformed_reasons
