"""SDP parsing (consumers/sip/sdp.py): RFC 4566 lines, RFC 3264 hold/removal signals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sipsamples import sdp

from consumers.sip import SdpMalformed, codecs, effective_direction, parse_sdp
from consumers.sip.sdp import Connection

OFFER = (
    "v=0\r\n"
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
    "s=SDP Seminar\r\n"
    "c=IN IP4 224.2.17.12/127\r\n"
    "b=AS:128\r\n"
    "t=2873397496 2873404696\r\n"
    "a=recvonly\r\n"
    "m=audio 49170 RTP/AVP 0 97 101\r\n"
    "a=rtpmap:97 opus/48000/2\r\n"
    "a=fmtp:97 useinbandfec=1; minptime=10\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=ptime:20\r\n"
    "a=maxptime:40\r\n"
    "m=video 51372/2 RTP/AVP 99\r\n"
    "c=IN IP6 2001:db8::5\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
    "a=sendrecv\r\n"
    "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"
)


def test_session_level() -> None:
    s = parse_sdp(OFFER.encode())
    assert not s.malformed, s.malformed_reasons
    assert s.version == 0
    o = s.origin
    assert o is not None
    assert (o.username, o.session_id, o.version) == ("jdoe", "2890844526", 2890842807)
    assert (o.net_type, o.addr_type, o.address) == ("IN", "IP4", "10.47.16.5")
    assert s.session_name == "SDP Seminar"
    assert s.connection is not None and s.connection.address == "224.2.17.12"
    assert s.connection.raw == "IN IP4 224.2.17.12/127"
    assert s.direction == "recvonly"
    assert s.bandwidth == {"AS": "128"}
    assert s.timing == ["2873397496 2873404696"]


def test_media_lines() -> None:
    audio, video, app = parse_sdp(OFFER.encode()).media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        49170,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ["0", "97", "101"] and audio.payload_types == [0, 97, 101]
    assert (video.port, video.port_count) == (51372, 2)
    assert app.formats == ["webrtc-datachannel"] and app.payload_types == []


def test_rtpmap_fmtp_ptime() -> None:
    audio = parse_sdp(OFFER.encode()).media[0]
    opus = audio.rtpmap["97"]
    assert (opus.encoding, opus.clock_rate, opus.params) == ("opus", 48000, "2")
    assert audio.rtpmap["101"].params is None
    assert audio.fmtp == {"97": "useinbandfec=1; minptime=10"}
    assert (audio.ptime, audio.maxptime) == (20, 40)


def test_codecs_use_rtpmap_then_static_table() -> None:
    audio, video, app = parse_sdp(OFFER.encode()).media
    assert codecs(audio) == ["PCMU", "opus", "telephone-event"]
    assert codecs(video) == ["h263-1998"]
    assert codecs(app) == ["webrtc-datachannel"]
    static = parse_sdp(sdp(codecs="0 8 18 9 3 96").encode()).media[0]
    assert codecs(static)[:5] == ["PCMU", "PCMA", "G729", "G722", "GSM"]
    assert codecs(static)[5] == "96"  # dynamic without rtpmap: the number itself


def test_direction_media_overrides_session_default_sendrecv() -> None:
    audio, video, _ = parse_sdp(OFFER.encode()).media
    assert audio.direction is None and effective_direction(audio) == "recvonly"  # session level
    assert effective_direction(video) == "sendrecv"  # media level overrides
    plain = parse_sdp(sdp(direction=None).encode()).media[0]
    assert effective_direction(plain) == "sendrecv"  # default
    for direction in ("sendonly", "recvonly", "inactive", "sendrecv"):
        held = parse_sdp(sdp(direction=direction).encode()).media[0]
        assert effective_direction(held) == direction


def test_per_media_connection() -> None:
    audio, video, _ = parse_sdp(OFFER.encode()).media
    assert audio.connection is None
    assert audio.effective_connection is not None
    assert audio.effective_connection.address == "224.2.17.12"
    assert video.connection is not None and video.connection.address == "2001:db8::5"
    assert video.effective_connection is video.connection


def test_legacy_hold_and_port_zero() -> None:
    hold = parse_sdp(sdp(address="0.0.0.0", direction=None).encode()).media[0]
    assert hold.legacy_hold and not hold.removed
    assert effective_direction(hold) == "sendrecv"  # the attribute says nothing; the flag does
    removed = parse_sdp(sdp(port=0).encode()).media[0]
    assert removed.removed and not removed.legacy_hold
    normal = parse_sdp(sdp().encode()).media[0]
    assert not normal.legacy_hold and not normal.removed
    # media-level c=0.0.0.0 under a live session-level address
    text = sdp().replace("a=ptime:20\r\n", "a=ptime:20\r\nc=IN IP4 0.0.0.0\r\n")
    assert parse_sdp(text.encode()).media[0].legacy_hold


def test_lf_line_ends_and_trailing_blank_lines() -> None:
    s = parse_sdp((sdp().replace("\r\n", "\n") + "\n\n").encode())
    assert not s.malformed
    assert codecs(s.media[0]) == ["PCMU", "PCMA", "telephone-event"]


def test_non_utf8_bytes_survive() -> None:
    s = parse_sdp(sdp().encode().replace(b"s=-", b"s=caf\xe9 \xff"))
    assert s.session_name == "caf\udce9 \udcff"
    assert not s.malformed


def test_empty_and_garbage() -> None:
    assert parse_sdp(b"").malformed_reasons == [SdpMalformed.EMPTY]
    assert parse_sdp(b"\r\n\r\n").malformed_reasons == [SdpMalformed.EMPTY]
    garbage = parse_sdp(b"hello world")
    assert SdpMalformed.BAD_LINE in garbage.malformed_reasons
    assert SdpMalformed.BAD_VERSION in garbage.malformed_reasons


def test_missing_mandatory_lines() -> None:
    # RFC 4475 mismatch02's body: no s= and no t=
    s = parse_sdp(
        b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n"
        b"m=audio 49217 RTP/AVP 0 12\r\n"
    )
    assert s.malformed_reasons == [SdpMalformed.MISSING_SESSION_NAME, SdpMalformed.MISSING_TIMING]
    assert s.media[0].port == 49217


def test_missing_connection() -> None:
    text = sdp().replace("c=IN IP4 192.0.2.10\r\n", "")
    assert SdpMalformed.MISSING_CONNECTION in parse_sdp(text.encode()).malformed_reasons


def test_bad_lines_are_reported_and_skipped() -> None:
    text = sdp().replace("s=-", "s=-\r\nm =video 3227 RTP/AVP 31\r\nX=upper")
    s = parse_sdp(text.encode())
    assert s.malformed_reasons == [SdpMalformed.BAD_LINE]
    assert len(s.media) == 1


def test_bad_origin_media_rtpmap_ptime() -> None:
    assert (
        SdpMalformed.BAD_ORIGIN
        in parse_sdp(sdp().replace("IN IP4 192.0.2.10\r\ns", "IN\r\ns").encode()).malformed_reasons
    )
    bad_media = parse_sdp(sdp().replace("m=audio 49170", "m=audio 70000").encode())
    assert SdpMalformed.BAD_MEDIA in bad_media.malformed_reasons and bad_media.media[0].port == 0
    no_format = parse_sdp(sdp().replace("RTP/AVP 0 8 101", "RTP/AVP").encode())
    assert (
        SdpMalformed.BAD_MEDIA in no_format.malformed_reasons and no_format.media[0].formats == []
    )
    assert (
        SdpMalformed.BAD_RTPMAP
        in parse_sdp(sdp().replace("PCMU/8000", "PCMU").encode()).malformed_reasons
    )
    assert (
        SdpMalformed.BAD_PTIME
        in parse_sdp(sdp().replace("ptime:20", "ptime:x").encode()).malformed_reasons
    )


def test_first_rtpmap_for_a_payload_type_wins() -> None:
    text = sdp().replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 G729/8000")
    assert codecs(parse_sdp(text.encode()).media[0])[0] == "PCMU"


def test_version_must_be_first() -> None:
    text = "o=a 1 1 IN IP4 1.2.3.4\r\nv=0\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    assert SdpMalformed.BAD_VERSION in parse_sdp(text.encode()).malformed_reasons


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    s = parse_sdp(data)
    assert SdpMalformed.PARSER_ERROR not in s.malformed_reasons
    for m in s.media:
        effective_direction(m)
        codecs(m)
        _ = m.legacy_hold, m.removed, m.payload_types


@given(
    st.lists(
        st.sampled_from(
            sdp().split("\r\n")
            + OFFER.split("\r\n")
            + ["m=", "a=rtpmap:", "c=", "o=", "a=fmtp:1", "a=ptime:", "m=audio x y"]
        ),
        max_size=40,
    ),
    st.sampled_from(["\r\n", "\n"]),
)
def test_shuffled_lines_never_raise(lines: list[str], eol: str) -> None:
    s = parse_sdp(eol.join(lines).encode())
    assert SdpMalformed.PARSER_ERROR not in s.malformed_reasons
    for m in s.media:
        effective_direction(m)
        codecs(m)


def test_rtpmap_and_connection_parsed_once_per_text_and_shared() -> None:
    first, second = parse_sdp(OFFER.encode()), parse_sdp(OFFER.encode())
    assert first.media[0].rtpmap["97"] is second.media[0].rtpmap["97"]
    assert first.connection is second.connection
    # shared values compare and hash by value, as the frozen dataclasses they were did
    assert hash(first.connection) == hash(Connection(*first.connection.to_tuple()))
    bad = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nt=0 0\r\nm=audio 1 RTP/AVP 96\r\n"
    bad += "a=rtpmap:96 AMR\r\nc=IN IP4\r\n"
    for _ in range(2):  # the remembered failure is reported again
        reasons = parse_sdp(bad.encode()).malformed_reasons
        assert SdpMalformed.BAD_RTPMAP in reasons and SdpMalformed.BAD_CONNECTION in reasons
