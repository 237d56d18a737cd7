"""`SipMessage`: one parsed SIP request or response, with typed, lazily parsed accessors.

`framing.parse_message` fills the eager part: the start line [RFC 3261 §7.1, §7.2], the
header fields split into a dict keyed by lower-cased full name (compact forms expanded,
§7.3.3), and the body framed by Content-Length [§18.3, §20.14]. Every structured value is
extracted on first access and cached, so a consumer that reads only Call-ID, CSeq, the tags
and the top Via branch pays only for those.

Accessor conventions:
- an absent header gives None for single values and for option-tag sets ("no Allow" is None,
  "Allow:" with no value is an empty set, RFC 3261 §20.5), and [] for list-valued headers;
- numbers that are not numbers or exceed their range give None (never a huge int);
- name-addr and Via values are extracted liberally, so malformed input still yields parts;
- syntax is judged only by `malformed` / `malformed_reasons` (module `validation`).
Header values are text decoded as UTF-8 with surrogateescape: `value.encode("utf-8",
"surrogateescape")` gives back the exact bytes (Call-ID is compared byte by byte, §20.8).

The accessors the tracker and detectors read on nearly every message cache in their own
slot, set to a sentinel at construction (cheaper than a descriptor call on the hot path). The
rarely read ones (Via list, Contact, Route, the URI and name-addr parses, RFC 3262/3515/7989
values, validation...) cache in one dict made on the first such read, so building a message
does not pay for resetting two dozen slots it will never use. Each accessor catches its own
failure (a parser bug), returns an empty value and reports `parser_error`, so a consumer is
never taken down by one captured message.
"""

from __future__ import annotations

import sys
from typing import Any, Final, TypeVar

from mypy_extensions import mypyc_attr

from consumers.sip.body import BodyPart, find_session_sdp, split_multipart
from consumers.sip.correlation import (
    ChargingVector,
    Event,
    Replaces,
    SessionId,
    parse_charging_vector,
    parse_event,
    parse_replaces,
    parse_session_id,
)
from consumers.sip.header_names import Headers, normalise_name
from consumers.sip.lexing import parse_delta, percent_unescape, split_list
from consumers.sip.media_type import (
    ContentDisposition,
    MediaType,
    parse_disposition,
    parse_media_type,
)
from consumers.sip.memo import remember, table
from consumers.sip.name_addr import NEEDS_PARSE, NameAddr, fast_tag, parse_name_addr
from consumers.sip.numeric_headers import (
    CSeq,
    RAck,
    RetryAfter,
    SessionExpires,
    parse_cseq,
    parse_max_forwards,
    parse_min_se,
    parse_rack,
    parse_retry_after,
    parse_rseq,
    parse_session_expires,
)
from consumers.sip.reason_warning import ReasonValue, WarningValue, parse_reasons, parse_warnings
from consumers.sip.reasons import Malformed
from consumers.sip.sdp import Sdp, parse_sdp
from consumers.sip.uri import Uri, parse_uri
from consumers.sip.via import Via, fast_branch, parse_top_via, parse_via_values

