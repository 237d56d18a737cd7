"""The detector interface and the output every detector writes to.

A detector is a plain object with three hooks, all sans-I/O:

- `on_event(ev, out)`: one logical message applied to the state (`tracking.tracker.Event`).
- `on_timer(call, key, data, out)`: a timer it set with `out.schedule(...)` came due on
  stream time (the engine fires timers in order, before any later message).
- `on_call_end(call, out)`: the call is about to be forgotten (ended and lingered, idle,
  evicted, or the input ended); last chance for "it never happened" checks.

Per-dialog facts live in `dialog.ext_for(name, factory)`, per-call facts in
`call.ext_for(...)`; both go when the call goes, and are pickled with the engine state.
`out.anomaly(...)` builds the record with PROTOCOL.md C.0's common columns.

Dispatch: a detector declares which events its `on_event` needs (`requests`, `responses`,
`statuses`, `retransmissions`); the engine asks `wants` once per kind of event and calls
only those detectors. Narrowing is a promise that `on_event` does nothing at all (no state,
no output) for the events left out; `on_call_end` is called only when it is overridden.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.record_ids import record_id
from consumers.records import AnomalyRecord, Record, Severity
from consumers.tracking.model import CALLER, DIRECTIONS, Call, Dialog, other
from consumers.tracking.tracker import Event


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Detector:
    """Base class: override the hooks you need. `family` is the catalogue section."""

    name: ClassVar[str] = "detector"
    family: ClassVar[str] = ""
    requests: ClassVar[frozenset[str] | None] = None  # request methods wanted (None: all)
    responses: ClassVar[frozenset[str] | None] = None  # CSeq methods of responses (None: all)
    statuses: ClassVar[tuple[int, int]] = (100, 699)  # response status codes wanted, inclusive
    retransmissions: ClassVar[bool] = True  # also the events of retransmissions

    @classmethod
    def wants(cls, is_request: bool, method: str, status: int, retransmission: bool) -> bool:
        """Whether `on_event` needs an event of this kind (`method`: the request method, or
        the CSeq method of a response)."""
        if retransmission and not cls.retransmissions:
            return False
        if is_request:
            return cls.requests is None or method in cls.requests
        low, high = cls.statuses
        return (cls.responses is None or method in cls.responses) and low <= status <= high

    def on_event(self, ev: Event, out: Output) -> None:
        return None

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        return None

    def on_call_end(self, call: Call, out: Output) -> None:
        return None


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Output:
    """Collects the records of one engine step and the timers detectors ask for."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.timers: list[tuple[int, str, str, str, Any]] = []
        self.now_us = 0  # stream time at this step
        self.detector = ""  # the detector being run (set by the engine)
        self.anomaly_counts: dict[str, int] = {}

    def schedule(self, due_us: int, call: Call, key: str, data: Any = None) -> None:
        """Call this detector's `on_timer(call, key, data)` when stream time passes due_us."""
        self.timers.append((due_us, self.detector, call.call_id, key, data))

    def emit(self, record: Record) -> None:
        self.records.append(record)

    def anomaly(
        self,
        anomaly: str,
        severity: Severity | str,
        family: str,
        *,
        call: Call,
        lm: LogicalMessage | None,
        dialog: Dialog | None = None,
        side: int | None = None,
        event_time_us: int | None = None,
        evidence: list[LogicalMessage] | list[str] | None = None,
        confidence: float | None = None,
        state: str | None = None,
        **fields: Any,
    ) -> AnomalyRecord:
        """Record an anomaly. `lm` is the triggering message; `side` the offending side."""
        if confidence is None:  # 1.0; a float default here trips mypyc's signature text
            confidence = 1.0
        msg = lm.msg if lm is not None else None
        obs = lm.first if lm is not None else None
        refs: list[str] = []
        for e in evidence or ([lm] if lm is not None else []):
            ref = e if isinstance(e, str) else e.ref
            if ref not in refs:
                refs.append(ref)
        if lm is not None and lm.ref not in refs:
            refs.insert(0, lm.ref)
        if side is None:
            side = _sender_side(call, msg)
        cseq = msg.cseq if msg is not None else None
        if msg is None:
            method = ""
        elif msg.is_request:
            method = msg.method or ""
        else:
            method = cseq.method if cseq else ""
        callee_tag = dialog.callee_tag if dialog is not None else ""
        if dialog is None and msg is not None:
            callee_tag = (msg.to_tag if side == CALLER or not msg.is_request else "") or ""
        if state is None:
            state = lm.state_at if lm is not None and lm.state_at else "pre"
            if dialog is not None and lm is None:
                state = dialog.state.value
        if state == "terminated":
            state = "mortal"
        when = event_time_us if event_time_us is not None else (lm.ts if lm else self.now_us)
        owner = "unknown"
        if call.owner_known:
            owner = "self" if side == CALLER else "peer"
        rec = AnomalyRecord(
            id=record_id(call.call_id, anomaly, refs[0] if refs else when, callee_tag),
            anomaly=anomaly,
            severity=str(severity),
            confidence=confidence,
            event_time_us=when,
            detected_at_us=self.now_us,
            node=call.node,
            capture_id=call.capture_id,
            call_id=call.call_id,
            caller_tag=call.caller_tag,
            callee_tag=callee_tag,
            dialog_state=state,
            direction=DIRECTIONS[side],
            method=method,
            cseq=cseq.number if cseq else 0,
            status=(msg.status_code or 0) if msg is not None else 0,
            reason=(msg.reason_phrase or "") if msg is not None and msg.is_response else "",
            src_ip=obs.src_ip if obs else "",
            src_port=obs.src_port if obs else 0,
            dst_ip=obs.dst_ip if obs else "",
            dst_port=obs.dst_port if obs else 0,
            transport=obs.transport if obs else "",
            ua_sender=_ua(call, dialog, side),
            ua_peer=_ua(call, dialog, other(side)),
            hep_correlation_id=call.correlation_id,
            x_cid=call.x_cid,
            session_id_pair=call.session_id_pair,
            icid=call.icid,
            call_id_owner=owner,
            family=family,
            evidence=refs,
            fields=fields,
        )
        self.records.append(rec)
        call.anomalies += 1
        if dialog is not None:
            dialog.anomalies += 1
        self.anomaly_counts[anomaly] = self.anomaly_counts.get(anomaly, 0) + 1
        return rec


def _ua(call: Call, dialog: Dialog | None, side: int) -> str:
    if dialog is not None and dialog.ua[side]:
        return dialog.ua[side]
    return call.ua[side]


def _sender_side(call: Call, msg: Any) -> int:
    if msg is None:
        return CALLER
    side = call.side_of_tag(msg.from_tag or "")
    return side if msg.is_request else other(side)


__all__ = ["Detector", "Event", "Output", "Severity"]
