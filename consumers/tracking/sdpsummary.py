"""Compact SDP summaries for the offer/answer state (RFC 3264 §8; PROTOCOL.md B.4, B.12).

Summaries are tuples of interned strings and ints; the tuples that repeat from call to call
(directions, codec lists) are shared through `shared`, a bounded table, so a dialog's
summaries cost little more than their unique values (addresses, ports, session id).
The SDP ledger of C.10/C.11 shares its tuples through the same table, and both read the
codec part of each m= line from `codec_part`, remembered per format list and rtpmap
entries: a UA lists the same codecs in every call.
"""

from __future__ import annotations

from sys import intern
from typing import Any, Final, TypeVar

from consumers.sip import Sdp, SipMessage, codecs, effective_direction
from consumers.sip.sdp import Media
from consumers.tracking.model import SdpSummary

T = TypeVar("T", tuple, frozenset)  # type: ignore[type-arg]

_SHARED: Final[dict[object, object]] = {}
_SHARED_MAX: Final = 8192


def shared(value: T) -> T:
    """One object for equal immutable values (tuples, frozensets of strings and ints)."""
    found = _SHARED.get(value)
    if found is not None:
        return found  # type: ignore[return-value]
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()  # values that do not repeat: start afresh, as sip.memo does
    _SHARED[value] = value
    return value


# (codec names, the same upper-case, formats, dynamic PT -> NAME/rate bindings sorted, the
# rtpmap entries the key names by identity: kept alive here, so no id is reused while its
# key is stored; the parser shares the entries per text, so the key repeats)
# Typed as a tuple of any length: compiled code would copy a fixed-length tuple in and out
# of a C struct and lose the identity the tables below rely on.
CodecPart = tuple[Any, ...]
_CODEC_PARTS: Final[dict[tuple[tuple[str, ...], tuple[int, ...]], CodecPart]] = {}
_CODEC_PARTS_MAX: Final = 1024


# The parts of the m= lines read last, by identity: the tracker's summary and the ledger's
# facts read the same parsed description one after the other. The entry keeps its Media
# alive, so its id is not reused while stored.
_RECENT: Final[dict[int, tuple[Media, CodecPart]]] = {}
_RECENT_MAX: Final = 16


def codec_part(m: Media) -> CodecPart:
    """The codec part of an m= line, interned and shared, remembered (see CodecPart)."""
    recent = _RECENT.get(id(m))
    if recent is not None and recent[0] is m:
        return recent[1]
    rtpmap = m.rtpmap
    key = (tuple(m.formats), tuple(map(id, rtpmap.values())))
    part = _CODEC_PARTS.get(key)
    if part is None:
        names = tuple(map(intern, codecs(m)))
        dynamic = [
            (intern(pt), intern(f"{rm.encoding.upper()}/{rm.clock_rate or ''}"))
            for pt, rm in rtpmap.items()
            if pt.isdigit() and len(pt) <= 3 and 96 <= int(pt) <= 127
        ]
        dynamic.sort()
        part = (
            shared(names),
            shared(tuple(map(intern, map(str.upper, names)))),
            shared(tuple(map(intern, m.formats))),
            shared(tuple(dynamic)),
            tuple(rtpmap.values()),
        )
        if len(_CODEC_PARTS) >= _CODEC_PARTS_MAX:
            _CODEC_PARTS.clear()
        _CODEC_PARTS[key] = part
    if len(_RECENT) >= _RECENT_MAX:
        _RECENT.clear()
    _RECENT[id(m)] = (m, part)
    return part


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
    directions, ports, addresses, names = [], [], [], []
    for m in sdp.media:
        directions.append(intern(effective_direction(m)))
        ports.append(m.port)
        conn = m.effective_connection
        addresses.append(conn.address if conn is not None else "")
        names.append(codec_part(m)[0])
    return SdpSummary(
        origin=(intern(origin.username), origin.session_id) if origin else None,
        version=origin.version if origin else None,
        directions=shared(tuple(directions)),
        ports=tuple(ports),
        addresses=tuple(addresses),
        codecs=shared(tuple(names)),
    )
