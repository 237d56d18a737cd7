"""RFC 4475 torture messages (PROTOCOL.md D, vectors/rfc4475/INDEX.md) through parse_message.

The vectors live outside the project, in ../shared (or $HEPWATCH_SHARED); without them these
tests are skipped. What the parser does with each class:

- 3.1.1 valid (13), 3.2.1 badbranch, 3.4.1 inv2543: structured and not malformed, with the
  traps of INDEX.md checked field by field.
- 3.3 application-layer (15): structured; not malformed, except three this parser flags on
  purpose: insuf (no Call-ID/From/To: missing_*), multi01 (two Call-IDs, CSeqs, Froms, Tos:
  duplicate_header) and mcl01 (two Content-Lengths: content_length_multi, INDEX.md calls it
  invalid framing). A passive observer cannot track a dialog through them, so they count as
  malformed; their fields are still extracted.
- 3.1.2 invalid (19): malformed with the listed reason and `raw` kept. Where RFC 4475 allows
  liberal acceptance the parser still extracts the parts, and still flags the message:
  lwsstart/trws (extra SPs skipped), lwsruri (URI rejoined), ltgtruri (<> stripped), escruri
  (the ?headers are parsed, never applied), baddate (Date kept as text), regbadct, badaspec,
  baddn, quotbal (name-addr recovered; see name_addr.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from sipsamples import touch_everything

from consumers.sip import Malformed, SipMessage, parse_message


def _vector_dir() -> Path | None:
    env = os.environ.get("HEPWATCH_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    path = shared / "vectors" / "rfc4475"
    return path if (path / "INDEX.md").is_file() else None


VECTORS = _vector_dir()
pytestmark = pytest.mark.skipif(
    VECTORS is None,
    reason="RFC 4475 vectors not found: ../shared/vectors/rfc4475 (set HEPWATCH_SHARED)",
)

VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
         "semiuri", "transports", "mpart01", "unreason", "noreason"]  # fmt: skip
APPLICATION = ["insuf", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "multi01",
               "mcl01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01"]  # fmt: skip
FLAGGED_APPLICATION = {
    "insuf": {Malformed.MISSING_CALL_ID, Malformed.MISSING_FROM, Malformed.MISSING_TO},
    "multi01": {Malformed.DUPLICATE_HEADER},
    "mcl01": {Malformed.CONTENT_LENGTH_MULTI},
}
INVALID = {
    "badinv01": {Malformed.BAD_VIA, Malformed.BAD_NAME_ADDR},
    "clerr": {Malformed.TRUNCATED_BODY},
    "ncl": {Malformed.BAD_CONTENT_LENGTH},
    "scalar02": {Malformed.BAD_CSEQ, Malformed.BAD_MAX_FORWARDS, Malformed.BAD_EXPIRES},
    "scalarlg": {Malformed.BAD_CSEQ, Malformed.BAD_RETRY_AFTER, Malformed.BAD_WARNING},
    "quotbal": {Malformed.BAD_NAME_ADDR},
    "ltgtruri": {Malformed.BAD_REQUEST_URI},
    "lwsruri": {Malformed.BAD_START_LINE},
    "lwsstart": {Malformed.BAD_START_LINE},
    "trws": {Malformed.BAD_START_LINE},
    "escruri": {Malformed.BAD_REQUEST_URI},
    "baddate": {Malformed.BAD_DATE},
    "regbadct": {Malformed.BAD_NAME_ADDR},
    "badaspec": {Malformed.BAD_NAME_ADDR},
    "baddn": {Malformed.BAD_NAME_ADDR, Malformed.MISSING_BLANK_LINE},
    "badvers": {Malformed.BAD_VERSION},
    "mismatch01": {Malformed.CSEQ_METHOD_MISMATCH},
    "mismatch02": {Malformed.CSEQ_METHOD_MISMATCH},
    "bigcode": {Malformed.BAD_STATUS_CODE},
}
ACCEPTED = [
    *VALID,
    "badbranch",
    *[n for n in APPLICATION if n not in FLAGGED_APPLICATION],
    "inv2543",
]
KNOWN = {*VALID, *APPLICATION, *INVALID, "badbranch", "inv2543", "test"}


def raw(name: str) -> bytes:
    assert VECTORS is not None
    return (VECTORS / f"{name}.dat").read_bytes()


def load(name: str) -> SipMessage:
    return parse_message(raw(name))


# -- the vector set itself --------------------------------------------------------------------


def test_index_hashes_match_the_files() -> None:
    assert VECTORS is not None
    index = (VECTORS / "INDEX.md").read_text()
    rows = re.findall(r"^\| (\w+)\.dat \|.*\| ([0-9a-f]{16}) \|$", index, re.M)
    assert len(rows) == 50
    for name, digest in rows:
        assert hashlib.sha256(raw(name)).hexdigest()[:16] == digest, name


def test_every_file_is_classified_and_parses_without_raising() -> None:
    assert VECTORS is not None
    names = {p.stem for p in VECTORS.glob("*.dat")}
    assert names == KNOWN
    for name in sorted(names):
        data = raw(name)
        m = parse_message(data)
        assert m.raw == data
        touch_everything(m)
        assert Malformed.PARSER_ERROR not in m.malformed_reasons, name


# -- must parse cleanly ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_messages_are_structured_and_clean(name: str) -> None:
    m = load(name)
    assert not m.malformed, m.malformed_reasons
    assert m.is_request or m.is_response
    assert m.call_id and m.cseq is not None and m.from_ is not None and m.to is not None
    assert m.vias and m.top_via is not None


@pytest.mark.parametrize("name", ACCEPTED)
def test_lf_only_header_section_gives_the_same_message(name: str) -> None:
    data = raw(name)
    end = data.index(b"\r\n\r\n")
    lf = data[:end].replace(b"\r\n", b"\n") + b"\n\n" + data[end + 4 :]
    a, b = parse_message(data), parse_message(lf)
    assert a.headers == b.headers and a.body == b.body and a.start_line == b.start_line
    assert b.malformed_reasons == a.malformed_reasons


def test_wsinv() -> None:
    m = load("wsinv")
    assert (
        m.method == "INVITE"
        and m.request_uri is not None
        and "unknownparam" in m.request_uri.params
    )
    assert m.to is not None and m.to.display_name is None and m.to_tag == "1918181833n"
    assert (
        m.from_ is not None
        and m.from_.display_name == 'J Rosenberg \\"'
        and m.from_tag == "98asjd8"
    )
    assert (
        m.max_forwards == 68
        and m.cseq is not None
        and (m.cseq.number, m.cseq.method) == (9, "INVITE")
    )
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.header("subject") == [""]
    assert m.header("newfangledheader") == ["newfangled value continued newfangled value"]
    assert m.header("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    assert m.route[0].lr and m.route[0].uri.params["unknownwith"] == "value"
    (contact,) = m.contact
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": "", "q": "0.33"}
    assert m.content_length == 150 and m.sdp is not None and len(m.sdp.media) == 2


def test_intmeth() -> None:
    m = load("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method and m.cseq is not None and m.cseq.method == method
    assert m.to is not None and m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_ is not None and m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == "работающий"
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.top_via_branch == "z9hG4bK-.!%66*_+`'~"
    assert m.header("extensionHeader-!.%*+_`'~") == ["\ufeff大停電"]
    assert m.request_uri is not None and m.request_uri.host == "example.com"


def test_esc01_unescapes_where_legal() -> None:
    m = load("esc01")
    assert m.request_uri is not None and m.request_uri.user == "sips:user@example.com"
    assert m.to is not None and m.to.uri.user == "user"
    assert m.from_ is not None and m.from_.uri.user == "I have spaces"
    assert m.contact[0].uri.user == "caller"
    assert m.contact[0].uri.params == {"lr": "", "name": "value%41"}  # not recursive


def test_escnull_keeps_nuls() -> None:
    m = load("escnull")
    assert m.to is not None and m.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in m.contact] == ["\x00", "\x00\x00"]  # two distinct contacts


def test_esc02_percent_is_not_an_escape() -> None:
    m = load("esc02")
    assert m.method == "RE%47IST%45R" and m.method != "REGISTER"
    assert m.cseq is not None and m.cseq.method == "RE%47IST%45R"
    assert m.to is not None and m.to.display_name == "%Z%45"
    assert [c.uri.host for c in m.contact] == ["host1.example.com", "host3.example.com"]
    assert m.header("C%6Fntact") == ["<sip:alias2@host2.example.com>"]  # an unknown header
    assert m.top_via_branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp() -> None:
    m = load("lwsdisp")
    assert m.from_ is not None and m.from_.display_name == "caller"
    assert m.from_.uri_text == "sip:caller@example.com" and m.from_tag == "323"


def test_longreq() -> None:
    data = raw("longreq")
    m = parse_message(data)
    via_lines = len(re.findall(rb"^(?:via|v)[ \t]*:", data, re.I | re.M))
    assert len(m.vias) == via_lines >= 30
    assert m.vias[0].host == "sip33.example.com"
    assert (
        m.to is not None and m.to.display_name is not None and "extremeextreme" in m.to.display_name
    )
    assert m.to.uri.port == 6000 and len(m.to.uri.params) == 3
    assert m.from_tag is not None and len(m.from_tag) > 150
    assert m.call_id is not None and m.call_id.startswith("longreq.onereally")


def test_dblreq_discards_the_trailing_invite() -> None:
    data = raw("dblreq")
    m = parse_message(data)
    assert m.method == "REGISTER" and m.content_length == 0 and m.body == b""
    assert m.trailing_bytes == len(data) - (data.index(b"\r\n\r\n") + 4) > 0
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert m.sdp is None


def test_semiuri() -> None:
    u = load("semiuri").request_uri
    assert u is not None and u.user == "user;par=u@example.net" and u.host == "example.com"
    assert u.params == {}


def test_transports() -> None:
    assert [v.transport for v in load("transports").vias] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]


def test_mpart01_binary_body_with_nuls() -> None:
    m = load("mpart01")
    assert m.content_length == 553 and len(m.body) == 553 and b"\x00" in m.body
    parts = m.body_parts
    assert [p.content_type.mime for p in parts if p.content_type] == [
        "text/plain",
        "application/octet-stream",
    ]
    assert parts[0].content == b"Hello" and b"\x00" in parts[1].content
    assert m.sdp is None


def test_unreason_utf8_phrase() -> None:
    m = load("unreason")
    assert m.status_code == 200
    assert m.reason_phrase == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_noreason_empty_phrase() -> None:
    m = load("noreason")
    assert m.status_code == 100 and m.reason_phrase == ""


def test_badbranch_is_just_a_branch() -> None:
    m = load("badbranch")
    assert m.top_via_branch == "z9hG4bK"
    assert m.top_via is not None and not m.top_via.has_rfc3261_branch


def test_inv2543_rfc2543_syntax() -> None:
    data = raw("inv2543")
    m = parse_message(data)
    assert m.top_via is not None and m.top_via.branch is None and m.top_via_branch is None
    assert m.from_tag is None and m.max_forwards is None
    assert m.content_length is None and m.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert m.sdp is not None and m.sdp.media[0].port == 49217
    assert m.record_route[0].uri.params["maddr"] == "ss1.example.com"


# -- application-layer set --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FLAGGED_APPLICATION))
def test_application_messages_this_parser_flags(name: str) -> None:
    m = load(name)
    assert set(m.malformed_reasons) == FLAGGED_APPLICATION[name]
    assert m.method is not None and m.cseq is not None


def test_application_layer_fields() -> None:
    assert load("unkscm").request_uri.scheme == "nobodyknowsthisscheme"  # type: ignore[union-attr]
    assert load("novelsc").request_uri.scheme == "soap.beep"  # type: ignore[union-attr]
    unksm2 = load("unksm2")
    assert unksm2.to is not None and unksm2.to.uri.scheme == "isbn"
    assert unksm2.from_ is not None and unksm2.from_.uri.scheme == "http"
    assert unksm2.contact[0].uri.scheme == "name"
    bext01 = load("bext01")
    assert bext01.require == frozenset({"nothingsupportsthis", "nothingsupportsthiseither"})
    assert bext01.proxy_require == frozenset({"noproxiessupportthis", "nordoanyproxiessupportthis"})
    invut = load("invut")
    assert invut.content_type is not None and invut.content_type.mime == "application/unknownformat"
    assert invut.sdp is None
    assert load("regaut01").header("authorization") == ["NoOneKnowsThisScheme opaque-data=here"]
    assert [v.host for v in load("bcast").vias] == ["192.0.2.198", "255.255.255.255"]
    assert load("zeromf").max_forwards == 0
    cparam01, cparam02 = load("cparam01").contact[0], load("cparam02").contact[0]
    assert cparam01.params == {"unknownparam": ""} and cparam01.uri.params == {}
    assert cparam02.params == {} and cparam02.uri.params == {"unknownparam": ""}
    assert load("regescrt").contact[0].uri.headers == {"Route": "<sip:sip.example.com>"}
    sdp01 = load("sdp01")
    assert sdp01.header("accept") == ["text/nobodyKnowsThis"] and sdp01.sdp is not None
    insuf = load("insuf")
    assert insuf.call_id is None and insuf.from_ is None and insuf.sdp is not None
    multi01 = load("multi01")
    assert multi01.call_id == "multi01.98asdh@192.0.2.1" and len(multi01.header("call-id")) == 2
    mcl01 = load("mcl01")
    assert mcl01.content_length is None and mcl01.body.startswith(b"There's no way")


# -- invalid set ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_flagged_with_their_reason(name: str) -> None:
    data = raw(name)
    m = parse_message(data)
    assert m.malformed and m.raw == data
    assert set(m.malformed_reasons) == INVALID[name]


def test_liberal_extraction_of_invalid_messages() -> None:
    assert load("ltgtruri").request_uri_text == "sip:user@example.com"
    assert load("lwsruri").request_uri_text == "sip:user@example.com;lr"
    lwsstart = load("lwsstart")
    assert (lwsstart.method, lwsstart.request_uri_text, lwsstart.version) == (
        "INVITE",
        "sip:user@example.com",
        "SIP/2.0",
    )
    assert load("trws").version == "SIP/2.0"
    escruri = load("escruri").request_uri
    assert escruri is not None and escruri.headers == {"Route": "<sip:example.com>"}
    quotbal = load("quotbal").to
    assert quotbal is not None and quotbal.display_name == "Mr. J. User"
    assert quotbal.uri_text == "sip:j.user@example.com"
    baddn = load("baddn").from_
    assert baddn is not None and baddn.display_name == "Bell, Alexander" and baddn.tag == "43"
    badaspec = load("badaspec").to
    assert badaspec is not None and badaspec.uri_text == "sip:t.watson@example.org"
    assert load("regbadct").contact[0].uri.headers == {"Route": "<sip:sip.example.com>"}
    assert load("baddate").header("date") == ["Fri, 01 Jan 2010 16:00:00 EST"]
    clerr = load("clerr")
    assert clerr.content_length == 9999 and len(clerr.body) > 0 and clerr.sdp is not None
    ncl = load("ncl")
    assert ncl.content_length is None and ncl.body.startswith(b"v=0")
    scalar02 = load("scalar02")
    assert scalar02.cseq is None and scalar02.max_forwards is None and scalar02.expires is None
    scalarlg = load("scalarlg")
    assert scalarlg.status_code == 503 and scalarlg.retry_after is None and scalarlg.warning == []
    bigcode = load("bigcode")
    assert bigcode.is_response and bigcode.status_code is None and bigcode.call_id is not None
    badvers = load("badvers")
    assert badvers.version == "SIP/7.0" and badvers.method == "OPTIONS"
    assert load("mismatch02").method == "NEWMETHOD"
