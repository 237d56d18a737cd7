"""Typed output records of the consumers: messages, session changes, dialogs, anomalies.

These are the only things the sans-I/O core emits. Sinks (JSON lines now, ClickHouse later)
turn them into rows; `to_dict()` gives the JSON-ready form. Every record has a deterministic
`id` built from what it describes (never from wall-clock time or process state), so a
replay of the same input after a crash or rebalance yields the same ids and a sink can drop
what it already stored. The anomaly columns are PROTOCOL.md C.0's common columns; each
family's own fields go in `fields`. `kind` is a read-only property naming the record type.

The records are compiled with the rest of the core (setup.py): C structs with a compiled
constructor that takes exactly their declared types. They are `consumers.value.Value`s, not
dataclasses: `FIELDS` names their fields in order, and they have a dataclass's equality,
repr and `replace`; `to_dict` copies containers as `dataclasses.asdict` does. `LegRecord`
lives in `consumers.leg_record`, interpreted (re-exported here).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.leg_record import LegRecord
from consumers.value import Value, plain


class Severity(StrEnum):
    """PROTOCOL.md C.0 severity scale."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# Built from compiled code (an ObservationRow per captured copy, a MessageRecord per message):
# as plain classes their constructor is compiled too, where a compiled dataclass runs the
# decorator's interpreted __init__ (~2 us for a message record) and costs ~3 ms at import
# for writing and compiling its methods.
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

_SESSION_CHANGE_FIELDS: Final = (
    "id",
    "event_time_us",
    "node",
    "call_id",
    "caller_tag",
    "callee_tag",
    "method",
    "cseq",
    "direction",
    "dialog_state",
    "status",
    "status_class",
    "time_to_final_ms",
    "intent",
    "offer_in",
    "sdp_version_before",
    "sdp_version_after",
    "had_reliable_1xx",
    "retransmissions",
    "ua_sender",
    "ua_peer",
    "evidence",
    "fields",
)

_DIALOG_FIELDS: Final = (
    "id",
    "node",
    "call_id",
    "caller_tag",
    "callee_tag",
    "state",
    "start_time_us",
    "early_time_us",
    "confirmed_time_us",
    "end_time_us",
    "end_reason",
    "initial_status",
    "call_id_owner",
    "record_routed",
    "caller_ua",
    "callee_ua",
    "caller_ip",
    "callee_ip",
    "reinvites",
    "updates",
    "pracks",
    "anomalies",
    "x_cid",
    "session_id_pair",
    "icid",
    "correlation_id",
)

