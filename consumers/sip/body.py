"""Message bodies: multipart splitting and finding the session description.

multipart/* bodies are split on the boundary [RFC 2046 §5.1.1]: a delimiter is "--"
boundary at the start of a line, the close delimiter adds "--"; each part has MIME headers,
an empty line, then its content (binary-safe: parts may hold NULs, RFC 4475 mpart01). The SDP
that counts for offer/answer is an application/sdp body whose Content-Disposition is
"session" or absent [RFC 3261 §13.2.1, §20.11; PROTOCOL.md B.4], looked for in nested
multiparts up to a small depth.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr

from consumers.sip.header_names import header_key
from consumers.sip.media_type import (
    ContentDisposition,
    MediaType,
    parse_disposition,
    parse_media_type,
)
from consumers.value import Value

_MAX_DEPTH: Final = 3


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class BodyPart(Value):
    FIELDS = ("content_type", "disposition", "content", "headers")

    def __init__(
        self,
        content_type: MediaType | None,
        disposition: ContentDisposition | None,
        content: bytes,
        headers: dict[str, list[str]] | None = None,
    ) -> None:
        self.content_type = content_type
        self.disposition = disposition
        self.content = content
        self.headers: dict[str, list[str]] = {} if headers is None else headers


def split_multipart(body: bytes, boundary: str) -> tuple[list[BodyPart], bool]:
    """Parts of a multipart body, and whether it was well formed (delimiters found and the
    close delimiter present). Never raises."""
    if not boundary:
        return [], False
    delim = b"--" + boundary.encode("utf-8", "surrogateescape")
    pos = body.find(delim)
    if pos < 0 or (pos > 0 and body[pos - 1 : pos] != b"\n"):
        return [], False
    parts: list[BodyPart] = []
    line_delim = b"\n" + delim
    while True:
        after = pos + len(delim)
        if body.startswith(b"--", after):
            return parts, True
        eol = body.find(b"\n", after)
        if eol < 0:
            return parts, False
        start = eol + 1
        nxt = body.find(line_delim, start - 1)
        if nxt < 0:
            parts.append(_parse_part(body[start:]))
            return parts, False
        end = nxt - 1 if nxt > 0 and body[nxt - 1 : nxt] == b"\r" else nxt
        parts.append(_parse_part(body[start : max(end, start)]))
        pos = nxt + 1


def _parse_part(raw: bytes) -> BodyPart:
    if raw.startswith(b"\r\n"):
        head, content = b"", raw[2:]
    elif raw.startswith(b"\n"):
        head, content = b"", raw[1:]
    else:
        crlf = raw.find(b"\r\n\r\n")
        lf = raw.find(b"\n\n")
        if lf >= 0 and (crlf < 0 or lf < crlf):
            head, content = raw[:lf], raw[lf + 2 :]
        elif crlf >= 0:
            head, content = raw[:crlf], raw[crlf + 4 :]
        else:
            head, content = raw, b""
    headers: dict[str, list[str]] = {}
    if head:
        text = head.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        last: str | None = None
        for line in text.split("\n"):
            if line[:1] in (" ", "\t") and last is not None:
                values = headers[last]
                values[-1] = values[-1] + " " + line.strip(" \t")
                continue
            name, colon, value = line.partition(":")
            key = header_key(name) if colon else None
            if key is None:
                last = None
                continue
            headers.setdefault(key, []).append(value.strip(" \t"))
            last = key
    ct_values = headers.get("content-type")
    cd_values = headers.get("content-disposition")
    content_type = parse_media_type(ct_values[0]) if ct_values else None
    disposition = parse_disposition(cd_values[0]) if cd_values else None
    return BodyPart(content_type, disposition, content, headers)


def is_session_sdp(content_type: MediaType | None, disposition: ContentDisposition | None) -> bool:
    return (
        content_type is not None
        and content_type.type == "application"
        and content_type.subtype == "sdp"
        and (disposition is None or disposition.type == "session")
    )


def find_session_sdp(
    content_type: MediaType | None,
    disposition: ContentDisposition | None,
    body: bytes,
    depth: int = 0,
) -> bytes | None:
    """The SDP bytes that take part in offer/answer, or None."""
    if content_type is None or not body:
        return None
    if is_session_sdp(content_type, disposition):
        return body
    if content_type.type != "multipart" or depth >= _MAX_DEPTH:
        return None
    parts, _ = split_multipart(body, content_type.boundary or "")
    for part in parts:
        found = find_session_sdp(part.content_type, part.disposition, part.content, depth + 1)
        if found is not None:
            return found
    return None
