"""Full validation of a parsed message: the checks behind `SipMessage.malformed_reasons`.

Framing problems come from `framing`. This adds the message-level rules: mandatory Call-ID,
CSeq, From, To, Via [RFC 3261 §8.1.1; Max-Forwards and Contact are not required, for
RFC 2543 peers, RFC 4475 inv2543]; headers that may appear once (RFC 4475 multi01); CSeq
method equal to the request method [§8.1.1.5, RFC 4475 mismatch01/02]; a Request-URI
without ?headers [§19.1.1 table 1, RFC 4475 escruri]. Then each present header line is
checked against its grammar (`grammar.py`) and its extractor's range checks. Verdicts on
values that recur (From, To, Contact, Route, Allow, Content-Type...) are memoised by text.

The SDP body is judged separately (`Sdp.malformed_reasons`): an odd SDP does not make the
SIP message malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from consumers.sip import grammar
from consumers.sip.correlation import parse_replaces, parse_session_id
from consumers.sip.lazy_pattern import LazyPattern
from consumers.sip.lexing import parse_delta, split_list
from consumers.sip.memo import remember, table
from consumers.sip.name_addr import name_addr_errors, parse_name_addr
from consumers.sip.numeric_headers import (
    parse_cseq,
    parse_max_forwards,
    parse_min_se,
    parse_rack,
    parse_retry_after,
    parse_rseq,
    parse_session_expires,
)
from consumers.sip.reasons import Malformed
from consumers.sip.uri import parse_uri

if TYPE_CHECKING:
    from consumers.sip.message import SipMessage

Codes = tuple[str, ...]
_OK: Final[Codes] = ()

_MANDATORY: Final = (
    ("call-id", Malformed.MISSING_CALL_ID),
    ("cseq", Malformed.MISSING_CSEQ),
    ("from", Malformed.MISSING_FROM),
    ("to", Malformed.MISSING_TO),
    ("via", Malformed.MISSING_VIA),
)
_MANDATORY_KEYS: Final = frozenset(key for key, _ in _MANDATORY)
_SINGLE_VALUED: Final = frozenset(
    {
        "call-id", "cseq", "from", "to", "max-forwards", "content-type", "expires",
        "session-expires", "min-se", "rseq", "rack", "retry-after",
    }
)  # fmt: skip
_RURI_MEMO: Final[dict[str, Codes]] = table()


def validate(msg: SipMessage, framing_reasons: tuple[str, ...]) -> list[str]:
    found = list(framing_reasons)
    headers = msg.headers

    if msg.is_request or msg.is_response:
        missing = _MANDATORY_KEYS.difference(headers)
        if missing:
            found.extend(code for key, code in _MANDATORY if key in missing)

    if msg.is_request:
        text = msg.request_uri_text or ""
        codes = _RURI_MEMO.get(text)
        if codes is None:
            codes = remember(_RURI_MEMO, text, _request_uri(text))
        found.extend(codes)
        cseq = msg.cseq
        if cseq is not None and cseq.method != msg.method:
            found.append(Malformed.CSEQ_METHOD_MISMATCH)

    checks = _CHECKS
    for key, values in headers.items():
        entry = checks.get(key)
        if entry is None:
            continue
        check, memo = entry
        if len(values) > 1 and key in _SINGLE_VALUED:
            found.append(Malformed.DUPLICATE_HEADER)
        for value in values:
            if memo is None:
                codes = check(value)
            else:
                codes = memo.get(value)
                if codes is None:
                    codes = remember(memo, value, check(value))
            if codes:
                found.extend(codes)

    return list(dict.fromkeys(found)) if len(found) > 1 else found


def _request_uri(text: str) -> Codes:
    if not text or not grammar.uri_ok(text) or parse_uri(text).headers:
        return (Malformed.BAD_REQUEST_URI,)
    return _OK


def _check(
    pattern: LazyPattern, extract: Callable[[str], object] | None, code: str
) -> Callable[[str], Codes]:
    """A checker: the value must match `pattern` and `extract` must not give None."""
    fullmatch = pattern.fullmatch
    bad: Codes = (code,)

    def check(value: str) -> Codes:
        if fullmatch(value) is None or (extract is not None and extract(value) is None):
            return bad
        return _OK

    return check


def _extracts(extract: Callable[[str], object], code: str) -> Callable[[str], Codes]:
    bad: Codes = (code,)
    return lambda value: bad if extract(value) is None else _OK


def _via(value: str) -> Codes:
    elements = split_list(value) if "," in value else (value,)
    for element in elements:
        if not element or grammar.VIA_PARM.fullmatch(element) is None:
            return (Malformed.BAD_VIA,)
    return _OK


def _name_addr_list(value: str) -> Codes:
    found: list[str] = []
    for element in split_list(value) if "," in value else (value,):
        found.extend(name_addr_errors(element) if element else (Malformed.BAD_NAME_ADDR,))
    return tuple(dict.fromkeys(found)) if found else _OK


def _contact(value: str) -> Codes:
    if value == "*":
        return _OK
    found = list(_name_addr_list(value))
    for element in split_list(value) if "," in value else (value,):
        expires = parse_name_addr(element).params.get("expires") if element else None
        if expires is not None and parse_delta(expires) is None:
            found.append(Malformed.BAD_EXPIRES)
            break
    return tuple(dict.fromkeys(found)) if found else _OK


def _session_expires(value: str) -> Codes:
    parsed = parse_session_expires(value)
    if (
        parsed is None
        or grammar.DELTA_PARAMS.fullmatch(value) is None
        or ("refresher" in parsed.params and parsed.refresher is None)
    ):
        return (Malformed.BAD_SESSION_EXPIRES,)
    return _OK


def _list_of(pattern: LazyPattern, code: str) -> Callable[[str], Codes]:
    fullmatch = pattern.fullmatch
    bad: Codes = (code,)

    def check(value: str) -> Codes:
        for element in split_list(value):
            if fullmatch(element) is None:
                return bad
        return _OK

    return check


def _reason(value: str) -> Codes:
    for element in split_list(value):
        if grammar.PROTOCOL_PARAMS.fullmatch(element) is None:
            return (Malformed.BAD_REASON,)
        lowered = element.lower()
        if ";" in lowered and "cause" in lowered:
            for param in lowered.split(";")[1:]:
                name, _, cause = param.partition("=")
                cause = cause.strip(" \t")
                if name.strip(" \t") == "cause" and not (cause.isascii() and cause.isdigit()):
                    return (Malformed.BAD_REASON,)
    return _OK


# header key -> (checker of one header line, memo table or None for values unique per
# transaction such as Via, CSeq and Date)
_CHECKS: Final[dict[str, tuple[Callable[[str], Codes], dict[str, Codes] | None]]] = {
    "via": (_via, None),
    "from": (name_addr_errors, None),  # memoised inside
    "to": (name_addr_errors, None),
    "refer-to": (name_addr_errors, None),
    "contact": (_contact, table()),
    "route": (_name_addr_list, table()),
    "record-route": (_name_addr_list, table()),
    "call-id": (_check(grammar.CALL_ID, None, Malformed.BAD_CALL_ID), None),
    "cseq": (_check(grammar.CSEQ, parse_cseq, Malformed.BAD_CSEQ), None),
    "rack": (_check(grammar.RACK, parse_rack, Malformed.BAD_RACK), None),
    "rseq": (_extracts(parse_rseq, Malformed.BAD_RSEQ), None),
    "max-forwards": (_extracts(parse_max_forwards, Malformed.BAD_MAX_FORWARDS), None),
    "expires": (_extracts(parse_delta, Malformed.BAD_EXPIRES), None),
    "session-expires": (_session_expires, table()),
    "min-se": (_check(grammar.DELTA_PARAMS, parse_min_se, Malformed.BAD_MIN_SE), table()),
    "retry-after": (
        _check(grammar.RETRY_AFTER, parse_retry_after, Malformed.BAD_RETRY_AFTER),
        table(),
    ),
    "content-type": (_check(grammar.MEDIA_TYPE, None, Malformed.BAD_CONTENT_TYPE), table()),
    "content-disposition": (
        _check(grammar.DISPOSITION, None, Malformed.BAD_CONTENT_DISPOSITION),
        table(),
    ),
    "date": (_check(grammar.RFC1123_DATE, None, Malformed.BAD_DATE), None),
    "allow": (_check(grammar.TOKEN_LIST, None, Malformed.BAD_TOKEN_LIST), table()),
    "supported": (_check(grammar.TOKEN_LIST, None, Malformed.BAD_TOKEN_LIST), table()),
    "require": (_check(grammar.TOKEN_LIST, None, Malformed.BAD_TOKEN_LIST), table()),
    "proxy-require": (_check(grammar.TOKEN_LIST, None, Malformed.BAD_TOKEN_LIST), table()),
    "unsupported": (_check(grammar.TOKEN_LIST, None, Malformed.BAD_TOKEN_LIST), table()),
    "reason": (_reason, table()),
    "warning": (_list_of(grammar.WARNING_VALUE, Malformed.BAD_WARNING), table()),
    "event": (_check(grammar.PROTOCOL_PARAMS, None, Malformed.BAD_EVENT), table()),
    "session-id": (_extracts(parse_session_id, Malformed.BAD_SESSION_ID), None),
    "replaces": (_extracts(parse_replaces, Malformed.BAD_REPLACES), None),
}