_ANOMALY_FIELDS: Final = (
    "id",
    "anomaly",
    "severity",
    "confidence",
    "event_time_us",
    "detected_at_us",
    "node",
    "capture_id",
    "call_id",
    "caller_tag",
    "callee_tag",
    "dialog_state",
    "direction",
    "method",
    "cseq",
    "status",
    "reason",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "transport",
    "ua_sender",
    "ua_peer",
    "hep_correlation_id",
    "x_cid",
    "session_id_pair",
    "icid",
    "call_id_owner",
    "family",
    "evidence",
    "fields",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class ObservationRow(Value):
    """One captured copy of a logical message (C.0.1, C.0.2)."""

    __slots__ = _OBSERVATIONROW_FIELDS
    FIELDS = _OBSERVATIONROW_FIELDS

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

    def to_tuple(self) -> tuple[Any, ...]:
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

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(_OBSERVATIONROW_FIELDS, self.to_tuple(), strict=True))


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class MessageRecord(Value):
    """One logical SIP message with its captured copies (`observations`)."""

    __slots__ = _MESSAGERECORD_FIELDS
    FIELDS = _MESSAGERECORD_FIELDS

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

    def to_tuple(self) -> tuple[Any, ...]:
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

    @property
    def kind(self) -> str:
        return "message"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: `dataclasses.asdict`'s, with "kind" and `raw` as text."""
        d: dict[str, Any] = dict(zip(_MESSAGERECORD_FIELDS, self.to_tuple(), strict=True))
        for key in ("allow", "supported", "require", "malformed"):
            value = d[key]
            if value is not None:
                d[key] = list(value)
        d["observations"] = [o.to_dict() for o in self.observations]
        d["kind"] = "message"
        d["raw"] = self.raw.decode("utf-8", "replace")
        return d


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SessionChangeRecord(Value):
    """One mid-dialog re-INVITE, UPDATE or PRACK transaction (PROTOCOL.md C.10)."""

    __slots__ = _SESSION_CHANGE_FIELDS
    FIELDS = _SESSION_CHANGE_FIELDS

    def __init__(
        self,
        id: str,
        event_time_us: int,  # the request's send time
        node: str,
        call_id: str,
        caller_tag: str,
        callee_tag: str,
        method: str,
        cseq: int,
        direction: str,
        dialog_state: str,  # when the request was sent
        status: int,  # final status; 0 when none was seen
        status_class: str,  # success, glare, overlap, dialog_lost, timeout, refused, rejected, ...
        time_to_final_ms: float | None,
        intent: str,  # hold, resume, codec_change, ..., no_sdp, refresh, target_refresh
        offer_in: str,  # request, response, none
        sdp_version_before: int | None,
        sdp_version_after: int | None,
        had_reliable_1xx: bool,
        retransmissions: int,
        ua_sender: str,
        ua_peer: str,
        evidence: list[str] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.event_time_us = event_time_us
        self.node = node
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.method = method
        self.cseq = cseq
        self.direction = direction
        self.dialog_state = dialog_state
        self.status = status
        self.status_class = status_class
        self.time_to_final_ms = time_to_final_ms
        self.intent = intent
        self.offer_in = offer_in
        self.sdp_version_before = sdp_version_before
        self.sdp_version_after = sdp_version_after
        self.had_reliable_1xx = had_reliable_1xx
        self.retransmissions = retransmissions
        self.ua_sender = ua_sender
        self.ua_peer = ua_peer
        self.evidence: list[str] = [] if evidence is None else evidence
        self.fields: dict[str, Any] = {} if fields is None else fields

    def to_tuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.event_time_us,
            self.node,
            self.call_id,
            self.caller_tag,
            self.callee_tag,
            self.method,
            self.cseq,
            self.direction,
            self.dialog_state,
            self.status,
            self.status_class,
            self.time_to_final_ms,
            self.intent,
            self.offer_in,
            self.sdp_version_before,
            self.sdp_version_after,
            self.had_reliable_1xx,
            self.retransmissions,
            self.ua_sender,
            self.ua_peer,
            self.evidence,
            self.fields,
        )

    @property
    def kind(self) -> str:
        return "session_change"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: every field (containers copied, as `dataclasses.asdict`
        copies them) and "kind"."""
        d = dict(zip(self.FIELDS, plain(self.to_tuple()), strict=True))
        d["kind"] = self.kind
        return d


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class DialogRecord(Value):
    """A dialog (or a call attempt that never got one) when it ends or is evicted."""

    __slots__ = _DIALOG_FIELDS
    FIELDS = _DIALOG_FIELDS

    def __init__(
        self,
        id: str,
        node: str,
        call_id: str,
        caller_tag: str,
        callee_tag: str,
        state: str,  # the last state reached before the end
        start_time_us: int,
        early_time_us: int | None,
        confirmed_time_us: int | None,
        end_time_us: int,
        end_reason: str,  # bye, rejected, cancelled, timeout, idle, evicted, capture_end
        initial_status: int,
        call_id_owner: str,  # caller side known (self) or unknown
        record_routed: bool | None,
        caller_ua: str,
        callee_ua: str,
        caller_ip: str,
        callee_ip: str,
        reinvites: int,
        updates: int,
        pracks: int,
        anomalies: int,
        x_cid: str,
        session_id_pair: str,
        icid: str,
        correlation_id: str,
    ) -> None:
        self.id = id
        self.node = node
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.state = state
        self.start_time_us = start_time_us
        self.early_time_us = early_time_us
        self.confirmed_time_us = confirmed_time_us
        self.end_time_us = end_time_us
        self.end_reason = end_reason
        self.initial_status = initial_status
        self.call_id_owner = call_id_owner
        self.record_routed = record_routed
        self.caller_ua = caller_ua
        self.callee_ua = callee_ua
        self.caller_ip = caller_ip
        self.callee_ip = callee_ip
        self.reinvites = reinvites
        self.updates = updates
        self.pracks = pracks
        self.anomalies = anomalies
        self.x_cid = x_cid
        self.session_id_pair = session_id_pair
        self.icid = icid
        self.correlation_id = correlation_id

    def to_tuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.node,
            self.call_id,
            self.caller_tag,
            self.callee_tag,
            self.state,
            self.start_time_us,
            self.early_time_us,
            self.confirmed_time_us,
            self.end_time_us,
            self.end_reason,
            self.initial_status,
            self.call_id_owner,
            self.record_routed,
            self.caller_ua,
            self.callee_ua,
            self.caller_ip,
            self.callee_ip,
            self.reinvites,
            self.updates,
            self.pracks,
            self.anomalies,
            self.x_cid,
            self.session_id_pair,
            self.icid,
            self.correlation_id,
        )

    @property
    def kind(self) -> str:
        return "dialog"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: every field (containers copied, as `dataclasses.asdict`
        copies them) and "kind"."""
        d = dict(zip(self.FIELDS, plain(self.to_tuple()), strict=True))
        d["kind"] = self.kind
        return d


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class AnomalyRecord(Value):
    """One anomaly with PROTOCOL.md C.0's common columns and its family's `fields`."""

    __slots__ = _ANOMALY_FIELDS
    FIELDS = _ANOMALY_FIELDS

    def __init__(
        self,
        id: str,
        anomaly: str,
        severity: str,
        confidence: float,
        event_time_us: int,  # time of the triggering message
        detected_at_us: int,  # stream time when it was detected
        node: str,
        capture_id: int,
        call_id: str,
        caller_tag: str,
        callee_tag: str,
        dialog_state: str,
        direction: str,
        method: str,
        cseq: int,
        status: int,
        reason: str,
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        transport: str,
        ua_sender: str,
        ua_peer: str,
        hep_correlation_id: str,
        x_cid: str,
        session_id_pair: str,
        icid: str,
        call_id_owner: str,  # self, peer, unknown (relative to the offending side)
        family: str,  # C.1 ... C.14
        evidence: list[str] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.anomaly = anomaly
        self.severity = severity
        self.confidence = confidence
        self.event_time_us = event_time_us
        self.detected_at_us = detected_at_us
        self.node = node
        self.capture_id = capture_id
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.dialog_state = dialog_state
        self.direction = direction
        self.method = method
        self.cseq = cseq
        self.status = status
        self.reason = reason
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.transport = transport
        self.ua_sender = ua_sender
        self.ua_peer = ua_peer
        self.hep_correlation_id = hep_correlation_id
        self.x_cid = x_cid
        self.session_id_pair = session_id_pair
        self.icid = icid
        self.call_id_owner = call_id_owner
        self.family = family
        self.evidence: list[str] = [] if evidence is None else evidence
        self.fields: dict[str, Any] = {} if fields is None else fields

    def to_tuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.anomaly,
            self.severity,
            self.confidence,
            self.event_time_us,
            self.detected_at_us,
            self.node,
            self.capture_id,
            self.call_id,
            self.caller_tag,
            self.callee_tag,
            self.dialog_state,
            self.direction,
            self.method,
            self.cseq,
            self.status,
            self.reason,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
            self.transport,
            self.ua_sender,
            self.ua_peer,
            self.hep_correlation_id,
            self.x_cid,
            self.session_id_pair,
            self.icid,
            self.call_id_owner,
            self.family,
            self.evidence,
            self.fields,
        )

    @property
    def kind(self) -> str:
        return "anomaly"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: every field (containers copied, as `dataclasses.asdict`
        copies them) and "kind"."""
        d = dict(zip(self.FIELDS, plain(self.to_tuple()), strict=True))
        d["kind"] = self.kind
        return d


Record = MessageRecord | SessionChangeRecord | DialogRecord | AnomalyRecord | LegRecord


def field_names(record: Any) -> tuple[str, ...]:
    """The field names of a record (or record type), in order."""
    cls: type[Value] = record if isinstance(record, type) else type(record)
    return cls.FIELDS


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
