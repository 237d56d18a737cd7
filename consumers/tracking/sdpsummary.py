"""Compact SDP summaries for the offer/answer state (RFC 3264 §8; PROTOCOL.md B.4, B.12)."""

from __future__ import annotations

from consumers.sip import Sdp, SipMessage, codecs, effective_direction
from consumers.tracking.model import SdpSummary


def offer_answer_sdp(msg: SipMessage) -> Sdp | None:
    """The session description a message carries as an offer or answer, if any.

    Only bodies with disposition "session" count (the default for application/sdp)
    [RFC 3261 §13.2.1, §20.11]; multipart bodies are searched by the parser.
    """
    if not msg.body:
        return None
    disp = msg.content_disposition
    if disp is not None and disp.type not in ("session", ""):
        return None
    return msg.sdp


def session_sdp(msg: SipMessage) -> SdpSummary | None:
    sdp = offer_answer_sdp(msg)
    return summarize(sdp) if sdp is not None else None


def summarize(sdp: Sdp) -> SdpSummary:
    origin = sdp.origin
    media = sdp.media
    pt_map: dict[str, str] = {}
    for m in media:
        for pt, rm in m.rtpmap.items():
            if pt.isdigit() and int(pt) >= 96:
                pt_map[pt] = f"{rm.encoding.upper()}/{rm.clock_rate or ''}"
    return SdpSummary(
        origin=(origin.username, origin.session_id) if origin else None,
        version=origin.version if origin else None,
        directions=tuple(effective_direction(m) for m in media),
        ports=tuple(m.port for m in media),
        addresses=tuple(
            (m.effective_connection.address if m.effective_connection else "") for m in media
        ),
        codecs=tuple(tuple(codecs(m)) for m in media),
        pt_map=pt_map,
    )