T = TypeVar("T")
_UNSET: Final[Any] = object()
_MEMO_MAX_FORWARDS: Final[dict[str, Any]] = table()
_MEMO_SESSION_EXPIRES: Final[dict[str, Any]] = table()
_MEMO_MIN_SE: Final[dict[str, Any]] = table()
_MEMO_CONTENT_TYPE: Final[dict[str, Any]] = table()
_MEMO_CONTENT_DISPOSITION: Final[dict[str, Any]] = table()
_TOKENS_AS_WRITTEN: Final[dict[str, frozenset[str]]] = table()
_TOKENS_LOWERED: Final[dict[str, frozenset[str]]] = table()


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SipMessage:
    """A parsed SIP message. Build it with `parse_message`; treat it as read-only."""

    raw: bytes  # the exact input
    start_line: str
    is_request: bool
    is_response: bool  # both False when the start line is not recognisable
    method: str | None  # requests: case-sensitive token as written
    request_uri_text: str | None  # requests: the Request-URI as written
    version: str  # as written, e.g. "SIP/2.0"
    status_code: int | None  # responses with a valid 100..699 code
    reason_phrase: str | None  # responses: as written (may be empty or UTF-8)
    headers: Headers  # lower-cased full name -> one value per header line (a tuple)
    body: bytes  # framed by Content-Length when it is present and valid
    content_length: int | None  # the valid Content-Length value; None if absent or bad
    trailing_bytes: int  # octets after Content-Length that were discarded (§18.3)

    __slots__ = (
        "_c_allow",
        "_c_content_disposition",
        "_c_content_type",
        "_c_cseq",
        "_c_from_tag",
        "_c_min_se",
        "_c_require",
        "_c_sdp",
        "_c_session_expires",
        "_c_supported",
        "_c_to_tag",
        "_c_top_via_branch",
        "_framing_reasons",
        "_parser_errors",
        "_rare",
        "body",
        "content_length",
        "headers",
        "is_request",
        "is_response",
        "method",
        "raw",
        "reason_phrase",
        "request_uri_text",
        "start_line",
        "status_code",
        "trailing_bytes",
        "version",
    )

    def __init__(
        self,
        raw: bytes,
        start_line: str,
        is_request: bool,
        is_response: bool,
        method: str | None,
        request_uri_text: str | None,
        version: str,
        status_code: int | None,
        reason_phrase: str | None,
        headers: Headers,
        body: bytes,
        content_length: int | None,
        trailing_bytes: int,
        framing_reasons: tuple[str, ...],
    ) -> None:
        self.raw = raw
        self.start_line = start_line
        self.is_request = is_request
        self.is_response = is_response
        self.method = method
        self.request_uri_text = request_uri_text
        self.version = version
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.body = body
        self.content_length = content_length
        self.trailing_bytes = trailing_bytes
        self._framing_reasons = framing_reasons
        self._parser_errors = 0
        self._rare: dict[str, Any] | None = None
        self._c_allow = _UNSET
        self._c_content_disposition = _UNSET
        self._c_content_type = _UNSET
        self._c_cseq = _UNSET
        self._c_from_tag = _UNSET
        self._c_min_se = _UNSET
        self._c_require = _UNSET
        self._c_sdp = _UNSET
        self._c_session_expires = _UNSET
        self._c_supported = _UNSET
        self._c_to_tag = _UNSET
        self._c_top_via_branch = _UNSET

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        # Pickled as its bytes: the parse is deterministic, and the caches hold a
        # process-local sentinel that must not cross a checkpoint.
        from consumers.sip.framing import parse_message

        return (parse_message, (self.raw,))

    def __repr__(self) -> str:
        first = self.start_line if len(self.start_line) <= 80 else self.start_line[:77] + "..."
        return f"<SipMessage {first!r} call_id={self.call_id!r}>"

    # -- generic access -------------------------------------------------------------------

    def header(self, name: str) -> list[str]:
        """Values of a header, one per header line, in order. Compact names are accepted."""
        return list(self.headers.get(normalise_name(name), ()))

    def header_first(self, name: str) -> str | None:
        values = self.headers.get(normalise_name(name))
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        """Values of a comma-list header, split on commas outside quotes and <>."""
        out: list[str] = []
        for value in self.headers.get(normalise_name(name), ()):
            out.extend(element for element in split_list(value) if element)
        return out

    # -- validity -------------------------------------------------------------------------

    @property
    def malformed_reasons(self) -> list[str]:
        """Every problem found, each reason code once, in the order found. The first read
        runs the full validation (every accessor plus the grammar checks); then cached."""
        value = self._rare_value("malformed_reasons")
        if value is _UNSET:
            from consumers.sip.validation import validate

            try:
                value = validate(self, self._framing_reasons)
            except Exception:
                value = [*self._framing_reasons, self._failed(Malformed.PARSER_ERROR)]
            if self._parser_errors and Malformed.PARSER_ERROR not in value:
                value.append(Malformed.PARSER_ERROR)
            self._keep("malformed_reasons", value)
        return value

    @property
    def malformed(self) -> bool:
        return bool(self.malformed_reasons)

    @property
    def framing_reasons(self) -> list[str]:
        """The problems found by the eager pass alone (start line, header lines, body
        framing): free to read, a subset of `malformed_reasons`."""
        return list(self._framing_reasons)

    # -- simple values (no parsing beyond the header split) -------------------------------

    @property
    def call_id(self) -> str | None:
        """Call-ID exactly as written (compare byte by byte, §8.1.1.4)."""
        values = self.headers.get("call-id")
        return values[0] if values else None

    @property
    def call_id_bytes(self) -> bytes | None:
        value = self.call_id
        return value.encode("utf-8", "surrogateescape") if value is not None else None

    @property
    def contact_wildcard(self) -> bool:
        """Contact: * (REGISTER removing every binding, §10.2.2)."""
        return any(value == "*" for value in self.headers.get("contact", ()))

    @property
    def user_agent(self) -> str | None:
        values = self.headers.get("user-agent")
        return values[0] if values else None

    @property
    def server(self) -> str | None:
        values = self.headers.get("server")
        return values[0] if values else None

    @property
    def x_cid(self) -> str | None:
        """X-CID: the A-leg Call-ID carried on a B-leg (PROTOCOL.md B.13)."""
        values = self.headers.get("x-cid")
        return values[0] if values else None

    @property
    def reason_phrase_unescaped(self) -> str | None:
        """Reason-Phrase with % HEX HEX resolved once (the phrase allows `escaped`)."""
        phrase = self.reason_phrase
        return percent_unescape(phrase) if phrase is not None else None

    @property
    def content_length_missing(self) -> bool:
        return "content-length" not in self.headers

    # -- parsed values, cached ------------------------------------------------------------

    @property
    def request_uri(self) -> Uri | None:
        """The Request-URI taken apart (requests only)."""
        value = self._rare_value("request_uri")
        if value is _UNSET:
            try:
                value = None if self.request_uri_text is None else parse_uri(self.request_uri_text)
            except Exception:
                value = self._failed(None)
            self._keep("request_uri", value)
        return value

    @property
    def cseq(self) -> CSeq | None:
        """CSeq number and method; None if absent or unusable."""
        value = self._c_cseq
        if value is _UNSET:
            try:
                values = self.headers.get("cseq")
                value = parse_cseq(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._c_cseq = value
        return value

    @property
    def from_(self) -> NameAddr | None:
        """From: display name, URI, tag, params."""
        value = self._rare_value("from_")
        if value is _UNSET:
            try:
                values = self.headers.get("from")
                value = parse_name_addr(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("from_", value)
        return value

    @property
    def to(self) -> NameAddr | None:
        """To: display name, URI, tag, params."""
        value = self._rare_value("to")
        if value is _UNSET:
            try:
                values = self.headers.get("to")
                value = parse_name_addr(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("to", value)
        return value

    @property
    def from_tag(self) -> str | None:
        """From tag, found without taking the whole value apart when possible."""
        value = self._c_from_tag
        if value is _UNSET:
            try:
                value = self._tag("from")
            except Exception:
                value = self._failed(None)
            self._c_from_tag = value
        return value

    @property
    def to_tag(self) -> str | None:
        """To tag; None before the UAS has set one."""
        value = self._c_to_tag
        if value is _UNSET:
            try:
                value = self._tag("to")
            except Exception:
                value = self._failed(None)
            self._c_to_tag = value
        return value

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (repeated lines and comma-joined values)."""
        value = self._rare_value("vias")
        if value is _UNSET:
            try:
                value = parse_via_values(self.headers.get("via", ()))
            except Exception:
                value = self._failed([])
            self._keep("vias", value)
        return value

    @property
    def top_via(self) -> Via | None:
        """The first Via value only (the others are not parsed)."""
        value = self._rare_value("top_via")
        if value is _UNSET:
            try:
                value = self._top_via()
            except Exception:
                value = self._failed(None)
            self._keep("top_via", value)
        return value

    @property
    def top_via_branch(self) -> str | None:
        """Branch of the top Via, found without parsing the value when possible."""
        value = self._c_top_via_branch
        if value is _UNSET:
            try:
                value = self._top_via_branch()
            except Exception:
                value = self._failed(None)
            self._c_top_via_branch = value
        return value

    @property
    def contact(self) -> list[NameAddr]:
        """Contact values with their params (expires, q...). The wildcard "*" is reported
        by `contact_wildcard`, not here."""
        value = self._rare_value("contact")
        if value is _UNSET:
            try:
                value = self._name_addrs("contact")
            except Exception:
                value = self._failed([])
            self._keep("contact", value)
        return value

    @property
    def record_route(self) -> list[NameAddr]:
        """Record-Route entries, top first; `entry.lr` tells loose routing."""
        value = self._rare_value("record_route")
        if value is _UNSET:
            try:
                value = self._name_addrs("record-route")
            except Exception:
                value = self._failed([])
            self._keep("record_route", value)
        return value

    @property
    def route(self) -> list[NameAddr]:
        """Route entries, top first."""
        value = self._rare_value("route")
        if value is _UNSET:
            try:
                value = self._name_addrs("route")
            except Exception:
                value = self._failed([])
            self._keep("route", value)
        return value

    @property
    def refer_to(self) -> NameAddr | None:
        """Refer-To (RFC 3515)."""
        value = self._rare_value("refer_to")
        if value is _UNSET:
            try:
                values = self.headers.get("refer-to")
                value = parse_name_addr(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("refer_to", value)
        return value

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, 0..255."""
        value = self._rare_value("max_forwards")
        if value is _UNSET:
            try:
                values = self.headers.get("max-forwards")
                if values:
                    text = values[0]
                    value = _MEMO_MAX_FORWARDS.get(text, _UNSET)
                    if value is _UNSET:
                        value = remember(_MEMO_MAX_FORWARDS, text, parse_max_forwards(text))
                else:
                    value = None
            except Exception:
                value = self._failed(None)
            self._keep("max_forwards", value)
        return value

    @property
    def expires(self) -> int | None:
        """Expires header, seconds."""
        value = self._rare_value("expires")
        if value is _UNSET:
            try:
                values = self.headers.get("expires")
                value = parse_delta(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("expires", value)
        return value

    @property
    def allow(self) -> frozenset[str] | None:
        """Allowed methods as written (case-sensitive). None when there is no Allow header
        (no information, RFC 3261 §20.5); empty when it is present but empty."""
        value = self._c_allow
        if value is _UNSET:
            try:
                value = self._tokens("allow", False)
            except Exception:
                value = self._failed(None)
            self._c_allow = value
        return value

    @property
    def supported(self) -> frozenset[str] | None:
        """Option tags, lower-cased; None when the header is absent."""
        value = self._c_supported
        if value is _UNSET:
            try:
                value = self._tokens("supported", True)
            except Exception:
                value = self._failed(None)
            self._c_supported = value
        return value

    @property
    def require(self) -> frozenset[str] | None:
        """Option tags, lower-cased; None when the header is absent."""
        value = self._c_require
        if value is _UNSET:
            try:
                value = self._tokens("require", True)
            except Exception:
                value = self._failed(None)
            self._c_require = value
        return value

    @property
    def proxy_require(self) -> frozenset[str] | None:
        """Option tags, lower-cased; None when the header is absent."""
        value = self._rare_value("proxy_require")
        if value is _UNSET:
            try:
                value = self._tokens("proxy-require", True)
            except Exception:
                value = self._failed(None)
            self._keep("proxy_require", value)
        return value

    @property
    def unsupported(self) -> frozenset[str] | None:
        """Option tags, lower-cased; None when the header is absent."""
        value = self._rare_value("unsupported")
        if value is _UNSET:
            try:
                value = self._tokens("unsupported", True)
            except Exception:
                value = self._failed(None)
            self._keep("unsupported", value)
        return value

    @property
    def session_expires(self) -> SessionExpires | None:
        """Session-Expires (or compact x): delta and refresher (RFC 4028 §4)."""
        value = self._c_session_expires
        if value is _UNSET:
            try:
                values = self.headers.get("session-expires")
                if values:
                    text = values[0]
                    value = _MEMO_SESSION_EXPIRES.get(text, _UNSET)
                    if value is _UNSET:
                        value = remember(_MEMO_SESSION_EXPIRES, text, parse_session_expires(text))
                else:
                    value = None
            except Exception:
                value = self._failed(None)
            self._c_session_expires = value
        return value

    @property
    def min_se(self) -> int | None:
        """Min-SE delta-seconds (RFC 4028 §5)."""
        value = self._c_min_se
        if value is _UNSET:
            try:
                values = self.headers.get("min-se")
                if values:
                    text = values[0]
                    value = _MEMO_MIN_SE.get(text, _UNSET)
                    if value is _UNSET:
                        value = remember(_MEMO_MIN_SE, text, parse_min_se(text))
                else:
                    value = None
            except Exception:
                value = self._failed(None)
            self._c_min_se = value
        return value

    @property
    def retry_after(self) -> RetryAfter | None:
        """Retry-After seconds, comment and duration (RFC 3261 §20.33)."""
        value = self._rare_value("retry_after")
        if value is _UNSET:
            try:
                values = self.headers.get("retry-after")
                value = parse_retry_after(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("retry_after", value)
        return value

    @property
    def rseq(self) -> int | None:
        """RSeq of a reliable provisional (RFC 3262 §7.1)."""
        value = self._rare_value("rseq")
        if value is _UNSET:
            try:
                values = self.headers.get("rseq")
                value = parse_rseq(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("rseq", value)
        return value

    @property
    def rack(self) -> RAck | None:
        """RAck of a PRACK: RSeq, CSeq number, method (RFC 3262 §7.2)."""
        value = self._rare_value("rack")
        if value is _UNSET:
            try:
                values = self.headers.get("rack")
                value = parse_rack(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("rack", value)
        return value

    @property
    def reason(self) -> list[ReasonValue]:
        """Reason values (RFC 3326); the header may repeat."""
        value = self._rare_value("reason")
        if value is _UNSET:
            try:
                value = parse_reasons(self.headers.get("reason", ()))
            except Exception:
                value = self._failed([])
            self._keep("reason", value)
        return value

    @property
    def warning(self) -> list[WarningValue]:
        """Warning values that have a 3-digit code."""
        value = self._rare_value("warning")
        if value is _UNSET:
            try:
                value = parse_warnings(self.headers.get("warning", ()))
            except Exception:
                value = self._failed([])
            self._keep("warning", value)
        return value

    @property
    def content_type(self) -> MediaType | None:
        """Content-Type: lower-cased type/subtype with params."""
        value = self._c_content_type
        if value is _UNSET:
            try:
                values = self.headers.get("content-type")
                if values:
                    text = values[0]
                    value = _MEMO_CONTENT_TYPE.get(text, _UNSET)
                    if value is _UNSET:
                        value = remember(_MEMO_CONTENT_TYPE, text, parse_media_type(text))
                else:
                    value = None
            except Exception:
                value = self._failed(None)
            self._c_content_type = value
        return value

    @property
    def content_disposition(self) -> ContentDisposition | None:
        """Content-Disposition (session, render, ...)."""
        value = self._c_content_disposition
        if value is _UNSET:
            try:
                values = self.headers.get("content-disposition")
                if values:
                    text = values[0]
                    value = _MEMO_CONTENT_DISPOSITION.get(text, _UNSET)
                    if value is _UNSET:
                        value = remember(_MEMO_CONTENT_DISPOSITION, text, parse_disposition(text))
                else:
                    value = None
            except Exception:
                value = self._failed(None)
            self._c_content_disposition = value
        return value

    @property
    def body_parts(self) -> list[BodyPart]:
        """Parts of a multipart/* body; [] for any other body."""
        value = self._rare_value("body_parts")
        if value is _UNSET:
            try:
                value = self._body_parts()
            except Exception:
                value = self._failed([])
            self._keep("body_parts", value)
        return value

    @property
    def sdp(self) -> Sdp | None:
        """The session description that takes part in offer/answer (an application/sdp
        body, or the session part of a multipart body), parsed; None when there is none."""
        value = self._c_sdp
        if value is _UNSET:
            try:
                value = self._sdp()
            except Exception:
                value = self._failed(None)
            self._c_sdp = value
        return value

    @property
    def session_id(self) -> SessionId | None:
        """Session-ID (RFC 7989): local and remote UUIDs, lower-cased."""
        value = self._rare_value("session_id")
        if value is _UNSET:
            try:
                values = self.headers.get("session-id")
                value = parse_session_id(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("session_id", value)
        return value

    @property
    def p_charging_vector(self) -> ChargingVector | None:
        """P-Charging-Vector (RFC 7315): icid-value and other params."""
        value = self._rare_value("p_charging_vector")
        if value is _UNSET:
            try:
                values = self.headers.get("p-charging-vector")
                value = parse_charging_vector(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("p_charging_vector", value)
        return value

    @property
    def event(self) -> Event | None:
        """Event package, id and params (RFC 6665)."""
        value = self._rare_value("event")
        if value is _UNSET:
            try:
                values = self.headers.get("event")
                value = parse_event(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("event", value)
        return value

    @property
    def replaces(self) -> Replaces | None:
        """Replaces: call-id, to-tag, from-tag, early-only (RFC 3891)."""
        value = self._rare_value("replaces")
        if value is _UNSET:
            try:
                values = self.headers.get("replaces")
                value = parse_replaces(values[0]) if values else None
            except Exception:
                value = self._failed(None)
            self._keep("replaces", value)
        return value

    # -- bulk read ------------------------------------------------------------------------

    # -- helpers --------------------------------------------------------------------------

    def _rare_value(self, key: str) -> Any:
        rare = self._rare
        return rare.get(key, _UNSET) if rare is not None else _UNSET

    def _keep(self, key: str, value: Any) -> None:
        rare = self._rare
        if rare is None:
            self._rare = {key: value}
        else:
            rare[key] = value

    def _failed(self, fallback: T) -> T:
        if isinstance(sys.exception(), MemoryError):
            raise  # the MemoryError the calling accessor is handling
        self._parser_errors += 1
        return fallback

    def _tag(self, key: str) -> str | None:
        values = self.headers.get(key)
        if not values:
            return None
        tag = fast_tag(values[0])
        if tag is NEEDS_PARSE:
            na = self.from_ if key == "from" else self.to
            return na.params.get("tag") if na is not None else None
        return tag

    def _top_via_branch(self) -> str | None:
        values = self.headers.get("via")
        if not values:
            return None
        branch = fast_branch(values[0])
        if branch is NEEDS_PARSE:
            via = self.top_via
            return via.params.get("branch") if via is not None else None
        return branch

    def _top_via(self) -> Via | None:
        vias = self._rare_value("vias")
        if vias is not _UNSET:
            return vias[0] if vias else None
        return parse_top_via(self.headers.get("via", ()))

    def _name_addrs(self, key: str) -> list[NameAddr]:
        out: list[NameAddr] = []
        for value in self.headers.get(key, ()):
            if "," in value:
                out.extend(parse_name_addr(e) for e in split_list(value) if e and e != "*")
            elif value and value != "*":
                out.append(parse_name_addr(value))
        return out

    def _tokens(self, key: str, lower: bool) -> frozenset[str] | None:
        values = self.headers.get(key)
        if values is None:
            return None
        memo = _TOKENS_LOWERED if lower else _TOKENS_AS_WRITTEN
        memo_key = values[0] if len(values) == 1 else "\n".join(values)
        tokens = memo.get(memo_key)
        if tokens is None:
            found: set[str] = set()
            for value in values:
                if lower:
                    value = value.lower()
                for item in value.split(","):
                    item = item.strip(" \t")
                    if item:
                        found.add(item)
            tokens = remember(memo, memo_key, frozenset(found))
        return tokens

    def _body_parts(self) -> list[BodyPart]:
        ct = self.content_type
        if ct is None or ct.type != "multipart" or not self.body:
            return []
        return split_multipart(self.body, ct.boundary or "")[0]

    def _sdp(self) -> Sdp | None:
        if not self.body:  # most messages: no need to look at Content-Type/-Disposition
            return None
        raw = find_session_sdp(self.content_type, self.content_disposition, self.body)
        return parse_sdp(raw) if raw is not None else None
