"""Cheap looks at a captured SIP payload, fast enough for the ingest hot path.

This module owns `looks_like_sip` (does the payload start with a SIP start line?) and
`find_call_id` (the Call-ID header value, without parsing the message). Full SIP parsing
belongs to the consumers; nothing here allocates more than the returned value.
"""

from __future__ import annotations

import re

# The well-formed start lines, recognised by one regex (the common case).
_STRICT_START = re.compile(rb"[A-Z]+ [^ \r\n]+ SIP/2\.0\r?\n|SIP/2\.0 [0-9]{3} ")
# Liberal forms, RFC 4475 style: any SIP/x.y version, several SP between elements, trailing
# whitespace, LWS inside the Request-URI, odd status codes. Malformed SIP is still SIP traffic.
_LIBERAL_STATUS = re.compile(rb"SIP/[0-9]+\.[0-9]+ +[0-9]+(?:[ \t\r\n]|\Z)", re.IGNORECASE)
_METHOD_SP = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+ +")  # method = token (RFC 3261 §25.1)
_VERSION = re.compile(rb"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)

# A Call-ID header line, full or compact name, any case, optional whitespace around the colon.
# The leading \n keeps the start line out and lets the regex engine jump between line starts.
# Header folding is not handled: a Call-ID value never contains whitespace.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def looks_like_sip(payload: bytes) -> bool:
    """True if `payload` begins with a SIP request line or a SIP status line."""
    if _STRICT_START.match(payload) is not None:
        return True
    if payload[:4].upper() == b"SIP/":
        return _LIBERAL_STATUS.match(payload) is not None
    m = _METHOD_SP.match(payload)
    if m is None:
        return False
    eol = payload.find(b"\n", m.end())
    # Request-URI and SIP-Version: the last space-separated word must be the version.
    line = payload[m.end() : eol if eol != -1 else len(payload)].rstrip(b" \t\r")
    sp = line.rfind(b" ")
    return sp > 0 and _VERSION.fullmatch(line, sp + 1) is not None


def find_call_id(payload: bytes) -> bytes | None:
    """The value of the first Call-ID (or `i`) header in the header section, stripped.

    Accepts CRLF and bare LF line ends. A match after the first empty line is in the body
    and does not count. None when there is no such header or its value is empty.
    """
    m = _CALL_ID.search(payload)
    if m is None:
        return None
    start = m.start()
    # The header section ends at the first empty line; the match must come before it.
    if payload.find(b"\n\n", 0, start + 1) != -1 or payload.find(b"\n\r\n", 0, start + 1) != -1:
        return None
    value = m.group(1).strip(b" \t")
    return value or None
