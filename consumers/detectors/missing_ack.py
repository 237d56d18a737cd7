"""Missing ACK for a 2xx to an INVITE or a re-INVITE: PROTOCOL.md C.7.

What it owns: per 2xx-answered INVITE transaction (the initial INVITE per dialog, i.e. per
fork, and every re-INVITE), whether the end-to-end ACK for the 2xx was seen within 64*T1 of
the first 2xx, and what followed.

Rules:
- The UAC MUST ACK every 2xx to an INVITE; the ACK is a request of its own with the INVITE's
  CSeq number and is routed with the dialog's route set [RFC 3261 §13.2.2.4]. The UAS
  retransmits the 2xx (T1 doubling, capped at T2) until the ACK comes; after 64*T1 without it
  the session SHOULD be ended with BYE [§13.3.1.4, §14.2].
- The timer runs on stream time from the first 2xx copy (the UAS's sending time): deadline
  = t_2xx_first + 64*T1 + `tolerance_ms`. T1 is the engine's `TrackerConfig.t1_ms`, passed
  as `t1_ms`. An ACK up to the deadline clears it; one after it is reported as late
  (`ack_seen` True with `ack_delay_ms`).
- Severity (one record per transaction, no separate record for the BYE): `missing_ack` is
  high; it is raised to critical when the UAS (or the proxy) sends a BYE on the dialog
  within `bye_window_ms` around the deadline (the call was torn down for the missing ACK);
  it is lowered to low when the UAC itself sent BYE before the deadline, or anyone did well
  before it (the dialog was ending anyway; the ACK is still due in the Mortal state
  [RFC 5407 §3.2.3]). The record is therefore written at the deadline when a BYE already
  came, otherwise at the BYE or at the end of the BYE window.

Traps handled:
- Proxy not in the route set (call.record_routed False): the ACK legally bypasses the proxy,
  nothing is claimed (C.0 rule 7). Unknown (None): claimed only when an in-dialog request from
  the UAC's side has been seen through the proxy, with lower confidence.
- An ACK captured before the 2xx copy (reordering, C.0 rule 4) counts.
- The hop-by-hop ACK for a non-2xx final response [§17.1.1.3] is not this case.
- A newer INVITE on the dialog before the deadline: from the UAC it is RFC 6141 §5.4 (the UAS
  SHOULD NOT BYE for the missing ACK); from the UAS it shows the UAS got the ACK (it may not
  start an INVITE before that [§14.1]). Either way nothing is claimed.
- An ACK sent in the Mortal state (after a BYE) counts [RFC 5407 §3.2.3].
- 2xx retransmissions that stop well before 64*T1 without a BYE mean the UAS did get an ACK
  that the capture missed (flag-based siptrace does not mirror relayed ACKs, A.9; HEP loss):
  nothing is claimed. No retransmission at all, without a BYE, is read the same way unless
  end-to-end ACKs were seen on this node before (then it is claimed at half confidence).
- Capture end, eviction: nothing is claimed before the deadline was reached in the stream,
  unless the UAS (or the proxy) already sent its BYE within `bye_window_ms` before it.

Confidence (C.0 rule 9): lowered when no end-to-end ACK was ever captured on this node
(`trace_mode_known` False), when the UAS was not seen retransmitting, and when the route
set is unknown. `2xx_retransmissions` counts the UAS's 2xx copies beyond the first, from
the logical messages and their copy counts, normalised by the duplication factor of the
INVITE's own copies (HEP duplication multiplies every copy alike).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import ORIGIN_PROXY, LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import CALLER, Call, Dialog
from consumers.tracking.tracker import Event

FAMILY: Final = "C.7"
PENDING_KEY: Final = "missing_ack"
EARLY_KEY: Final = "missing_ack_early"  # ACKs processed before any final response (reordering)

BY_UAS: Final = "uas"
BY_UAC: Final = "uac"
BY_PROXY: Final = "proxy"

# (UAC side, CSeq number, callee tag) of one INVITE transaction of one dialog
PendingKey = tuple[int, int, str]


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Pending:
    """A 2xx to an INVITE whose ACK has not been seen yet."""

    __slots__ = (
        "ack_lm",
        "ack_ts",
        "bye_by",
        "bye_lm",
        "bye_ts",
        "deadline",
        "initial",
        "lms",
        "missing",
        "superseded",
        "t_first",
        "t_last",
    )

    def __init__(self, lm: LogicalMessage, t: int, deadline: int, initial: bool) -> None:
        self.lms: list[LogicalMessage] = [lm]  # the 2xx copies as logical messages
        self.t_first = t
        self.t_last = t
        self.deadline = deadline
        self.initial = initial
        self.missing = False  # the deadline passed without the ACK
        self.superseded = False  # a newer INVITE on the dialog (RFC 6141 §5.4)
        self.ack_lm: LogicalMessage | None = None
        self.ack_ts = 0
        self.bye_lm: LogicalMessage | None = None
        self.bye_ts = 0
        self.bye_by = ""


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class MissingAckDetector(Detector):
    name: ClassVar[str] = "missing_ack"
    family: ClassVar[str] = FAMILY
    requests: ClassVar[frozenset[str] | None] = frozenset({"ACK", "BYE", "INVITE"})
    responses: ClassVar[frozenset[str] | None] = frozenset({"INVITE"})
    statuses: ClassVar[tuple[int, int]] = (200, 299)

    tolerance_ms: ClassVar[int] = 100
    bye_window_ms: ClassVar[int] = 4000  # how long after the deadline a UAS BYE is waited for
    max_lms: ClassVar[int] = 16  # 2xx logical messages kept per transaction (64*T1 gives ~11)

    def __init__(self, t1_ms: int = 500, t2_ms: int = 4000) -> None:
        self.t1_ms = t1_ms
        self.t2_ms = t2_ms
        self._traced: set[str] = set()  # nodes whose mirror showed an end-to-end ACK

    # -- hooks -----------------------------------------------------------------------------

    def on_event(self, ev: Event, out: Output) -> None:
        msg = ev.msg
        if msg.is_response:
            if ev.method == "INVITE" and 200 <= ev.status < 300:
                self._on_2xx(ev, out)
            return
        method = msg.method
        if method == "ACK":
            self._on_ack(ev, out)
        elif ev.retransmission or ev.dialog is None:
            return
        elif method == "BYE":
            self._on_bye(ev, out)
        elif method == "INVITE":
            self._on_reinvite(ev)

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        pendings = _pendings(call)
        pend = pendings.get(data) if pendings is not None else None
        if pend is None:
            return
        if key == "deadline":
            if pend.superseded:
                self._drop(call, data)
                return
            pend.missing = True
            if pend.bye_by in (BY_UAS, BY_PROXY, BY_UAC):
                self._emit(call, data, pend, out)
            else:
                out.schedule(pend.deadline + self.bye_window_ms * 1000, call, "bye_window", data)
        elif key == "bye_window" and pend.missing:
            self._emit(call, data, pend, out)

    def on_call_end(self, call: Call, out: Output) -> None:
        pendings = _pendings(call)
        if not pendings:
            return
        window = self.bye_window_ms * 1000
        for key, pend in list(pendings.items()):
            # Past the deadline in the stream the ACK is known to be missing; before it, the
            # capture (or the call's memory) ended too early to tell, unless the UAS already
            # gave up on it with a BYE close to 64*T1.
            gave_up = pend.bye_by in (BY_UAS, BY_PROXY) and pend.bye_ts >= pend.deadline - window
            if pend.superseded:
                continue
            if pend.missing or out.now_us >= pend.deadline or gave_up:
                pend.missing = True
                self._emit(call, key, pend, out)

    # -- messages --------------------------------------------------------------------------

    def _on_2xx(self, ev: Event, out: Output) -> None:
        tx, dialog, call = ev.tx, ev.dialog, ev.call
        if tx is None or dialog is None:
            return
        key: PendingKey = (tx.side, tx.cseq, dialog.callee_tag)
        pendings = _pendings(call)
        pend = pendings.get(key) if pendings is not None else None
        if pend is not None:
            if len(pend.lms) < self.max_lms and all(lm is not ev.lm for lm in pend.lms):
                pend.lms.append(ev.lm)
            pend.t_last = max(pend.t_last, ev.t)
            return
        if ev.retransmission or call.record_routed is False:
            return  # already ACKed, or the ACK legally bypasses the proxy (C.0 rule 7)
        if tx.initial and dialog.acked:
            return  # the ACK was processed before this 2xx (reordering)
        if not tx.initial and tx.ack is not None:
            return
        early = (call.ext or {}).get(EARLY_KEY)
        if early is not None and key in early:
            early.discard(key)
            if not early:
                del call.ext[EARLY_KEY]  # type: ignore[union-attr]
            return
        deadline = ev.t + (64 * self.t1_ms + self.tolerance_ms) * 1000
        call.ext_for(PENDING_KEY, dict)[key] = _Pending(ev.lm, ev.t, deadline, tx.initial)
        out.schedule(deadline, call, "deadline", key)

    def _on_ack(self, ev: Event, out: Output) -> None:
        invite = ev.ack_for
        msg = ev.msg
        if invite is None or not msg.to_tag or invite.final_status >= 300:
            return  # no INVITE seen, or the hop-by-hop ACK of a non-2xx [§17.1.1.3]
        call = ev.call
        self._traced.add(call.node)
        callee_tag = _callee_tag(ev)
        key: PendingKey = (ev.side, invite.cseq, callee_tag)
        pendings = _pendings(call)
        pend = pendings.get(key) if pendings is not None else None
        if pend is None:
            if invite.final_status == 0:
                early = call.ext_for(EARLY_KEY, set)
                if len(early) < 8:
                    early.add(key)
            return
        if not pend.missing:
            self._drop(call, key)  # in time, also when sent in the Mortal state
        elif not pend.ack_ts:
            pend.ack_ts = ev.t
            pend.ack_lm = ev.lm

    def _on_bye(self, ev: Event, out: Output) -> None:
        call, dialog = ev.call, ev.dialog
        pendings = _pendings(call)
        if not pendings or dialog is None:
            return
        for key, pend in list(pendings.items()):
            if key[2] != dialog.callee_tag or pend.bye_ts:
                continue
            pend.bye_ts = ev.t
            pend.bye_lm = ev.lm
            if ev.proxy_generated or ev.lm.origin == ORIGIN_PROXY:
                pend.bye_by = BY_PROXY
            else:
                pend.bye_by = BY_UAC if ev.side == key[0] else BY_UAS
            if pend.missing and pend.bye_by != BY_UAC:
                self._emit(call, key, pend, out)

    def _on_reinvite(self, ev: Event) -> None:
        call, dialog = ev.call, ev.dialog
        pendings = _pendings(call)
        if not pendings or dialog is None:
            return
        for key, pend in pendings.items():
            if key[2] != dialog.callee_tag or pend.missing:
                continue
            if ev.side != key[0] or ev.cseq > key[1]:
                pend.superseded = True

    # -- output ----------------------------------------------------------------------------

    def _emit(self, call: Call, key: PendingKey, pend: _Pending, out: Output) -> None:
        self._drop(call, key)
        dialog = call.dialogs.get(key[2])
        uac = key[0]
        routed = call.record_routed
        if routed is False:
            return
        confidence = 1.0
        if routed is None:
            # Unknown route set: only an in-dialog request from the UAC's side through the
            # proxy shows that its ACK would pass here too.
            if dialog is None or dialog.cseq[uac] is None:
                return
            confidence *= 0.7
        retransmissions = self._retransmissions(call, key, pend)
        torn_down = pend.bye_by in (BY_UAS, BY_PROXY)
        stop_by = pend.t_first + (64 * self.t1_ms - 2 * self.t2_ms - self.tolerance_ms) * 1000
        if retransmissions and pend.t_last < stop_by and not torn_down:
            return  # the UAS stopped retransmitting: it got an ACK the capture missed
        trace_known = call.node in self._traced
        if not retransmissions and not torn_down:
            # The UAS retransmits a 2xx whatever the transport [§13.3.1.4]: silence means it
            # was ACKed, unless end-to-end ACKs are known to be mirrored here (then HEP loss
            # of the ACK and a lax UAS are as likely).
            if not trace_known:
                return
            confidence *= 0.5
        if not trace_known:
            confidence *= 0.7
        window = self.bye_window_ms * 1000
        if pend.bye_ts and (pend.bye_ts < pend.deadline - window or pend.bye_by == BY_UAC):
            severity = Severity.LOW  # the dialog was ending anyway
        elif torn_down:
            severity = Severity.CRITICAL
        else:
            severity = Severity.HIGH
        first = pend.lms[0]
        evidence = [first, pend.lms[-1]]
        if pend.ack_lm is not None:
            evidence.append(pend.ack_lm)
        if pend.bye_lm is not None:
            evidence.append(pend.bye_lm)
        out.anomaly(
            "missing_ack",
            severity,
            FAMILY,
            call=call,
            lm=first,
            dialog=dialog,
            side=uac,
            evidence=evidence,
            confidence=round(confidence, 3),
            t_2xx_first=pend.t_first,
            t_2xx_last=pend.t_last,
            **{"2xx_retransmissions": retransmissions},  # type: ignore
            ack_seen=bool(pend.ack_ts),
            ack_delay_ms=_ms(pend.ack_ts - pend.t_first) if pend.ack_ts else None,
            bye_after_ms=_ms(pend.bye_ts - pend.t_first) if pend.bye_ts else None,
            bye_by=pend.bye_by or None,
            record_routed=routed,
            initial_invite=pend.initial,
            trace_mode_known=trace_known,
        )

    def _retransmissions(self, call: Call, key: PendingKey, pend: _Pending) -> int:
        dup = 1
        from_tag = call.caller_tag if key[0] == CALLER else key[2]
        invite = call.transactions.get((from_tag, key[1], "INVITE"))
        if invite is not None and invite.request is not None:
            dup = max(1, min(invite.request.copies))
        sent = sum(max(1, round(min(lm.copies) / dup)) for lm in pend.lms)
        return sent - 1

    def _drop(self, call: Call, key: PendingKey) -> None:
        pendings = _pendings(call)
        if pendings is None:
            return
        pendings.pop(key, None)
        if not pendings and call.ext is not None:
            del call.ext[PENDING_KEY]


def _pendings(call: Call) -> dict[PendingKey, _Pending] | None:
    return call.ext.get(PENDING_KEY) if call.ext else None


def _callee_tag(ev: Event) -> str:
    dialog: Dialog | None = ev.dialog
    if dialog is not None:
        return dialog.callee_tag
    msg = ev.msg
    return (msg.to_tag if ev.side == CALLER else msg.from_tag) or ""


def _ms(us: int) -> float:
    return round(us / 1000.0, 3)


DETECTOR = MissingAckDetector
