"""`parse_message`: bytes to `SipMessage` in one cheap pass (start line, header lines, body).

Rules applied [RFC 3261]: CRLFs before the start line are ignored (keep-alives, §7.5); lines
may end in CRLF or, as test tools send, bare LF (PROTOCOL.md B.1); the header section ends at
the first empty line; a line starting with SP/HTAB continues the previous header and the fold
counts as one SP (§7.3.1); whitespace may surround the colon, names are case-insensitive and
compact forms are expanded (§7.3.3, `header_names`); the body is framed by Content-Length,
octets after it are discarded and counted (§18.3, RFC 4475 dblreq), a short body is kept
and flagged, no Content-Length means the body runs to the end (§18.3, RFC 4475 inv2543),
several or non-numeric Content-Lengths are flagged and never "repaired" (RFC 4475 mcl01,
ncl). Start line: Method SP Request-URI SP SIP-Version (§7.1), SIP-Version SP Status-Code SP
Reason-Phrase (§7.2).

Liberal acceptance, always flagged: extra or trailing SPs in the request line are skipped
(RFC 4475 lwsstart, trws), an LWS-split Request-URI is rejoined (lwsruri) and a Request-URI
in <> is unwrapped (ltgtruri), so the message stays structured. Not flagged: a status line
without the SP before an empty Reason-Phrase ("SIP/2.0 100").

Header text is decoded as UTF-8 with surrogateescape: never strict, and reversible.

The CRLF fast path runs in C (`_scan.split_headers`, which also reads a start line of the
common shapes) when the extension is built; it hands anything unusual back to the Python
code here, which stays the reference.
"""

from __future__ import annotations

from typing import Final

from consumers.sip.grammar import TOKEN_RE
from consumers.sip.header_names import _NAME_CACHE, Headers, frozen_headers, header_key
from consumers.sip.lexing import parse_delta
from consumers.sip.memo import remember, table
from consumers.sip.message import SipMessage
from consumers.sip.reasons import Malformed

COMMON_METHODS: Final = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
        "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO", "PUBLISH",
    }
)  # fmt: skip

try:
    from consumers.sip._scan import split_headers as _split_headers  # type: ignore
except ImportError:  # no compiler at install time: the Python path below does it all
    _split_headers = None

