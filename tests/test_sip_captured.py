"""SIP payloads of the real and synthetic HEP captures in ../shared/vectors/hep.

The payload chunk (0x000f, or zlib-compressed 0x0010) is taken out with a few lines of
HEPv3 walking, so this test depends on nothing but the parser. The hep-wireshark frames come
from a test tool: bare-LF line ends, a Content-Length that counts CRLFs (so the body looks
truncated), an o= line missing its line end, and two frames that are not SIP at all.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from sharedpath import shared_path
from sipsamples import touch_everything

from consumers.sip import Malformed, SdpMalformed, parse_message


def _hep_dir() -> Path | None:
    return shared_path("vectors", "hep")


HEP = _hep_dir()
pytestmark = pytest.mark.skipif(HEP is None, reason="HEP vectors not found: ../shared/vectors/hep")


def payload(name: str) -> tuple[bytes, bytes | None]:
    """(SIP payload, correlation id) of the first HEPv3 packet in a .hex vector."""
    assert HEP is not None
    text = (HEP / f"{name}.hex").read_text()
    data = bytes.fromhex(" ".join(line for line in text.splitlines() if not line.startswith("#")))
    assert data[:4] == b"HEP3"
    (total,) = struct.unpack(">H", data[4:6])
    pos, sip, correlation = 6, b"", None
    while pos + 6 <= total:
        vendor, kind, length = struct.unpack(">HHH", data[pos : pos + 6])
        value = data[pos + 6 : pos + length]
        if vendor == 0 and kind == 0x000F:
            sip = value
        elif vendor == 0 and kind == 0x0010:
            sip = zlib.decompress(value)
        elif vendor == 0 and kind == 0x0011:
            correlation = value
        pos += max(length, 6)
    return sip, correlation


CLEAN = [
    "hep_wireshark_pcap_frame1",
    "hep_wireshark_pcap_frame2",
    "hep_wireshark_pcap_frame3",
    "hep_wireshark_pcap_frame5",
    "heplify_server_hep3_200ok_options",
    "hep3_compressed_payload_frame0",
    "synthetic_kamailio_style_hep3_ipv4",
    "synthetic_kamailio_style_hep3_ipv6_tls",
]


@pytest.mark.parametrize("name", CLEAN)
def test_captured_sip_is_clean(name: str) -> None:
    sip, correlation = payload(name)
    m = parse_message(sip)
    touch_everything(m)
    assert not m.malformed, m.malformed_reasons
    assert m.call_id and m.cseq is not None and m.top_via is not None
    if correlation is not None and name.startswith("hep_wireshark"):
        assert m.call_id_bytes == correlation  # the tool sets correlation id = Call-ID


def test_lf_only_invite_with_overlong_content_length() -> None:
    m = parse_message(payload("hep_wireshark_pcap_frame0")[0])
    assert m.method == "INVITE" and m.call_id == "qgf3dm9rudi@127.0.0.1"
    assert m.malformed_reasons == [Malformed.TRUNCATED_BODY]  # CL counts CRLFs, body has LFs
    assert m.allow == frozenset({"INVITE", "ACK", "CANCEL", "BYE"})
    sdp = m.sdp
    assert sdp is not None and sdp.media[0].port == 5072
    assert sdp.malformed_reasons == [SdpMalformed.MISSING_SESSION_NAME]  # "...123s=nodejs"


def test_publish_with_rtcp_xr_body() -> None:
    m = parse_message(payload("hep_wireshark_pcap_frame6")[0])
    assert m.method == "PUBLISH" and m.to_tag is not None
    assert m.content_type is not None and m.content_type.mime == "application/vq-rtcpxr"
    assert m.sdp is None


@pytest.mark.parametrize("name", ["hep_wireshark_pcap_frame4", "hep_wireshark_pcap_frame7"])
def test_non_sip_payloads_are_malformed_not_fatal(name: str) -> None:
    m = parse_message(payload(name)[0])
    touch_everything(m)
    assert m.malformed and Malformed.BAD_START_LINE in m.malformed_reasons
