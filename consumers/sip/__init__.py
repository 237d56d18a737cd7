"""Sans-I/O SIP message and SDP parsing for the consumers (RFC 3261 §7, §20, §25; RFC 4566).

`parse_message(bytes) -> SipMessage` and `parse_sdp(bytes) -> Sdp` never raise on any input;
problems are reported as stable reason codes (`reasons.py`). Modules:

- `framing`: start line, header split, body framing (`parse_message`)
- `message`: `SipMessage` and its lazily parsed, cached accessors
- `validation`, `grammar`: the checks behind `SipMessage.malformed_reasons` (strict ABNF)
- `header_names`, `lexing`, `memo`: compact forms, lists and params, memo tables
- `uri`, `name_addr`, `via`: URIs, From/To/Contact/Route values, Via values
- `numeric_headers`, `media_type`, `reason_warning`, `correlation`: other header values
- `body`, `sdp`: multipart bodies and session descriptions
- `reasons`: the reason codes
"""

from consumers.sip.body import BodyPart
from consumers.sip.correlation import ChargingVector, Event, Replaces, SessionId
from consumers.sip.framing import parse_message
from consumers.sip.media_type import ContentDisposition, MediaType
from consumers.sip.message import SipMessage
from consumers.sip.name_addr import NameAddr, parse_name_addr
from consumers.sip.numeric_headers import CSeq, RAck, RetryAfter, SessionExpires
from consumers.sip.reason_warning import ReasonValue, WarningValue
from consumers.sip.reasons import Malformed, SdpMalformed
from consumers.sip.sdp import (
    Connection,
    Media,
    Origin,
    RtpMap,
    Sdp,
    codecs,
    effective_direction,
    parse_sdp,
)
from consumers.sip.uri import Uri, parse_uri
from consumers.sip.via import Via, parse_via

__all__ = [
    "BodyPart",
    "CSeq",
    "ChargingVector",
    "Connection",
    "ContentDisposition",
    "Event",
    "Malformed",
    "Media",
    "MediaType",
    "NameAddr",
    "Origin",
    "RAck",
    "ReasonValue",
    "Replaces",
    "RetryAfter",
    "RtpMap",
    "Sdp",
    "SdpMalformed",
    "SessionExpires",
    "SessionId",
    "SipMessage",
    "Uri",
    "Via",
    "WarningValue",
    "codecs",
    "effective_direction",
    "parse_message",
    "parse_name_addr",
    "parse_sdp",
    "parse_uri",
    "parse_via",
]
