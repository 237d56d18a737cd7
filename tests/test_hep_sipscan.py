"""find_call_id and looks_like_sip: examples, RFC 4475 messages, and a slow reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sharedpath import shared_path

from collector.hep.sipscan import find_call_id, looks_like_sip


def reference_call_id(payload: bytes) -> bytes | None:
    """Line-by-line reading of the header section, written for clarity, not speed."""
    lines = payload.split(b"\n")
    for line in lines[1:]:  # the start line is not a header
        line = line.removesuffix(b"\r")
        if line == b"":
            return None  # end of the header section
        name, colon, value = line.partition(b":")
        if (
            colon
            and name[:1] not in (b" ", b"\t")
            and name.rstrip(b" \t").lower()
            in (
                b"call-id",
                b"i",
            )
        ):
            return value.strip(b" \t") or None
    return None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"INVITE sip:a SIP/2.0\r\nCall-ID: abc@host\r\n\r\n", b"abc@host"),
        (b"INVITE sip:a SIP/2.0\nCall-ID: abc@host\n\n", b"abc@host"),  # bare LF
        (b"INVITE sip:a SIP/2.0\r\nCALL-ID:abc\r\n\r\n", b"abc"),
        (b"INVITE sip:a SIP/2.0\r\ncall-id \t:  abc \t\r\n\r\n", b"abc"),
        (b"INVITE sip:a SIP/2.0\r\ni: compact\r\n\r\n", b"compact"),
        (b"INVITE sip:a SIP/2.0\r\nI :compact\r\n", b"compact"),
        (b"INVITE sip:a SIP/2.0\r\nVia: x\r\nCall-ID: first\r\ni: second\r\n\r\n", b"first"),
        (b"INVITE sip:a SIP/2.0\r\nCall-ID: last-line-no-eol", b"last-line-no-eol"),
        # Only the header section counts: a Call-ID in the body is not the message's.
        (b"INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\nCall-ID: in-body\r\n", None),
        (b"MESSAGE sip:a SIP/2.0\nVia: x\n\ni: in-body\n", None),
        (b"INVITE sip:a SIP/2.0\r\n\r\nCall-ID: x", None),
        # Not a Call-ID header.
        (b"INVITE sip:a SIP/2.0\r\nX-Call-ID: other\r\n\r\n", None),
        (b"INVITE sip:a SIP/2.0\r\nCall-IDs: other\r\n\r\n", None),
        (b"INVITE sip:a SIP/2.0\r\nInfo: x\r\n\r\n", None),
        (b"INVITE sip:a SIP/2.0\r\n Call-ID: folded-continuation\r\n\r\n", None),
        (b"Call-ID: on-the-start-line\r\n\r\n", None),
        (b"INVITE sip:a SIP/2.0\r\nCall-ID:   \r\n\r\n", None),  # empty value
        (b"", None),
    ],
)
def test_find_call_id(payload: bytes, expected: bytes | None) -> None:
    assert find_call_id(payload) == expected
    assert reference_call_id(payload) == expected


header_names = st.sampled_from(
    [b"Call-ID", b"call-id", b"CALL-ID", b"i", b"I", b"Via", b"From", b"X-Call-ID", b"In", b"v"]
)
header_values = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
spaces = st.sampled_from([b"", b" ", b"\t", b"  "])


@st.composite
def sip_like(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = [b"OPTIONS sip:x SIP/2.0"]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(b"")  # the end of the headers (or a second empty line in the body)
        elif kind == 1:
            lines.append(b" " + draw(header_values))  # a continuation line
        else:
            name = draw(header_names)
            lines.append(name + draw(spaces) + b":" + draw(spaces) + draw(header_values))
    return eol.join(lines) + draw(st.sampled_from([b"", eol, eol + eol]))


@settings(max_examples=500)
@given(sip_like())
def test_find_call_id_matches_the_reference(payload: bytes) -> None:
    assert find_call_id(payload) == reference_call_id(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"INVITE sip:bob@example.com SIP/2.0\r\n",
        b"ACK sip:bob@[2001:db8::20]:5061;transport=tls SIP/2.0\r\nVia: x\r\n",
        b"OPTIONS sip:a SIP/2.0\nCall-ID: x\n",
        b"SIP/2.0 200 OK\r\n",
        b"SIP/2.0 100 \r\n",  # empty reason phrase
        b"SIP/2.0 180 Ringing",
        b"sip/2.0 486 Busy Here\r\n",
        b"INVITE  sip:user@example.com  SIP/2.0\r\n",  # RFC 4475 lwsstart
        b"INVITE sip:user@example.com SIP/2.0 \r\n",  # RFC 4475 trws
        b"OPTIONS sip:t.watson@example.org SIP/7.0\r\n",  # RFC 4475 badvers: still SIP
        b"INVITE sip:user@example.com; lr SIP/2.0\r\n",  # RFC 4475 lwsruri
        b"SIP/2.0 4294967301 better not break the receiver\r\n",  # RFC 4475 bigcode
        b"!interesting-Method0123456789_*+`.%indeed'~ sip:x SIP/2.0\r\n",
        b"NOTIFY sip:a SIP/2.0",  # no line end at all
    ],
)
def test_looks_like_sip(payload: bytes) -> None:
    assert looks_like_sip(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\r\n\r\n",  # keep-alive
        b"INVITE sip:bob",  # the spec example's deliberately truncated payload
        b"INVITE sip:alan@jasomi.com\r\nTO : alan@jasomi.com\r\n",  # RFC 4475 test.dat
        b"INVITE SIP/2.0\r\n",  # no Request-URI
        b' {"sender_information":{}}',
        b'{"sender_information":{"ntp_timestamp_sec":3650797214}}',
        b"SYSLOG: Processing OPTIONS request from nodejs",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"SIP/2.0 OK\r\n",
        b"SIP/2.0\r\n",
        b"\x00\x01\x02\x03",
        b" INVITE sip:a SIP/2.0\r\n",
        b"INVITE sip:a SIP/2.0x\r\n",
    ],
)
def test_does_not_look_like_sip(payload: bytes) -> None:
    assert not looks_like_sip(payload)


def test_looks_like_sip_is_linear_on_hostile_input() -> None:
    import time

    for hostile in (b"A " + b" " * 200_000, b"A b" + b" x" * 100_000, b"SIP/2.0 " + b"1" * 200_000):
        start = time.perf_counter()
        assert not looks_like_sip(hostile) or hostile.startswith(b"SIP/")
        assert time.perf_counter() - start < 0.5


def _rfc4475_dir() -> Path | None:
    return shared_path("vectors", "rfc4475")


@pytest.mark.skipif(_rfc4475_dir() is None, reason="shared/vectors/rfc4475 is not present")
def test_rfc4475_messages() -> None:
    folder = _rfc4475_dir()
    assert folder is not None
    for path in sorted(folder.glob("*.dat")):
        msg = path.read_bytes()
        # Every torture message has a SIP start line except test.dat (no SIP-Version).
        assert looks_like_sip(msg) == (path.name != "test.dat"), path.name
        assert find_call_id(msg) == reference_call_id(msg), path.name
    assert find_call_id((folder / "wsinv.dat").read_bytes()) == b"wsinv.ndaksdj@192.0.2.1"
    assert find_call_id((folder / "insuf.dat").read_bytes()) is None  # it has no Call-ID
