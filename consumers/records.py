"""Typed output records of the consumers: messages, session changes, dialogs, anomalies.

These are the only things the sans-I/O core emits. Sinks (JSON lines now, ClickHouse later)
turn them into rows; `to_dict()` gives the JSON-ready form. Every record has a deterministic
`id` built from what it describes (never from wall-clock time or process state), so a
replay of the same input after a crash or rebalance yields the same ids and a sink can drop
what it already stored. The anomaly columns are PROTOCOL.md C.0's common columns; each
family's own fields go in `fields`. `kind` is a read-only property naming the record type.

The records are compiled with the rest of the core (setup.py): built positionally from the
engine they are C structs, not interpreted dataclasses with a Python `__init__`; they stay
dataclasses (`fields`, `asdict`, `replace` work) and take exactly their declared types.
`LegRecord` lives in `consumers.leg_record`, interpreted (re-exported here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Final, Self

from mypy_extensions import mypyc_attr

from consumers.leg_record import LegRecord
from consumers.observation import fields_repr, replaced_fields


class Severity(StrEnum):
    """PROTOCOL.md C.0 severity scale."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# ObservationRow and MessageRecord are built once per captured copy and per message, from
# compiled code: as plain classes their constructor is compiled too, where a compiled
# dataclass runs the decorator's interpreted __init__ (~2 us for a message record). They
# keep a dataclass's equality, repr, `replace` and `to_dict` (asdict's form).
_OBSERVATIONROW_FIELDS: Final = (
    "ts_us",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "hop",
    "ref",
    "copies",
)
_MESSAGERECORD_FIELDS: Final = (
    "id",
    "event_time_us",
    "node",
    "capture_id",
    "call_id",
    "is_request",
    "method",
    "status",
    "reason_phrase",
    "cseq",
    "from_tag",
    "to_tag",
    "direction",
    "dialog_state",
    "origin",
    "retransmission",
    "transport",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "user_agent",
    "allow",
    "supported",
    "require",
    "session_expires",
    "refresher",
    "min_se",
    "has_sdp",
    "sdp_role",
    "malformed",
    "correlation_id",
    "x_cid",
    "observations",
    "raw",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class ObservationRow:
    """One captured copy of a logical message (C.0.1, C.0.2)."""

    __slots__ = _OBSERVATIONROW_FIELDS

    def __init__(
        self,
        ts_us: int,
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        hop: str,  # "in" (to the proxy), "out" (from the proxy) or "unknown"
        ref: str,
        copies: int = 1,  # transport duplicates of this copy (same bytes, same addresses)
    ) -> None:
        self.ts_us = ts_us
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.hop = hop
        self.ref = ref
        self.copies = copies

    def _values(self) -> tuple[Any, ...]:
        return (
            self.ts_us,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
            self.hop,
            self.ref,
            self.copies,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObservationRow):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return fields_repr("ObservationRow", _OBSERVATIONROW_FIELDS, self._values())

    def replace(self, **changes: Any) -> ObservationRow:
        """A copy with `changes` applied, as `dataclasses.replace` makes one."""
        return ObservationRow(
            **replaced_fields("ObservationRow", _OBSERVATIONROW_FIELDS, self._values(), changes)
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(_OBSERVATIONROW_FIELDS, self._values(), strict=True))


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class MessageRecord:
    """One logical SIP message with its captured copies (`observations`)."""

    __slots__ = _MESSAGERECORD_FIELDS

    def __init__(
        self,
        id: str,
        event_time_us: int,  # the sender's time: first in-copy, else first copy
        node: str,
        capture_id: int,
        call_id: str,
        is_request: bool,
        method: str,  # request method, or the CSeq method of a response
        status: int,  # 0 for requests
        reason_phrase: str,
        cseq: int,
        from_tag: str,
        to_tag: str,
        direction: str,  # caller_to_callee, callee_to_caller, unknown
        dialog_state: str,  # dialog state when the message was processed
        origin: str,  # endpoint, proxy (generated by the observed proxy), unknown
        retransmission: bool,
        transport: str,
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        user_agent: str,
        allow: list[str] | None,
        supported: list[str] | None,
        require: list[str] | None,
        session_expires: int | None,
        refresher: str | None,
        min_se: int | None,
        has_sdp: bool,
        sdp_role: str,  # offer, answer, repeat, "" (none)
        malformed: list[str],
        correlation_id: str,
        x_cid: str,
        observations: list[ObservationRow] | None = None,
        raw: bytes = b"",
    ) -> None:
        self.id = id
        self.event_time_us = event_time_us
        self.node = node
        self.capture_id = capture_id
        self.call_id = call_id
        self.is_request = is_request
        self.method = method
        self.status = status
        self.reason_phrase = reason_phrase
        self.cseq = cseq
        self.from_tag = from_tag
        self.to_tag = to_tag
        self.direction = direction
        self.dialog_state = dialog_state
        self.origin = origin
        self.retransmission = retransmission
        self.transport = transport
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.user_agent = user_agent
        self.allow = allow
        self.supported = supported
        self.require = require
        self.session_expires = session_expires
        self.refresher = refresher
        self.min_se = min_se
        self.has_sdp = has_sdp
        self.sdp_role = sdp_role
        self.malformed = malformed
        self.correlation_id = correlation_id
        self.x_cid = x_cid
        self.observations = [] if observations is None else observations
        self.raw = raw

    def _values(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.event_time_us,
            self.node,
            self.capture_id,
            self.call_id,
            self.is_request,
            self.method,
            self.status,
            self.reason_phrase,
            self.cseq,
            self.from_tag,
            self.to_tag,
            self.direction,
            self.dialog_state,
            self.origin,
            self.retransmission,
            self.transport,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
            self.user_agent,
            self.allow,
            self.supported,
            self.require,
            self.session_expires,
            self.refresher,
            self.min_se,
            self.has_sdp,
            self.sdp_role,
            self.malformed,
            self.correlation_id,
            self.x_cid,
            self.observations,
            self.raw,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageRecord):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return fields_repr("MessageRecord", _MESSAGERECORD_FIELDS, self._values())

    def replace(self, **changes: Any) -> MessageRecord:
        """A copy with `changes` applied, as `dataclasses.replace` makes one."""
        return MessageRecord(
            **replaced_fields("MessageRecord", _MESSAGERECORD_FIELDS, self._values(), changes)
        )

    @property
    def kind(self) -> str:
        return "message"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: `dataclasses.asdict`'s, with "kind" and `raw` as text."""
        d: dict[str, Any] = dict(zip(_MESSAGERECORD_FIELDS, self._values(), strict=True))
        for key in ("allow", "supported", "require", "malformed"):
            value = d[key]
            if value is not None:
                d[key] = list(value)
        d["observations"] = [o.to_dict() for o in self.observations]
        d["kind"] = "message"
        d["raw"] = self.raw.decode("utf-8", "replace")
        return d


@mypyc_attr(serializable=True)
@dataclass
class SessionChangeRecord:
    """One mid-dialog re-INVITE, UPDATE or PRACK transaction (PROTOCOL.md C.10)."""

    id: str
    event_time_us: int  # the request's send time
    node: str
    call_id: str
    caller_tag: str
    callee_tag: str
    method: str
    cseq: int
    direction: str
    dialog_state: str  # when the request was sent
    status: int  # final status; 0 when none was seen
    status_class: str  # success, glare, overlap, dialog_lost, timeout, refused, rejected, ...
    time_to_final_ms: float | None
    intent: str  # hold, resume, codec_change, ..., no_sdp, refresh, target_refresh
    offer_in: str  # request, response, none
    sdp_version_before: int | None
    sdp_version_after: int | None
    had_reliable_1xx: bool
    retransmissions: int
    ua_sender: str
    ua_peer: str
    evidence: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "session_change"

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


@mypyc_attr(serializable=True)
@dataclass
class DialogRecord:
    """A dialog (or a call attempt that never got one) when it ends or is evicted."""

    id: str
    node: str
    call_id: str
    caller_tag: str
    callee_tag: str
    state: str  # the last state reached before the end
    start_time_us: int
    early_time_us: int | None
    confirmed_time_us: int | None
    end_time_us: int
    end_reason: str  # bye, rejected, cancelled, timeout, idle, evicted, capture_end
    initial_status: int
    call_id_owner: str  # caller side known (self) or unknown
    record_routed: bool | None
    caller_ua: str
    callee_ua: str
    caller_ip: str
    callee_ip: str
    reinvites: int
    updates: int
    pracks: int
    anomalies: int
    x_cid: str
    session_id_pair: str
    icid: str
    correlation_id: str

    @property
    def kind(self) -> str:
        return "dialog"

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


@mypyc_attr(serializable=True)
@dataclass
class AnomalyRecord:
    """One anomaly with PROTOCOL.md C.0's common columns and its family's `fields`."""

    id: str
    anomaly: str
    severity: str
    confidence: float
    event_time_us: int  # time of the triggering message
    detected_at_us: int  # stream time when it was detected
    node: str
    capture_id: int
    call_id: str
    caller_tag: str
    callee_tag: str
    dialog_state: str
    direction: str
    method: str
    cseq: int
    status: int
    reason: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    transport: str
    ua_sender: str
    ua_peer: str
    hep_correlation_id: str
    x_cid: str
    session_id_pair: str
    icid: str
    call_id_owner: str  # self, peer, unknown (relative to the offending side)
    family: str  # C.1 ... C.14
    evidence: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "anomaly"

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


Record = MessageRecord | SessionChangeRecord | DialogRecord | AnomalyRecord | LegRecord


def field_names(record: Any) -> tuple[str, ...]:
    """The field names of a record (or record type), in order, as `dataclasses.fields` gives
    them for the dataclass records."""
    cls = record if isinstance(record, type) else type(record)
    if cls is MessageRecord:
        return _MESSAGERECORD_FIELDS
    if cls is ObservationRow:
        return _OBSERVATIONROW_FIELDS
    return tuple(f.name for f in fields(cls))


__all__ = [
    "AnomalyRecord",
    "DialogRecord",
    "LegRecord",
    "MessageRecord",
    "ObservationRow",
    "Record",
    "SessionChangeRecord",
    "Severity",
    "field_names",
]
