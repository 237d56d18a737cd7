"""Headers whose value is a number, optionally with a method or parameters.

CSeq = 1*DIGIT LWS Method, number < 2**32 [RFC 3261 §8.1.1.5, §20.16]; Max-Forwards 0..255
[§20.22]; Expires delta-seconds [§20.19]; Retry-After = delta-seconds [comment]
*(SEMI retry-param), retry-param "duration" [§20.33]; RSeq and RAck [RFC 3262 §7.1, §7.2];
Session-Expires = delta-seconds *(SEMI ("refresher" EQUAL ("uac"/"uas") / generic-param))
[RFC 4028 §4]; Min-SE = delta-seconds *(SEMI generic-param) [RFC 4028 §5].

Each extractor returns None when the value is unusable (not digits, or above 2**32-1 as in
RFC 4475 scalar02/scalarlg), so a consumer never stores an out-of-range number. The exact
grammar is checked by validation (`grammar.py`).
"""

from __future__ import annotations

import re
from typing import Final

from mypy_extensions import mypyc_attr

from consumers.sip.lazy_pattern import LazyPattern
from consumers.sip.lexing import Params, parse_delta, parse_params
from consumers.sip.memo import remember, table
from consumers.value import Value

_MISSING: Final = object()
_RETRY_AFTER: Final = LazyPattern(r"([0-9]+)[ \t]*(?:\(((?:[^()\\]|\\.)*)\))?[ \t]*(;.*)?", re.S)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class CSeq(Value):
    FIELDS = ("number", "method")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method  # case-sensitive [§20.16]


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class RAck(Value):
    FIELDS = ("rseq", "cseq", "method")

    def __init__(self, rseq: int, cseq: int, method: str) -> None:
        self.rseq = rseq
        self.cseq = cseq
        self.method = method


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SessionExpires(Value):
    """Shared by every message with the same text (memoised): never modified."""

    FIELDS = ("delta", "refresher", "params")

    def __init__(self, delta: int, refresher: str | None, params: Params | None = None) -> None:
        self.delta = delta  # seconds
        # "uac", "uas", or None when absent (or not one of the two)
        self.refresher = refresher
        self.params: Params = {} if params is None else params


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class RetryAfter(Value):
    FIELDS = ("seconds", "comment", "duration", "params")

    def __init__(
        self,
        seconds: int,
        comment: str | None = None,
        duration: int | None = None,
        params: Params | None = None,
    ) -> None:
        self.seconds = seconds
        self.comment = comment
        self.duration = duration
        self.params: Params = {} if params is None else params


_MEMO_CSEQ: Final[dict[str, CSeq | None]] = table()


def parse_cseq(value: str) -> CSeq | None:
    """Memoised: the result is shared by every message with the same text (read-only)."""
    found = _MEMO_CSEQ.get(value, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    parts = value.split()
    number = parse_delta(parts[0]) if len(parts) == 2 else None
    return remember(_MEMO_CSEQ, value, CSeq(number, parts[1]) if number is not None else None)


def parse_rseq(value: str) -> int | None:
    number = parse_delta(value)
    return number if number else None  # RSeq starts at 1 [RFC 3262 §3]


def parse_rack(value: str) -> RAck | None:
    parts = value.split()
    if len(parts) != 3:
        return None
    rseq = parse_delta(parts[0])
    cseq = parse_delta(parts[1])
    if rseq is None or cseq is None:
        return None
    return RAck(rseq, cseq, parts[2])


def parse_max_forwards(value: str) -> int | None:
    return parse_delta(value, 255)


def parse_session_expires(value: str) -> SessionExpires | None:
    number, semi, rest = value.partition(";")
    delta = parse_delta(number.rstrip(" \t"))
    if delta is None:
        return None
    if not semi:
        return SessionExpires(delta, None, {})
    params = parse_params(";" + rest)
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher != "uac" and refresher != "uas":
            refresher = None
    return SessionExpires(delta, refresher, params)


def parse_min_se(value: str) -> int | None:
    return parse_delta(value.partition(";")[0].rstrip(" \t"))


def parse_retry_after(value: str) -> RetryAfter | None:
    m = _RETRY_AFTER.fullmatch(value)
    if m is None:
        return None
    seconds = parse_delta(m.group(1))
    if seconds is None:
        return None
    params = parse_params(m.group(3)) if m.group(3) else {}
    duration: int | None = None
    if "duration" in params:
        duration = parse_delta(params["duration"])
        if duration is None:
            return None
    comment = m.group(2)
    return RetryAfter(seconds, comment.strip() if comment is not None else None, duration, params)
