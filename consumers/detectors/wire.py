"""Two copies of one message compared on the wire bytes, so that the proxy's other copy is
parsed only when it differs in what a detector reads of it.

A proxy passes a message on with its own Via, Record-Route and Max-Forwards [RFC 3261 §16.6],
so the in-copy and the out-copy are never the same bytes; the detectors that compare them
read a few headers or the body. `header_lines` finds those header lines straight in the
bytes; equal lines give equal parsed values, because `sip.framing` derives a header's value
from its own lines only (name case-insensitive before optional SP/HTAB and the colon, compact
forms, value trimmed). That holds for the plain form checked here (CR and LF only as the
line ends, no folded line, the header section ends at the first empty line), whichever of
the parser's paths takes it; anything else answers "not the same", and the caller parses.
"""

from __future__ import annotations

import re

# Session-Expires (compact x), Min-SE, Supported (compact k), Require [RFC 4028 §4, §5;
# RFC 3261 §7.3.3, §20.32, §20.37]: all that the session-timer checks read of a copy.
TIMER_HEADERS = re.compile(
    rb"^(?:session-expires|x|min-se|supported|k|require)[ \t]*:.*$", re.I | re.M
)
# Content-Length (compact l) frames the body [RFC 3261 §18.3, §20.14].
LENGTH_HEADERS = re.compile(rb"^(?:content-length|l)[ \t]*:.*$", re.I | re.M)


def head_end(payload: bytes) -> int:
    """Where the header section's closing CRLF CRLF starts, when the message has the plain
    form (no CRLF before the start line, every CR and LF of the header section in a CRLF, no
    folding); -1 otherwise."""
    end = payload.find(b"\r\n\r\n")
    if end <= 0 or payload[0] in b"\r\n":
        return -1
    crlf = payload.count(b"\r\n", 0, end)
    if (
        payload.count(b"\n", 0, end) != crlf
        or payload.count(b"\r", 0, end) != crlf
        or payload.find(b"\n ", 0, end) >= 0
        or payload.find(b"\n\t", 0, end) >= 0
    ):
        return -1
    return end


def same_header_lines(a: bytes, b: bytes, pattern: re.Pattern[bytes]) -> bool:
    """True when both messages have the plain form and the same header lines matching
    `pattern`, in the same order; False when they differ or either is not plain."""
    end_a = head_end(a)
    if end_a < 0:
        return False
    end_b = head_end(b)
    if end_b < 0:
        return False
    return pattern.findall(a, 0, end_a) == pattern.findall(b, 0, end_b)


def same_body(a: bytes, b: bytes) -> bool:
    """True when both messages have the plain form, the same bytes after the header
    section and the same Content-Length lines: the parser gives both the same body."""
    end_a = head_end(a)
    if end_a < 0:
        return False
    end_b = head_end(b)
    if end_b < 0 or len(a) - end_a != len(b) - end_b or a[end_a:] != b[end_b:]:
        return False
    return LENGTH_HEADERS.findall(a, 0, end_a) == LENGTH_HEADERS.findall(b, 0, end_b)
