"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route, Refer-To.

(name-addr / addr-spec) *(SEMI param), name-addr = [display-name] LAQUOT addr-spec RAQUOT,
display-name = *(token LWS) / quoted-string [RFC 3261 §20.10, §20.20, §20.39, §25.1].
Without <>, every `;param` belongs to the header, not to the URI [§20]; RFC 4475 cparam01
vs cparam02. The URI is parsed only when `uri` is read; syntax is judged only when `errors`
is read (`grammar.NAME_ADDR_VALUE` plus the URI's own check).

Extraction is liberal, so malformed values still yield their parts: an unterminated quoted
display name ends at the last '<' (RFC 4475 quotbal), an unquoted display name with a comma
is kept as written (baddn), whitespace just inside <> is dropped (badaspec), and an
unbracketed URI with ?headers is taken whole (regbadct). `errors` reports each of these.
"""

from __future__ import annotations

from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.sip.grammar import NAME_ADDR_VALUE, uri_ok
from consumers.sip.lexing import QUOTED_RE, Params, parse_delta, parse_params, unquote
from consumers.sip.memo import remember, table
from consumers.sip.reasons import Malformed
from consumers.sip.uri import Uri, parse_uri

_WS: Final = " \t"
# Returned by the fast finders when only a full parse can tell.
NEEDS_PARSE: Final[Any] = object()
_ERRORS_MEMO: Final[dict[str, tuple[str, ...]]] = table()


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class NameAddr:
    """One name-addr or addr-spec with its header parameters."""

    __slots__ = ("_uri", "bracketed", "display_name", "params", "raw", "uri_text")

    def __init__(
        self,
        raw: str,
        display_name: str | None,
        uri_text: str,
        params: Params,
        bracketed: bool,
    ) -> None:
        self.raw = raw  # the value as written (trimmed)
        self.display_name = display_name  # quoted-pairs resolved; None when absent
        self.uri_text = uri_text  # the URI as written, without <>
        self.params = params  # header params: names lower-cased, "" = no value
        self.bracketed = bracketed  # written with <> (name-addr) rather than bare addr-spec
        self._uri: Uri | None = None

    def __repr__(self) -> str:
        return (
            f"NameAddr(display_name={self.display_name!r}, uri={self.uri_text!r}, "
            f"params={self.params!r})"
        )

    @property
    def uri(self) -> Uri:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri_text)
        return uri

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def lr(self) -> bool:
        """Loose-routing flag of the URI (Route / Record-Route entries, §19.1.1)."""
        return "lr" in self.uri.params

    @property
    def expires(self) -> int | None:
        """Contact `expires` param in seconds; None if absent or not a 32-bit number."""
        value = self.params.get("expires")
        return parse_delta(value) if value is not None else None

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        if not value or len(value) > 5:
            return None
        try:
            q = float(value)
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None

    @property
    def errors(self) -> list[str]:
        """Reason codes for this value: bad_name_addr and/or bad_uri; [] when well formed."""
        return list(name_addr_errors(self.raw))


def name_addr_errors(text: str) -> tuple[str, ...]:
    """Strict check of one name-addr/addr-spec value with params (memoised: the same From,
    To, Contact and Route values recur across a dialog and across calls)."""
    codes = _ERRORS_MEMO.get(text)
    if codes is None:
        m = NAME_ADDR_VALUE.fullmatch(text)
        if m is None:
            codes = (Malformed.BAD_NAME_ADDR,)
            # still judge the URI when it can be found, for a precise report
            uri_text = parse_name_addr(text).uri_text
            if uri_text and not uri_ok(uri_text):
                codes += (Malformed.BAD_URI,)
        else:
            codes = () if uri_ok(m.group("b") or m.group("a")) else (Malformed.BAD_URI,)
        remember(_ERRORS_MEMO, text, codes)
    return codes


def parse_name_addr(text: str) -> NameAddr:
    """Extract display name, URI text and params from one value. Never raises."""
    s = text.strip(_WS)
    display: str | None = None
    if s[:1] == '"':
        m = QUOTED_RE.match(s)
        if m is not None:
            display = unquote(m.group(0))
            rest = s[m.end() :].lstrip(_WS)
        else:
            lt = s.rfind("<")
            if lt > 0 and s.find(">", lt) > 0:
                display = s[1:lt].strip(_WS)
                rest = s[lt:]
            else:
                return NameAddr(s, s[1:], "", {}, False)
        if rest[:1] != "<":
            # a quoted display name must be followed by <...>; keep what there is
            uri_text, _, param_text = rest.partition(";")
            params = parse_params(";" + param_text) if param_text else {}
            return NameAddr(s, display, uri_text.strip(_WS), params, False)
    else:
        lt = s.find("<")
        if lt < 0:
            semi = s.find(";")
            if semi < 0:
                return NameAddr(s, None, s, {}, False)
            return NameAddr(s, None, s[:semi].rstrip(_WS), parse_params(s[semi:]), False)
        if lt > 0:
            display = s[:lt].rstrip(_WS) or None
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        return NameAddr(s, display, rest[1:].strip(_WS), {}, True)
    uri_text = rest[1:gt]
    if uri_text[:1] in (" ", "\t") or uri_text[-1:] in (" ", "\t"):
        uri_text = uri_text.strip(_WS)
    param_text = rest[gt + 1 :]
    return NameAddr(s, display, uri_text, parse_params(param_text) if param_text else {}, True)


def fast_tag(value: str) -> Any:  # str, None or NEEDS_PARSE
    """The tag param of a From/To value without taking it apart, or NEEDS_PARSE when the
    value is unusual (quotes, LWS, other case) and only `parse_name_addr` can tell."""
    if '"' in value:
        return NEEDS_PARSE
    gt = value.rfind(">")
    start = value.find(";tag=", gt + 1)
    if start < 0:
        # no parameter at all after the URI: certainly no tag
        return None if value.find(";", gt + 1) < 0 else NEEDS_PARSE
    start += 5
    end = value.find(";", start)
    tag = value[start:end] if end >= 0 else value[start:]
    if not tag or " " in tag or "\t" in tag or "," in tag:
        return NEEDS_PARSE
    return tag
