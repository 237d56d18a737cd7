"""URI extraction and checking (consumers/sip/uri.py, grammar.uri_ok)."""

from __future__ import annotations

import pytest

from consumers.sip import Malformed, parse_uri
from consumers.sip.grammar import uri_ok


def test_full_sip_uri() -> None:
    u = parse_uri(
        "sips:alice:secret@atlanta.example.com:5061;transport=tls;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent"
    )
    assert u.scheme == "sips" and u.is_sip
    assert (u.user, u.password, u.host, u.port) == ("alice", "secret", "atlanta.example.com", 5061)
    assert u.params == {"transport": "tls", "lr": "", "maddr": "239.255.255.1"}
    assert u.transport == "tls" and u.lr
    assert u.headers == {"subject": "project x", "priority": "urgent"}
    assert u.errors == []


def test_host_only_and_ipv4() -> None:
    u = parse_uri("sip:198.51.100.1;lr;ftag=1928301774")
    assert u.user is None and u.host == "198.51.100.1" and u.port is None and u.lr
    assert u.host_port == "198.51.100.1"


def test_ipv6_reference() -> None:
    u = parse_uri("sip:bob@[2001:db8::10]:5070;transport=udp")
    assert (u.host, u.port) == ("[2001:db8::10]", 5070)
    assert u.host_port == "[2001:db8::10]:5070"
    assert parse_uri("sip:[::1]").host == "[::1]"


def test_scheme_is_case_insensitive() -> None:
    u = parse_uri("SIP:Bob@Example.COM")
    assert u.scheme == "sip" and u.user == "Bob" and u.host == "Example.COM"
    assert u.errors == []


def test_user_part_escapes_resolved_once() -> None:
    # RFC 4475 esc01: the user part of the R-URI is itself a URI once unescaped
    assert parse_uri("sip:sips%3Auser%40example.com@example.net").user == "sips:user@example.com"
    u = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert u.user == "caller"
    assert u.params == {"lr": "", "name": "value%41"}  # never recursive
    assert u.lr


def test_escaped_nul_is_kept() -> None:
    # RFC 4475 escnull
    assert parse_uri("sip:null-%00-null@example.com").user == "null-\x00-null"
    assert parse_uri("sip:%00%00@host5.example.com").user == "\x00\x00"


def test_escaped_utf8_user() -> None:
    assert parse_uri("sip:j%C3%BCrgen@example.com").user == "jürgen"


def test_semicolon_in_user_part() -> None:
    # RFC 4475 semiuri: the user part ends at '@', not at ';'
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u@example.net" and u.host == "example.com" and u.params == {}


def test_unusual_user_and_password() -> None:
    # RFC 4475 intmeth
    u = parse_uri(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com" and u.errors == []


def test_tel_uri() -> None:
    u = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert u.scheme == "tel" and u.user == "+1-201-555-0123"
    assert u.params == {"phone-context": "example.com"} and u.errors == []


@pytest.mark.parametrize(
    "raw",
    [
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "soap.beep://192.0.2.103:3002",
        "isbn:2983792873",
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ],
)
def test_other_schemes_are_opaque(raw: str) -> None:
    u = parse_uri(raw)
    assert u.scheme == raw.split(":")[0].lower() and u.opaque == raw.split(":", 1)[1]
    assert u.host == "" and u.errors == []


@pytest.mark.parametrize(
    "raw",
    [
        "sip:bob@exa mple.com",
        "sip:",
        "sip:@host",
        "sip:bob@host:99999",
        "sip:bob@host:port",
        "sip:b%zzob@host",
        "sip:bob@host;",
        "sip:bob@host?",
        "sip:bob@[2001:db8::1",
        "sip:bob@host>",
        "no-colon",
        "1sip:bob@host",
        "tel:",
    ],
)
def test_bad_uris(raw: str) -> None:
    assert parse_uri(raw).errors == [Malformed.BAD_URI]
    assert not uri_ok(raw)


def test_bad_port_gives_no_port() -> None:
    assert parse_uri("sip:bob@host:99999").port is None
    assert parse_uri("sip:bob@host:5060").port == 5060


def test_hash_in_user_accepted_liberally() -> None:
    assert parse_uri("sip:*98#@pbx.example.com").errors == []
