"""SDP session descriptions: what media a message offers or answers.

Parses the lines of RFC 4566 §5 (v=, o=, s=, c=, t=, b=, m=, a=) that matter for
offer/answer tracking [RFC 3264]: origin (its version increases by one per change, §8),
session- and media-level connection, media lines (port 0 = stream removed, §8.2), direction
attributes (media level overrides session level, default sendrecv, RFC 4566 §6; hold =
sendonly/inactive, RFC 3264 §8.4), rtpmap/fmtp/ptime per payload type, and legacy RFC 2543
hold (c= address 0.0.0.0, RFC 3264 §8.4). Other lines are kept as attributes or ignored.

`parse_sdp` never raises: problems go to `malformed_reasons` (codes in `reasons.py`).
Lines may end in CRLF or bare LF; bytes that are not UTF-8 survive as surrogate escapes.
rtpmap and c= values repeat from call to call: parsed once per text (`sip.memo`), into
frozen objects that every description holding them shares.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr

from consumers.sip.memo import remember, table
from consumers.sip.reasons import SdpMalformed
from consumers.value import Value

DIRECTIONS: Final = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))
_LINE_TYPES: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_UNSET: Final = object()

# Static RTP payload types [RFC 3551 §6, tables 4 and 5].
STATIC_PAYLOAD_TYPES: Final[dict[str, str]] = {
    "0": "PCMU",
    "3": "GSM",
    "4": "G723",
    "5": "DVI4",
    "6": "DVI4",
    "7": "LPC",
    "8": "PCMA",
    "9": "G722",
    "10": "L16",
    "11": "L16",
    "12": "QCELP",
    "13": "CN",
    "14": "MPA",
    "15": "G728",
    "16": "DVI4",
    "17": "DVI4",
    "18": "G729",
    "25": "CelB",
    "26": "JPEG",
    "28": "nv",
    "31": "H261",
    "32": "MPV",
    "33": "MP2T",
    "34": "H263",
}


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Origin(Value):
    FIELDS = ("username", "session_id", "version", "net_type", "addr_type", "address")

    def __init__(
        self,
        username: str,
        session_id: str,
        version: int | None,
        net_type: str,
        addr_type: str,
        address: str,
    ) -> None:
        self.username = username
        self.session_id = session_id  # kept as text: often larger than 64 bits
        self.version = version  # None when not a number
        self.net_type = net_type
        self.addr_type = addr_type
        self.address = address


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Connection(Value):
    """Hashable, and shared by every message with the same text (memoised): never
    modified."""

    FIELDS = ("net_type", "addr_type", "address", "raw")

    def __init__(self, net_type: str, addr_type: str, address: str, raw: str) -> None:
        self.net_type = net_type
        self.addr_type = addr_type
        self.address = address  # without any /ttl/count suffix
        self.raw = raw

    def __hash__(self) -> int:
        return hash(self.to_tuple())


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class RtpMap(Value):
    """Hashable, and shared by every message with the same text (memoised): never
    modified."""

    FIELDS = ("payload_type", "encoding", "clock_rate", "params")

    def __init__(
        self, payload_type: str, encoding: str, clock_rate: int | None, params: str | None = None
    ) -> None:
        self.payload_type = payload_type
        self.encoding = encoding
        self.clock_rate = clock_rate
        self.params = params  # e.g. channel count "2"

    def __hash__(self) -> int:
        return hash(self.to_tuple())


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Media(Value):
    FIELDS = (
        "media",
        "port",
        "port_count",
        "proto",
        "formats",
        "connection",
        "direction",
        "session_direction",
        "session_connection",
        "rtpmap",
        "fmtp",
        "ptime",
        "maxptime",
        "bandwidth",
        "attributes",
    )

    def __init__(
        self,
        media: str,
        port: int,
        port_count: int | None,
        proto: str,
        formats: list[str],
        connection: Connection | None = None,
        direction: str | None = None,
        session_direction: str | None = None,
        session_connection: Connection | None = None,
        rtpmap: dict[str, RtpMap] | None = None,
        fmtp: dict[str, str] | None = None,
        ptime: int | None = None,
        maxptime: int | None = None,
        bandwidth: dict[str, str] | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> None:
        self.media = media  # audio, video, application, image, ...
        self.port = port
        self.port_count = port_count
        self.proto = proto  # RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, udptl, ...
        self.formats = formats
        self.connection = connection  # media-level c=
        self.direction = direction  # media-level direction attribute
        self.session_direction = session_direction  # session-level one at the time of m=
        self.session_connection = session_connection
        self.rtpmap: dict[str, RtpMap] = {} if rtpmap is None else rtpmap
        self.fmtp: dict[str, str] = {} if fmtp is None else fmtp
        self.ptime = ptime
        self.maxptime = maxptime
        self.bandwidth: dict[str, str] = {} if bandwidth is None else bandwidth
        self.attributes: list[tuple[str, str | None]] = [] if attributes is None else attributes

    @property
    def effective_connection(self) -> Connection | None:
        return self.connection or self.session_connection

    @property
    def removed(self) -> bool:
        """Port 0: the stream is removed or rejected, not held [RFC 3264 §8.2]."""
        return self.port == 0

    @property
    def legacy_hold(self) -> bool:
        """c= 0.0.0.0 (RFC 2543 hold) on a live stream [RFC 3264 §8.4]."""
        conn = self.connection or self.session_connection
        return conn is not None and conn.address == "0.0.0.0" and self.port != 0

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and len(f) <= 3]


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Sdp(Value):
    FIELDS = (
        "version",
        "origin",
        "session_name",
        "connection",
        "direction",
        "bandwidth",
        "timing",
        "attributes",
        "media",
        "malformed_reasons",
    )

    def __init__(
        self,
        version: int | None = None,
        origin: Origin | None = None,
        session_name: str | None = None,
        connection: Connection | None = None,
        direction: str | None = None,
        bandwidth: dict[str, str] | None = None,
        timing: list[str] | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
        media: list[Media] | None = None,
        malformed_reasons: list[str] | None = None,
    ) -> None:
        self.version = version
        self.origin = origin
        self.session_name = session_name
        self.connection = connection
        self.direction = direction  # session-level direction attribute
        self.bandwidth: dict[str, str] = {} if bandwidth is None else bandwidth
        self.timing: list[str] = [] if timing is None else timing  # t= values as written
        # session level
        self.attributes: list[tuple[str, str | None]] = [] if attributes is None else attributes
        self.media: list[Media] = [] if media is None else media
        self.malformed_reasons: list[str] = [] if malformed_reasons is None else malformed_reasons

    @property
    def malformed(self) -> bool:
        return bool(self.malformed_reasons)


_RTPMAPS: Final[dict[str, RtpMap | None]] = table()
_CONNECTIONS: Final[dict[str, Connection | None]] = table()


def effective_direction(media: Media) -> str:
    """Media-level direction, else session-level, else sendrecv [RFC 4566 §6]."""
    return media.direction or media.session_direction or "sendrecv"


def codecs(media: Media) -> list[str]:
    """Encoding names in format order: rtpmap first, then the static table, else the format."""
    out = []
    rtpmap = media.rtpmap
    for fmt in media.formats:
        entry = rtpmap.get(fmt)
        if entry is not None:
            out.append(entry.encoding)
        else:
            out.append(STATIC_PAYLOAD_TYPES.get(fmt, fmt))
    return out


def parse_sdp(body: bytes) -> Sdp:
    """Parse an SDP body. Never raises."""
    try:
        return _parse(body)
    except MemoryError:
        raise
    except Exception:
        return Sdp(malformed_reasons=[SdpMalformed.PARSER_ERROR])


def _parse(body: bytes) -> Sdp:
    sdp = Sdp()
    reasons = sdp.malformed_reasons
    text = body.decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # lines end in CRLF or LF
    lines = text.split("\n")
    first = lines[0] or next((line for line in lines if line), None)
    if first is None:
        _add(reasons, SdpMalformed.EMPTY)
        return sdp
    if first != "v=0":
        _add(reasons, SdpMalformed.BAD_VERSION)
    media: Media | None = None
    # the attributes, rtpmap and bandwidth of the current level (session, then each m=)
    attributes = sdp.attributes
    rtpmap: dict[str, RtpMap] = {}
    bandwidth = sdp.bandwidth
    for line in lines:
        if not line:
            continue
        kind = line[0]
        if line[1:2] != "=" or kind not in _LINE_TYPES:
            _add(reasons, SdpMalformed.BAD_LINE)
            continue
        if kind == "a":
            name, colon, attr_value = line[2:].partition(":")
            if media is None:
                if not colon and name in DIRECTIONS:
                    sdp.direction = name
                attributes.append((name, attr_value if colon else None))
            elif colon:
                attributes.append((name, attr_value))
                if name == "rtpmap":
                    entry = _RTPMAPS.get(attr_value, _UNSET)
                    if entry is _UNSET:
                        entry = remember(_RTPMAPS, attr_value, _parse_rtpmap(attr_value))
                    if entry is None:
                        _add(reasons, SdpMalformed.BAD_RTPMAP)
                    elif entry.payload_type not in rtpmap:  # type: ignore
                        rtpmap[entry.payload_type] = entry  # type: ignore
                elif name == "fmtp" or name == "ptime" or name == "maxptime":
                    _media_value_attribute(media, name, attr_value, reasons)
            else:
                attributes.append((name, None))
                if name in DIRECTIONS:
                    media.direction = name
        elif kind == "m":
            media = _parse_media(line[2:], reasons)
            media.session_direction = sdp.direction
            sdp.media.append(media)
            attributes, rtpmap, bandwidth = media.attributes, media.rtpmap, media.bandwidth
        elif kind == "c":
            value = line[2:]
            conn = _CONNECTIONS.get(value, _UNSET)
            if conn is _UNSET:
                conn = remember(_CONNECTIONS, value, _parse_connection(value))
            if conn is None:
                _add(reasons, SdpMalformed.BAD_CONNECTION)
            elif media is None:
                sdp.connection = conn  # type: ignore
            else:
                media.connection = conn  # type: ignore
        elif kind == "b":
            bw_type, _, bw_value = line[2:].partition(":")
            bandwidth[bw_type] = bw_value
        elif media is not None:
            continue  # i=, k= at media level: not needed
        elif kind == "o":
            sdp.origin = _parse_origin(line[2:])
            if sdp.origin is None:
                _add(reasons, SdpMalformed.BAD_ORIGIN)
        elif kind == "s":
            sdp.session_name = line[2:]
        elif kind == "t":
            sdp.timing.append(line[2:])
        elif kind == "v":
            sdp.version = _small_int(line[2:], 2**31)
    if sdp.origin is None and SdpMalformed.BAD_ORIGIN not in reasons:
        _add(reasons, SdpMalformed.MISSING_ORIGIN)
    if sdp.session_name is None:
        _add(reasons, SdpMalformed.MISSING_SESSION_NAME)
    if not sdp.timing:
        _add(reasons, SdpMalformed.MISSING_TIMING)
    connection = sdp.connection
    for m in sdp.media:
        m.session_connection = connection
        if m.connection is None and connection is None:
            _add(reasons, SdpMalformed.MISSING_CONNECTION)
    return sdp


def _add(reasons: list[str], code: str) -> None:
    if code not in reasons:
        reasons.append(code)


def _parse_origin(value: str) -> Origin | None:
    fields = value.split()
    if len(fields) != 6:
        return None
    username, sess_id, sess_version, net_type, addr_type, address = fields
    version = _small_int(sess_version, 2**64 - 1, 20)
    if version is None:
        return None
    return Origin(username, sess_id, version, net_type, addr_type, address)


def _parse_connection(value: str) -> Connection | None:
    fields = value.split()
    if len(fields) != 3:
        return None
    net_type, addr_type, address = fields
    return Connection(net_type, addr_type, address.partition("/")[0], value)


def _parse_media(value: str, reasons: list[str]) -> Media:
    fields = value.split(" ")
    if len(fields) < 4 or "" in fields:
        # no format, or not single-SP separated: keep what can be kept, in the m= slot
        _add(reasons, SdpMalformed.BAD_MEDIA)
        fields = value.split()
        while len(fields) < 3:
            fields.append("")
    media_type, port_text, proto = fields[0], fields[1], fields[2]
    port_str, slash, count_str = port_text.partition("/")
    port = _small_int(port_str, 65535)
    count = _small_int(count_str, 65535) if slash else None
    if port is None or (slash and count is None):
        _add(reasons, SdpMalformed.BAD_MEDIA)
        port = port if port is not None else 0
    return Media(media_type, port, count, proto, fields[3:])


def _small_int(text: str, limit: int, digits: int = 10) -> int | None:
    if not text or len(text) > digits or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= limit else None


def _media_value_attribute(media: Media, name: str, value: str, reasons: list[str]) -> None:
    if name == "fmtp":
        fmt, sep, params = value.partition(" ")
        if not fmt or not sep:
            _add(reasons, SdpMalformed.BAD_FMTP)
        else:
            media.fmtp.setdefault(fmt, params.strip())
        return
    number = _parse_ms(value)
    if number is None:
        _add(reasons, SdpMalformed.BAD_PTIME)
    elif name == "ptime":
        media.ptime = number
    else:
        media.maxptime = number


def _parse_rtpmap(value: str) -> RtpMap | None:
    # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
    pt, sep, rest = value.partition(" ")
    encoding, slash, rest = rest.lstrip(" ").partition("/")
    if not pt or not sep or not encoding or not slash:
        return None
    clock_text, _, params = rest.partition("/")
    clock_text = clock_text.rstrip(" ")
    if not clock_text.isdigit() or len(clock_text) > 9 or not clock_text.isascii():
        return None
    return RtpMap(pt, encoding, int(clock_text), params or None)


def _parse_ms(value: str) -> int | None:
    text = value.strip()
    whole, dot, frac = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or len(whole) > 6:
        return None
    if dot and frac and not (frac.isascii() and frac.isdigit()):
        return None
    return int(whole)
