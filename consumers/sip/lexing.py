"""Lexical helpers shared by the header-value extractors: comma lists, `;name=value`
parameters, quoted strings, %-unescaping, bounded numbers.

These extract liberally and fast; they do not judge syntax (that is `grammar.py`, run only
by validation). Grammar from RFC 3261 §25.1: SEMI/EQUAL/COMMA may have whitespace around
them (SWS); quoted strings with quoted-pair; `escaped` (% HEX HEX) is legal only inside
SIP/SIPS URIs and the Reason-Phrase (RFC 4475 §3.1.1.3). Every function here is total.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_to_bytes

from consumers.sip.lazy_pattern import LazyPattern

# Parameter names are lower-cased; a parameter without "=value" maps to "".
Params = dict[str, str]

_WS: Final = " \t"
QUOTED_RE: Final = LazyPattern(r'"((?:[^"\\]|\\.)*+)"', re.S)
_QUOTED_PAIR: Final = LazyPattern(r"\\(.)", re.S)

# One element of a comma list: anything but a comma, where quoted strings and <...> are
# opaque; an unterminated quote or bracket runs to the end. Possessive quantifiers keep it
# linear on hostile input.
_LIST_ELEMENT: Final = LazyPattern(r'(?:[^,"<]++|"(?:[^"\\]|\\.)*+"?|<[^>]*+>?)*+', re.S)
# One ;name[=value] where the value may be a quoted string (slow path only).
_PARAM_ITEM: Final = LazyPattern(
    r'[ \t]*;[ \t]*([^;=" \t]*)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*+"?|[^;" \t]*))?[^;"]*', re.S
)


def unquote(text: str) -> str:
    """Body of a quoted string with quoted-pairs resolved; `text` includes the quotes."""
    inner = text[1:-1] if len(text) >= 2 and text[-1] == '"' else text[1:]
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner


def split_list(value: str) -> list[str]:
    """Split a comma-list header value on commas outside quotes and <...>.

    Elements are whitespace-trimmed; empty elements (",,") are kept as "" so that callers
    (and validation) can see a stray separator.
    """
    if '"' not in value and "<" not in value:
        return [part.strip(_WS) for part in value.split(",")]
    out: list[str] = []
    pos = 0
    end = len(value)
    match = _LIST_ELEMENT.match
    while True:
        m = match(value, pos)
        stop = m.end() if m is not None else pos
        out.append(value[pos:stop].strip(_WS))
        if stop >= end:
            return out
        pos = stop + 1  # skip the comma


def parse_params(text: str) -> Params:
    """`;name[=value]...` to a dict: names lower-cased, values unquoted, "" for no value,
    first occurrence wins. Text before the first ';' is ignored (validation reports it)."""
    if '"' in text:
        return _parse_params_quoted(text)
    params: Params = {}
    parts = text.split(";")
    if " " in text or "\t" in text:
        for i in range(1, len(parts)):
            name, _, value = parts[i].partition("=")
            name = name.strip(_WS)
            if name:
                params.setdefault(name.lower(), value.strip(_WS))
        return params
    for i in range(1, len(parts)):
        name, _, value = parts[i].partition("=")
        if name:
            params.setdefault(name.lower(), value)
    return params


def _parse_params_quoted(text: str) -> Params:
    params: Params = {}
    pos = text.find(";")
    if pos < 0:
        return params
    end = len(text)
    while pos < end:
        m = _PARAM_ITEM.match(text, pos)
        if m is None or m.end() == pos:
            break
        name = m.group(1).lower()
        raw_value = m.group(2) or ""
        if name and name not in params:
            params[name] = unquote(raw_value) if raw_value.startswith('"') else raw_value
        pos = m.end()
    return params


def percent_unescape(text: str) -> str:
    """Resolve % HEX HEX once, never recursively ("%2541" gives "%41"); a % not followed by
    two hex digits stays literal. Escaped octets are decoded as UTF-8; invalid UTF-8 and %00
    survive as surrogate escapes / NUL, so nothing is truncated (RFC 4475 escnull)."""
    if "%" not in text:
        return text
    raw = unquote_to_bytes(text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def parse_delta(text: str, limit: int = 0xFFFFFFFF) -> int | None:
    """1*DIGIT up to `limit` (delta-seconds, CSeq, Content-Length...); None otherwise."""
    if not text or len(text) > 20 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= limit else None
