"""The leg summary's shortcuts give exactly what the full parses give.

`setup_record` reads the From/To/Request-URI users, the Allow tokens and the record id
without building NameAddr/Uri objects or hashing part by part; these property tests hold
each shortcut to the reference it replaces (`parse_name_addr(...).uri.user`,
`parse_uri(...).user`, `sorted(allow)`, `record_ids.record_id`).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.legs import summary
from consumers.sip import parse_message
from consumers.sip.name_addr import parse_name_addr
from consumers.sip.uri import parse_uri

PIECES = [
    "sip:", "sips:", "SIP:", "tel:", "mailto:", "urn:x", ":", "@", "%41", "%", "%e9", "%zz",
    "alice", "+4420123", ";", "user=phone", ":5060", "[2001:db8::1]", "example.com", "?", "&",
    "<", ">", '"', "Alice ", " ", "\t", ";tag=abc", ",", "é", "\udcff", "",
]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)


def _reference_user(value: str | None) -> str:
    if value is None:
        return ""
    return parse_name_addr(value).uri.user or ""


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_uri_user_is_parse_uri_user(text: str) -> None:
    summary._URI_USERS.clear()
    assert summary._uri_user(text) == (parse_uri(text).user or "")
    assert summary._uri_user(text) == (parse_uri(text).user or "")  # memoised answer


@settings(max_examples=3000, deadline=None)
@given(texts, st.sampled_from(["From", "f", "To", "t"]))
def test_name_addr_user_is_the_parsed_uri_user(value: str, name: str) -> None:
    raw = (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        f"{name}: {value}\r\n"
        "Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    ).encode("utf-8", "surrogateescape")
    msg = parse_message(raw)
    key = "from" if name in ("From", "f") else "to"
    values = msg.headers.get(key)
    assert summary._name_addr_user(msg, key) == _reference_user(values[0] if values else None)


def test_name_addr_user_cases() -> None:
    msg = parse_message(
        b"INVITE sip:%62ob@example.com SIP/2.0\r\n"
        b'From: "A <x@y>" <sip:al%69ce:pw@example.com>;tag=1\r\n'
        b"To: <tel:+4930123;phone-context=x>\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    assert summary._name_addr_user(msg, "from") == "alice"
    assert summary._name_addr_user(msg, "to") == "+4930123"
    assert summary._uri_user(msg.request_uri_text or "") == "bob"
    bare = parse_message(b"INVITE sip:x@y SIP/2.0\r\nFrom: sip:carol@h;tag=2\r\n\r\n")
    assert summary._name_addr_user(bare, "from") == "carol"
    assert summary._name_addr_user(bare, "to") == ""  # no To at all


def test_tokens_sorted_and_a_fresh_list_each_time() -> None:
    allow = frozenset({"UPDATE", "INVITE", "ACK", "BYE"})
    first = summary._tokens(allow)
    assert first == ["ACK", "BYE", "INVITE", "UPDATE"]
    first.append("X")  # a record's list is its own
    assert summary._tokens(allow) == ["ACK", "BYE", "INVITE", "UPDATE"]
    assert summary._tokens(frozenset()) == []
    assert summary._tokens(None) is None