_StartLine = tuple[bool, bool, str | None, str | None, str, int | None, str | None]
_LINE_ENDS: Final = (b"\r", b"\n")
# Content-Length text -> value (None when not a delta): a capture repeats a few hundred lengths
_CONTENT_LENGTHS: Final[dict[str, int | None]] = table()


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message. Never raises (other than MemoryError); problems are reported
    through `SipMessage.malformed` / `malformed_reasons`, and `raw` is always `data`."""
    try:
        return _parse(data)
    except MemoryError:
        raise
    except Exception:
        return SipMessage(
            data,
            "",
            False,
            False,
            None,
            None,
            "",
            None,
            None,
            {},
            b"",
            None,
            0,
            (Malformed.PARSER_ERROR,),
        )


def _parse(data: bytes) -> SipMessage:
    start = 0
    if not data or data[:1] in _LINE_ENDS:
        start = len(data) - len(data.lstrip(b"\r\n"))
        if start >= len(data):
            return SipMessage(
                data, "", False, False, None, None, "", None, None, {}, b"", None, 0,
                (Malformed.EMPTY,),
            )  # fmt: skip
    split = _split_headers(data, start, _NAME_CACHE) if _split_headers is not None else None
    if split is not None:  # the CRLF fast path in C, for ASCII headers with known names
        start_line, headers, body_start, parsed_line = split
        if parsed_line is not None:
            # The common case in full: nothing to report unless Content-Length says so.
            cl_values = headers.get("content-length")
            if cl_values is not None and len(cl_values) == 1:
                text = cl_values[0]
                content_length = _CONTENT_LENGTHS.get(text, -1)
                if content_length == -1:
                    content_length = remember(_CONTENT_LENGTHS, text, parse_delta(text))
                if content_length is not None:
                    end = body_start + content_length
                    size = len(data)
                    if end <= size:
                        return SipMessage(  # type: ignore
                            data, start_line, *parsed_line, headers, data[body_start:end],
                            content_length, size - end, (),
                        )  # fmt: skip
            return _frame(data, start_line, parsed_line, headers, body_start, [])
        reasons: list[str] = []
    else:
        # The same fast path in Python: CRLF throughout, no folding. The header block is
        # split on LF and each value loses its trailing CR with the whitespace. A line that
        # is empty (an earlier LF-only blank line) or starts with SP/HTAB (a fold) sends us
        # to the exact path.
        reasons = []
        headers = None
        end = data.find(b"\r\n\r\n", start)
        if end >= 0:
            lines = data[start:end].decode("utf-8", "surrogateescape").split("\n")
            headers = _fast_headers(lines, reasons)
            body_start = end + 4
        if headers is None:
            reasons = []
            lines, body_start = _exact_lines(data, start, len(data), reasons)
            headers = _headers(lines, reasons)
        start_line = lines[0].rstrip("\r")
    line_reasons: list[str] = []
    parsed_line = _start_line(start_line, line_reasons)
    if line_reasons:
        reasons[:0] = line_reasons  # report in message order: start line first
    return _frame(data, start_line, parsed_line, headers, body_start, reasons)


def _frame(
    data: bytes,
    start_line: str,
    parsed_line: _StartLine,
    headers: Headers,
    body_start: int,
    reasons: list[str],
) -> SipMessage:
    """The body framed by Content-Length, and the message."""
    size = len(data)
    content_length: int | None = None
    trailing = 0
    cl_values = headers.get("content-length")
    if cl_values is None:
        body = data[body_start:]
    elif len(cl_values) > 1:
        reasons.append(Malformed.CONTENT_LENGTH_MULTI)
        body = data[body_start:]
    else:
        content_length = parse_delta(cl_values[0])
        if content_length is None:
            reasons.append(Malformed.BAD_CONTENT_LENGTH)
            body = data[body_start:]
        else:
            available = size - body_start
            if available >= content_length:
                body = data[body_start : body_start + content_length]
                trailing = available - content_length
            else:
                body = data[body_start:]
                reasons.append(Malformed.TRUNCATED_BODY)
    return SipMessage(data, start_line, *parsed_line, headers, body, content_length, trailing,
                      tuple(reasons))  # fmt: skip


def _fast_headers(lines: list[str], reasons: list[str]) -> Headers | None:
    headers: dict[str, list[str]] = {}
    cache_get = _NAME_CACHE.get
    bad_line = False
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = cache_get(name) if colon else None
        if key is None:
            if line[:1] in (" ", "\t", "\r", ""):
                return None
            key = header_key(name) if colon else None
            if key is None:
                bad_line = True
                continue
        headers.setdefault(key, []).append(value.strip(" \t\r"))
    if bad_line:
        reasons.append(Malformed.BAD_HEADER_LINE)
    return frozen_headers(headers)


def _exact_lines(data: bytes, start: int, size: int, reasons: list[str]) -> tuple[list[str], int]:
    """Header lines (unfolded) and body offset for any mix of CRLF and LF."""
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf + 1 if crlf >= 0 else size)
    if lf >= 0:
        head_end, body_start = lf + 1, lf + 2
    elif crlf >= 0:
        head_end, body_start = crlf + 1, crlf + 3
    else:
        head_end = body_start = size
        reasons.append(Malformed.MISSING_BLANK_LINE)
    text = data[start:head_end].decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    if "\n " in text or "\n\t" in text:
        lines = _unfold(lines, reasons)
    return lines, body_start


def _headers(lines: list[str], reasons: list[str]) -> Headers:
    headers: dict[str, list[str]] = {}
    bad_line = False
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = header_key(name) if colon else None
        if key is None:
            bad_line = True
            continue
        headers.setdefault(key, []).append(value.strip(" \t"))
    if bad_line:
        reasons.append(Malformed.BAD_HEADER_LINE)
    return frozen_headers(headers)


def _unfold(lines: list[str], reasons: list[str]) -> list[str]:
    out = [lines[0]]
    pieces: list[str] = []  # the header being unfolded, joined once (linear in its size)
    for i in range(1, len(lines)):
        line = lines[i]
        if line[:1] in (" ", "\t"):
            if len(out) == 1:
                if Malformed.BAD_HEADER_LINE not in reasons:
                    reasons.append(Malformed.BAD_HEADER_LINE)  # a fold of the start line
                continue
            if not pieces:
                pieces.append(out[-1].rstrip(" \t"))
            piece = line.strip(" \t")
            if piece:
                pieces.append(piece)
            continue
        if pieces:
            out[-1] = " ".join(pieces)
            pieces = []
        out.append(line)
    if pieces:
        out[-1] = " ".join(pieces)
    return out


def _start_line(line: str, reasons: list[str]) -> _StartLine:
    if line[:4].upper() == "SIP/":
        return _status_line(line, reasons)
    parts = line.split(" ")
    if len(parts) == 3 and parts[0] in COMMON_METHODS and parts[2] == "SIP/2.0" and parts[1]:
        method, ruri, version = parts
        if ruri[0] == "<":
            ruri = _unwrap_ruri(ruri, reasons)
        return True, False, method, ruri, version, None, None
    if len(parts) != 3 or "" in parts:
        reasons.append(Malformed.BAD_START_LINE)
        parts = line.split()
    if len(parts) < 2:
        if Malformed.BAD_START_LINE not in reasons:
            reasons.append(Malformed.BAD_START_LINE)
        return False, False, None, None, "", None, None
    method = parts[0]
    if TOKEN_RE.fullmatch(method) is None:
        reasons.append(Malformed.BAD_METHOD)
    if len(parts) == 2:
        ruri, version = parts[1], ""
    else:
        ruri, version = "".join(parts[1:-1]), parts[-1]
    if version.upper() != "SIP/2.0":
        reasons.append(Malformed.BAD_VERSION)
    if ruri.startswith("<"):
        ruri = _unwrap_ruri(ruri, reasons)
    return True, False, method, ruri, version, None, None


def _unwrap_ruri(ruri: str, reasons: list[str]) -> str:
    reasons.append(Malformed.BAD_REQUEST_URI)
    return ruri[1:-1] if ruri.endswith(">") else ruri[1:]


def _status_line(line: str, reasons: list[str]) -> _StartLine:
    parts = line.split(" ", 2)
    version = parts[0]
    if version.upper() != "SIP/2.0":
        reasons.append(Malformed.BAD_VERSION)
    if len(parts) < 2:
        reasons.append(Malformed.BAD_START_LINE)
        return False, True, None, None, version, None, None
    code_text = parts[1]
    phrase = parts[2] if len(parts) == 3 else ""
    status: int | None = None
    if len(code_text) == 3 and code_text.isascii() and code_text.isdigit():
        status = int(code_text)
        if not 100 <= status <= 699:
            status = None
    if status is None:
        reasons.append(Malformed.BAD_STATUS_CODE)
    return False, True, None, None, version, status, phrase
