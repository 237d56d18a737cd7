"""C.1: 491 glare and retry-timer compliance (PROTOCOL.md C.1; B.4-B.6, B.10).

Owns `glare_491`, `spurious_491`, `glare_retry_too_early`, `glare_retry_late`,
`glare_no_retry` and `glare_repeat`.

A 491 answers a request X from side S; the responder R must have held something X collided
with when X reached it (the observer sees X reach R at X's out-copy time):
- X an INVITE: an INVITE of R's own in progress [RFC 3261 §14.2], an offer of R's still
  unanswered [RFC 3264 §4], R's 2xx to an INVITE not yet ACKed [RFC 5407 §3.1.4, §3.1.5],
  or, from the callee, sent before the initial 2xx was ACKed [§14.1];
- X an UPDATE or PRACK with an offer: an offer of R's unanswered or a re-INVITE of R's in
  progress [RFC 3311 §5.2; RFC 5407 §3.3.2], or R's offer in a 2xx awaiting the answer in
  the ACK [RFC 5407 §3.1.5];
- X without an offer that is not an INVITE (e.g. an UPDATE session refresh): nothing; it
  must succeed even across a re-INVITE [RFC 5407 §3.3.2].
Explained: one `glare_491` per 491. Not explained: `spurious_491` (not when the proxy is out
of the route set, since R's requests may then bypass the observer). A re-INVITE sent in an
early dialog belongs to C.3 (`early_reinvite`), which records its 491.

Retry [RFC 3261 §14.1; RFC 3311 §5.3]: S's next INVITE, or UPDATE with an offer (for an X
without offer, the next request of X's method), with a higher CSeq is the retry;
`retry_delay` runs from the 491's out-copy (it left toward S) to the retry's in-copy (S
sent it). The Call-ID owner (the caller, when the initial INVITE was seen) waits 2.1-4.0 s,
the other side 0-2.0 s, each widened by `tolerance_ms`. Owner unknown (capture began
mid-call): the side cannot be told, so only the union 0-4.0 s is checked: a retry is never
"too early", only late past 4.0 s, reported with owner_known=false and lower confidence.
`glare_no_retry` needs the dialog to have gone on for `no_retry_horizon_s` after the 491
(stream time, so a capture that ends sooner yields nothing) with no retry, no BYE, no new
offer or INVITE from R and no completed offer of R's after the 491 (RFC 5407 §3.3.1: the
owner may drop a change the peer's retry made moot). `glare_repeat` fires once per run of
two or more 491s to one side's consecutive attempts with no success in between (livelock).

Fields: t_491 and t_retry are µs since the epoch like event times; *_ms are milliseconds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import CALLEE, CALLER, Call, Dialog, Transaction, other
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Event

OWNER_WINDOW_MS: Final = (2100, 4000)  # RFC 3261 §14.1: the side that generated the Call-ID
OTHER_WINDOW_MS: Final = (0, 2000)
UNKNOWN_WINDOW_MS: Final = (0, 4000)  # owner unknown: the union of both windows
HOLD_US: Final = 32_000_000  # 64*T1: a 2xx is not retransmitted past this [RFC 3261 §13.3.1.4]
MAX_HOLDS: Final = 8
EXT: Final = "c1_glare"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Hold:
    """Something one side sent that a crossing INVITE/offer collides with until it ends.

    kind "request": an in-dialog INVITE/UPDATE/PRACK (ends when its final response leaves
    the proxy toward the sender); "2xx": a 2xx to an INVITE (ends when its ACK leaves the
    proxy toward the responder). Only the evidence id is kept, not the message.
    """

    __slots__ = ("end", "init_offer_holder", "kind", "offer", "ref", "side", "start", "t_out", "tx")

    def __init__(
        self, kind: str, side: int, tx: Transaction, ref: str, start: int, t_out: int
    ) -> None:
        self.kind = kind
        self.side = side
        self.tx = tx
        self.ref = ref
        self.start = start  # when the holder sent it (in-copy)
        self.t_out = t_out  # when it left the proxy toward the peer
        self.end = 0
        self.offer = False
        # Requests: the side whose offer in the initial INVITE exchange was unanswered when
        # this was sent (-1: none).
        self.init_offer_holder = -1


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Wait:
    """A side got a 491 and owes a retry."""

    __slots__ = (
        "excused",
        "lm491",
        "max_ms",
        "min_ms",
        "owner_known",
        "peer_cseq",
        "peer_method",
        "retry_count",
        "t491",
        "x_cseq",
        "x_method",
        "x_offer",
    )

    def __init__(self, lm491: LogicalMessage, t491: int, x: Transaction, x_offer: bool) -> None:
        self.excused = False  # a BYE or the peer's new offer made the retry optional
        self.lm491 = lm491
        self.t491 = t491
        self.x_cseq = x.cseq
        self.x_method = x.method
        self.x_offer = x_offer
        self.min_ms = 0
        self.max_ms = 0
        self.owner_known = False
        self.peer_method = ""
        self.peer_cseq = 0
        self.retry_count = 0


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _State:
    __slots__ = ("holds", "last491", "repeat_reported", "streak", "waiting")

    def __init__(self) -> None:
        self.holds: list[_Hold] = []
        self.waiting: list[_Wait | None] = [None, None]
        self.streak = [0, 0]  # consecutive 491s to each side's attempts
        self.last491 = ["", ""]  # evidence id of the last 491 to each side
        self.repeat_reported = False

    def idle(self) -> bool:
        return (
            not self.holds
            and self.waiting[0] is None
            and self.waiting[1] is None
            and not any(self.streak)
        )


def _window(call: Call, side: int) -> tuple[int, int]:
    if not call.owner_known:
        return UNKNOWN_WINDOW_MS
    return OWNER_WINDOW_MS if side == CALLER else OTHER_WINDOW_MS


def _offers(method: str) -> bool:
    return method in ("INVITE", "UPDATE", "PRACK")


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class GlareDetector(Detector):
    name: ClassVar[str] = "glare"
    family: ClassVar[str] = "C.1"
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False
    tolerance_ms: ClassVar[int] = 100
    no_retry_horizon_s: ClassVar[float] = 32.0  # 64*T1: by then the change is abandoned

    # -- events ----------------------------------------------------------------------------

    def on_event(self, ev: Event, out: Output) -> None:
        dialog = ev.dialog
        if dialog is None or ev.retransmission or ev.unknown_dialog:
            return
        if ev.is_request:
            self._request(ev, dialog, out)
        elif ev.status >= 200:
            self._final(ev, dialog, out)

    def _request(self, ev: Event, dialog: Dialog, out: Output) -> None:
        method = ev.method
        tx = ev.tx
        st = _get(dialog)
        if method == "ACK":
            if st is not None and ev.ack_for is not None:
                for h in st.holds:
                    if h.kind == "2xx" and h.tx is ev.ack_for and not h.end:
                        h.end = ev.t_out
                self._tidy(dialog, st, ev.t)
            return
        if method == "BYE":
            if st is not None:
                for w in st.waiting:
                    if w is not None:
                        w.excused = True
            return
        if not _offers(method) or tx is None or tx.initial:
            return
        offer = ev.sdp_role == "offer"
        if st is None:
            st = dialog.ext_for(EXT, _State)
        hold = _Hold("request", ev.side, tx, ev.lm.ref, ev.t, ev.t_out)
        hold.offer = offer
        init = ev.call.initial
        if init is not None and init.offer_in and not init.answered:
            offerer = init.side if init.offer_in == "request" else other(init.side)
            hold.init_offer_holder = offerer
        self._add_hold(st, hold)
        side = ev.side
        peer_wait = st.waiting[other(side)]
        if peer_wait is not None and (method == "INVITE" or offer) and ev.t > peer_wait.t491:
            peer_wait.excused = True  # a new offer from the peer: the change may be moot
        w = st.waiting[side]
        if (
            w is not None
            and ev.cseq > w.x_cseq
            and (method == "INVITE" or offer or (method == w.x_method and not w.x_offer))
        ):
            st.waiting[side] = None
            self._retry(ev, dialog, w, out)
        self._tidy(dialog, st, ev.t)

    def _final(self, ev: Event, dialog: Dialog, out: Output) -> None:
        tx = ev.tx
        if tx is None or tx.initial or not _offers(tx.method):
            if ev.status == 491 and tx is not None and not tx.initial and tx.request is not None:
                self._on_491(ev, dialog, dialog.ext_for(EXT, _State), tx, None, out)
            return
        st = _get(dialog)
        status = ev.status
        xh: _Hold | None = None
        if st is not None:
            for h in st.holds:
                if h.kind == "request" and h.tx is tx:
                    xh = h
                    if not h.end:
                        h.end = ev.t_out
        if tx.method == "INVITE" and 200 <= status < 300:
            if st is None:
                st = dialog.ext_for(EXT, _State)
            hold = _Hold("2xx", ev.side, tx, ev.lm.ref, ev.t, ev.t_out)
            hold.offer = ev.sdp_role == "offer"
            self._add_hold(st, hold)
        if st is None:
            return
        req_side = tx.side
        if status == 491:
            if xh is not None:
                self._on_491(ev, dialog, st, tx, xh, out)
        else:
            st.streak[req_side] = 0
            st.last491[req_side] = ""
            if 200 <= status < 300:
                st.streak = [0, 0]
                st.last491 = ["", ""]
                st.repeat_reported = False
                if tx.method == "INVITE" or (xh is not None and xh.offer):
                    # The other side's change went through: a pending retry may be moot.
                    w = st.waiting[other(req_side)]
                    if w is not None and ev.t > w.t491:
                        w.excused = True
        self._tidy(dialog, st, ev.t)

    # -- the 491 ---------------------------------------------------------------------------

    def _on_491(
        self,
        ev: Event,
        dialog: Dialog,
        st: _State,
        tx: Transaction,
        xh: _Hold | None,
        out: Output,
    ) -> None:
        if tx.method == "INVITE" and tx.state_at_send in (DialogState.PRE, DialogState.EARLY):
            return  # a re-INVITE in an early dialog: C.3 records its answer
        call = ev.call
        responder = ev.side
        sender = tx.side
        if xh is not None:
            x_out, x_offer, init_holder, x_ref = xh.t_out, xh.offer, xh.init_offer_holder, xh.ref
        else:
            # A 491 to a request that is neither INVITE, UPDATE nor PRACK: no offer in it.
            x_out, x_offer, init_holder = tx.request_ts, False, -1
            x_ref = tx.request.ref if tx.request is not None else ""
        peer, peer_ref, crossing = self._explain(
            call, dialog, st, tx, responder, ev.t, x_out, x_offer, init_holder
        )
        if peer is None and self._own_overlap(st, sender, tx, x_out):
            return  # S's own earlier request or offer was pending at R: an overlap (C.2)
        owner_known = call.owner_known
        lo, hi = _window(call, sender)
        st.streak[sender] += 1
        retry_count = st.streak[sender] - 1
        evidence: list[Any] = [ev.lm, *([x_ref] if x_ref else [])]
        fields: dict[str, Any] = {
            "glare_peer_method": peer.method if peer is not None else "",
            "glare_peer_cseq": peer.cseq if peer is not None else 0,
            "t_491": ev.t_out,
            "t_retry": None,
            "retry_delay_ms": None,
            "expected_min_ms": lo,
            "expected_max_ms": hi,
            "retry_count": retry_count,
            "owner_known": owner_known,
            "x_has_offer": x_offer,
            "origin": ev.lm.origin,
        }
        if peer is not None:
            out.anomaly(
                "glare_491",
                Severity.INFO,
                self.family,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=sender,
                evidence=[*evidence, peer_ref],
                crossing=crossing,
                **fields,
            )
        elif call.record_routed is not False:
            near = self._crossing_request(st, responder, tx, ev.t, x_out)
            if near is not None:
                evidence.append(near.ref)
                fields["glare_peer_method"] = near.tx.method
                fields["glare_peer_cseq"] = near.tx.cseq
            confidence = 0.9 if call.record_routed else 0.6
            if not owner_known:
                confidence = 0.6  # what the responder held may predate the capture
            out.anomaly(
                "spurious_491",
                Severity.MEDIUM,
                self.family,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=responder,
                evidence=evidence,
                confidence=confidence,
                **fields,
            )
        prev = st.last491[sender]
        st.last491[sender] = ev.lm.ref
        if st.streak[sender] >= 2 and not st.repeat_reported:
            st.repeat_reported = True
            out.anomaly(
                "glare_repeat",
                Severity.HIGH,
                self.family,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=sender,
                evidence=[ev.lm.ref, *([prev] if prev else [])],
                **fields,
            )
        if st.waiting[sender] is not None:
            return  # an earlier 491 to this side still awaits its retry
        if dialog.bye_ts or dialog.state in (DialogState.MORTAL, DialogState.TERMINATED):
            return  # no retry is wanted after BYE [RFC 3261 §14.1]
        w = _Wait(ev.lm, ev.t_out, tx, x_offer)
        w.min_ms, w.max_ms = lo, hi
        w.owner_known = owner_known
        w.peer_method = fields["glare_peer_method"]
        w.peer_cseq = fields["glare_peer_cseq"]
        w.retry_count = retry_count
        st.waiting[sender] = w
        due = ev.t_out + int(self.no_retry_horizon_s * 1_000_000) + self.tolerance_ms * 1000
        out.schedule(due, call, "no_retry", (dialog.callee_tag, sender, tx.cseq))

    def _explain(
        self,
        call: Call,
        dialog: Dialog,
        st: _State,
        tx: Transaction,
        responder: int,
        t491: int,
        x_out: int,
        x_offer: bool,
        init_holder: int,
    ) -> tuple[Transaction | None, str, str]:
        """What the responder held when X reached it: (its transaction, evidence, rule)."""
        tol = self.tolerance_ms * 1000
        is_invite = tx.method == "INVITE"
        if not is_invite and not x_offer:
            return None, "", ""
        best: _Hold | None = None
        best_rank = 9
        for h in st.holds:
            if h.side != responder or h.tx is tx or h.start > t491 + tol:
                continue
            if h.end and h.end + tol < x_out:
                continue  # it was over before X reached the responder
            if h.kind == "request":
                if h.tx.method == "INVITE":
                    rank = 0
                elif h.offer:
                    rank = 1
                else:
                    continue  # an UPDATE without offer collides with nothing [5407 §3.3.2]
            else:
                if h.start + HOLD_US < x_out or not (is_invite or h.offer):
                    continue
                rank = 2
            if rank < best_rank:
                best, best_rank = h, rank
        if best is not None:
            rule = "rfc5407_2xx_not_acked" if best.kind == "2xx" else "crossing_request"
            return best.tx, best.ref, rule
        init = call.initial
        if init is None or init.request is None:
            return None, "", ""
        first_2xx = dialog.first_2xx_ts
        if responder == CALLEE and first_2xx and first_2xx <= t491 + tol:
            ack_ts = init.ack_ts if dialog.acked else 0
            if (
                (not ack_ts or ack_ts + tol >= x_out)
                and first_2xx + HOLD_US >= x_out
                and (is_invite or init.offer_in == "response")
            ):
                return init, _final_ref(init), "rfc5407_2xx_not_acked"
        if init_holder == responder:
            ref = init.request.ref if init.side == responder else _final_ref(init)
            return init, ref, "initial_offer_unanswered"
        if responder == CALLER and is_invite and tx.state_at_send == DialogState.MORATORIUM:
            # The callee re-INVITEd before its 2xx was ACKed, which §14.1 forbids; the caller
            # may not even have the 2xx yet (lost after the proxy), so its 491 is no fault.
            return init, _final_ref(init), "initial_invite_not_confirmed"
        return None, "", ""

    def _own_overlap(self, st: _State, sender: int, tx: Transaction, x_out: int) -> bool:
        """The 491 answers a request that overlapped the sender's own pending one."""
        tol = self.tolerance_ms * 1000
        for h in st.holds:
            if h.side != sender or h.tx is tx or (h.end and h.end + tol < x_out):
                continue
            same = h.tx.method == tx.method or h.offer
            if h.kind == "request" and h.tx.cseq < tx.cseq and same:
                return True
            if h.kind == "2xx" and h.offer:
                return True
        return False

    def _crossing_request(
        self, st: _State, responder: int, tx: Transaction, t491: int, x_out: int
    ) -> _Hold | None:
        """A request of the responder's in flight with X (named in a spurious 491)."""
        tol = self.tolerance_ms * 1000
        for h in st.holds:
            if (
                h.kind == "request"
                and h.side == responder
                and h.tx is not tx
                and h.start <= t491 + tol
                and (not h.end or h.end + tol >= x_out)
            ):
                return h
        return None

    # -- the retry -------------------------------------------------------------------------

    def _retry(self, ev: Event, dialog: Dialog, w: _Wait, out: Output) -> None:
        delay_us = ev.t - w.t491
        tol_us = self.tolerance_ms * 1000
        if delay_us < -tol_us:
            return  # copies stamped out of order beyond reason: not measurable
        fields: dict[str, Any] = {
            "glare_peer_method": w.peer_method,
            "glare_peer_cseq": w.peer_cseq,
            "t_491": w.t491,
            "t_retry": ev.t,
            "retry_delay_ms": max(delay_us, 0) // 1000,
            "expected_min_ms": w.min_ms,
            "expected_max_ms": w.max_ms,
            "retry_count": w.retry_count + 1,
            "owner_known": w.owner_known,
        }
        if w.min_ms and delay_us < w.min_ms * 1000 - tol_us:
            name, severity, confidence = "glare_retry_too_early", Severity.MEDIUM, 1.0
        elif delay_us > w.max_ms * 1000 + tol_us:
            name, severity = "glare_retry_late", Severity.LOW
            confidence = 1.0 if w.owner_known else 0.6
        else:
            return
        out.anomaly(
            name,
            severity,
            self.family,
            call=ev.call,
            lm=ev.lm,
            dialog=dialog,
            side=ev.side,
            evidence=[ev.lm, w.lm491],
            confidence=confidence,
            **fields,
        )

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        if key != "no_retry":
            return
        callee_tag, side, x_cseq = data
        dialog = call.dialogs.get(callee_tag)
        st = _get(dialog) if dialog is not None else None
        if dialog is None or st is None:
            return
        w = st.waiting[side]
        if w is None or w.x_cseq != x_cseq:
            return
        st.waiting[side] = None
        gone = dialog.bye_ts or dialog.state in (DialogState.MORTAL, DialogState.TERMINATED)
        # The retry may have bypassed a proxy that is not in the route set (C.0 rule 7).
        if not (w.excused or gone or call.record_routed is False):
            confidence = 0.8 if call.record_routed else 0.5
            out.anomaly(
                "glare_no_retry",
                Severity.LOW,
                self.family,
                call=call,
                lm=w.lm491,
                dialog=dialog,
                side=side,
                evidence=[w.lm491],
                confidence=confidence if w.owner_known else min(confidence, 0.6),
                glare_peer_method=w.peer_method,
                glare_peer_cseq=w.peer_cseq,
                t_491=w.t491,
                t_retry=None,
                retry_delay_ms=None,
                expected_min_ms=w.min_ms,
                expected_max_ms=w.max_ms,
                retry_count=w.retry_count,
                owner_known=w.owner_known,
            )
        self._tidy(dialog, st, out.now_us)

    # -- bookkeeping -----------------------------------------------------------------------

    def _add_hold(self, st: _State, hold: _Hold) -> None:
        holds = st.holds
        holds.append(hold)
        if len(holds) > MAX_HOLDS:
            holds.remove(next((h for h in holds if h.end), holds[0]))

    def _tidy(self, dialog: Dialog, st: _State, now: int) -> None:
        """Keep only holds a future 491 can still refer to; drop the state when empty.

        An ended hold matters only to a request of the other side, still unanswered, that
        left the proxy before the hold ended (plus tolerance); an open one is kept for
        2*64*T1 at most (its final response was never captured).
        """
        tol = self.tolerance_ms * 1000
        open_out = [
            min(
                (h.t_out for h in st.holds if h.kind == "request" and not h.end and h.side == s),
                default=None,
            )
            for s in (CALLER, CALLEE)
        ]
        keep: list[_Hold] = []
        for h in st.holds:
            if not h.end:
                if h.start + 2 * HOLD_US >= now:
                    keep.append(h)
                continue
            first = open_out[other(h.side)]
            if first is not None and first <= h.end + tol:
                keep.append(h)
        st.holds = keep
        if st.idle() and dialog.ext is not None:
            dialog.ext.pop(EXT, None)


def _get(dialog: Dialog) -> _State | None:
    return dialog.ext.get(EXT) if dialog.ext else None


def _final_ref(tx: Transaction) -> str:
    lm = tx.final or tx.request
    return lm.ref if lm is not None else ""


DETECTOR = GlareDetector

__all__ = ["DETECTOR", "GlareDetector"]
