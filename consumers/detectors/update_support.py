"""UPDATE support discovery: PROTOCOL.md C.4 (UPDATE sent to a peer that did not advertise it)
and C.5 (405 or 501 to UPDATE).

What it owns, per dialog and per side, is the last Allow seen FROM that side [RFC 3311 §4]:

- caller: the Allow of its initial INVITE (kept per call, it applies to every fork), then any
  later request or response it sends in the dialog;
- callee: the Allow of its tagged 1xx on THIS dialog only (a 1xx of another fork is another
  UAS) [RFC 3261 §13.2.2.1], its 2xx, and any later request or response, including the 200
  to a mid-dialog OPTIONS and the Allow a 405 must carry [RFC 3261 §8.2.1, §21.4.6].

The Allow of a request describes its sender, never its recipient. Knowledge outlives the
early phase: a 1xx that listed UPDATE told the caller the callee supports it [RFC 3311 §4],
so a 2xx without Allow does not erase it. Messages the proxy generated say nothing about an
endpoint and teach nothing. Tokens are compared exactly (method names are case-sensitive,
RFC 3311 §7 `UPDATEm`); an Allow with only a case variant such as "update" counts as not
listing UPDATE, with confidence 0.5. No Allow header means no information [RFC 3261 §20.5].
Leg comparison (a B2BUA rewriting Allow) is C.12's business.

C.4 rows are written when the UPDATE's final response arrives, so that the severity can say
whether a 405/501 broke a hold/offer or a session refresh (high) or not (medium); an UPDATE
left without a final response is reported after 64*T1, or when the call ends.
`update_without_allow_info` is low when a 405/501 followed, info otherwise, and is not
claimed when the initial INVITE was not captured (the Allow may simply not have been seen).

C.5 classifies a final 405/501 to UPDATE by the responder's state before it (the 405's own
Allow is learnt afterwards); 405 without Allow is `405_missing_allow` (low). Severities the
catalogue leaves open: `405_update_allow_said_no` medium (the sender's fault, as C.4),
`405_update_no_info` low. The UPDATE inside an INVITE usage fails alone [RFC 5057 note (3)].

`no_fallback_refresh` (high: the session timer will cut the call [RFC 4028 §10]): the
refused UPDATE was a session refresh without SDP while a session timer ran in the dialog,
and no re-INVITE was sent and no UPDATE succeeded before expiry. The timer is derived here,
simply: expiry = time of the last 2xx to INVITE/UPDATE of the dialog that carried
Session-Expires + its delta; a 2xx without it switches the timer off [RFC 4028 §7.2]. A
dialog ended by BYE earlier than the non-refresher's expiry BYE window (min(32 s,
interval/3) before expiry [RFC 4028 §10]) needed no refresh; a capture that ends before
expiry proves nothing.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import CALLER, Call, Dialog, other
from consumers.tracking.sdpsummary import session_sdp
from consumers.tracking.tracker import Event

HAS_UPDATE: Final = "allow_has_update"
WITHOUT_UPDATE: Final = "allow_without_update"
NO_ALLOW: Final = "no_allow_seen"

OFFER: Final = "offer"
REFRESH: Final = "refresh-no-SDP"
TARGET_REFRESH: Final = "target-refresh"

FAMILY_C4: Final = "C.4"
FAMILY_C5: Final = "C.5"

# (allow state, raw Allow, source message, evidence ref, only a case variant of UPDATE)
AllowFact = tuple[str, str, str, str, bool]


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Pending:
    """An UPDATE waiting for its final response."""

    __slots__ = ("c4", "purpose")

    def __init__(self, c4: AllowFact | None, purpose: str) -> None:
        self.c4 = c4  # the target's Allow fact when C.4 is to be reported, else None
        self.purpose = purpose


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Watch:
    """A refused session-refresh UPDATE: is there a fallback before expiry?"""

    __slots__ = ("cseq", "expiry", "fields", "interval_s", "refs", "side")

    def __init__(
        self,
        side: int,
        cseq: int,
        expiry: int,
        interval_s: int,
        refs: list[str],
        fields: dict[str, Any],
    ) -> None:
        self.side = side
        self.cseq = cseq
        self.expiry = expiry
        self.interval_s = interval_s
        self.refs = refs
        self.fields = fields


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _State:
    """This detector's facts about one dialog."""

    __slots__ = ("allow", "pending", "timer", "watch")

    def __init__(self) -> None:
        self.allow: list[AllowFact | None] = [None, None]
        self.pending: dict[tuple[int, int], _Pending] | None = None
        self.timer: tuple[int, int] | None = None  # (time of the 2xx, Session-Expires s)
        self.watch: _Watch | None = None


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class UpdateSupportDetector(Detector):
    name: ClassVar[str] = "update_support"
    family: ClassVar[str] = FAMILY_C4
    retransmissions: ClassVar[bool] = False
    tolerance_us: ClassVar[int] = 100_000
    transaction_timeout_us: ClassVar[int] = 64 * 500_000  # 64*T1 [RFC 3261 §17.1.2.2]
    ext_key: ClassVar[str] = "update_support"
    call_key: ClassVar[str] = "update_support_invite_allow"

    # -- hooks -----------------------------------------------------------------------------

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission or (ev.proxy_generated and ev.msg.is_request):
            return
        if ev.msg.is_request:
            self._learn(ev)
            if ev.dialog is not None:
                self._request(ev, ev.dialog, out)
            return
        if ev.dialog is not None and ev.status >= 200:
            self._final(ev, ev.dialog, out)
        if not ev.proxy_generated:
            self._learn(ev)

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        callee_tag, side, cseq = data
        dialog = call.dialogs.get(callee_tag)
        st = self._existing(dialog)
        if dialog is None or st is None:
            return
        if key == "c4":
            pending = st.pending.pop((side, cseq), None) if st.pending else None
            if pending is not None and pending.c4 is not None:
                self._report_c4(call, dialog, side, cseq, pending, 0, out)
        elif key == "fallback" and st.watch is not None and st.watch.cseq == cseq:
            self._check_fallback(call, dialog, st, out, at_end=False)

    def on_call_end(self, call: Call, out: Output) -> None:
        for dialog in call.dialogs.values():
            st = self._existing(dialog)
            if st is None:
                continue
            for (side, cseq), pending in sorted((st.pending or {}).items()):
                if pending.c4 is not None:
                    self._report_c4(call, dialog, side, cseq, pending, 0, out)
            st.pending = None
            if st.watch is not None:
                self._check_fallback(call, dialog, st, out, at_end=True)

    # -- Allow knowledge (C.4 state) -------------------------------------------------------

    def _learn(self, ev: Event) -> None:
        msg = ev.msg
        allow = msg.allow
        if allow is None or ev.status == 100:
            return
        cseq = msg.cseq
        what = (msg.method or "") if msg.is_request else f"{ev.status} {ev.method}"
        source = sys.intern(f"{what} {cseq.number if cseq else 0}")
        values = msg.headers["allow"]  # present: msg.allow is not None
        raw = sys.intern(values[0] if len(values) == 1 else ", ".join(values))
        if "UPDATE" in allow:
            fact: AllowFact = (HAS_UPDATE, raw, source, ev.lm.ref, False)
        else:
            case_only = any(token.upper() == "UPDATE" for token in allow)
            fact = (WITHOUT_UPDATE, raw, source, ev.lm.ref, case_only)
        if ev.dialog is not None:
            self._state(ev.dialog).allow[ev.side] = fact
        elif msg.is_request and ev.tx is not None and ev.tx.initial:
            # The caller's INVITE: valid for every dialog the attempt creates.
            if ev.call.ext is None:
                ev.call.ext = {}
            ev.call.ext[self.call_key] = fact

    def _fact(self, call: Call, dialog: Dialog, side: int) -> AllowFact | None:
        st = self._existing(dialog)
        fact = st.allow[side] if st is not None else None
        if fact is None and side == CALLER and call.ext:
            fact = call.ext.get(self.call_key)
        return fact

    # -- requests --------------------------------------------------------------------------

    def _request(self, ev: Event, dialog: Dialog, out: Output) -> None:
        method = ev.msg.method
        if method == "UPDATE":
            self._update(ev, dialog, out)
        elif method == "INVITE":
            st = self._existing(dialog)
            if st is not None and st.watch is not None and ev.t <= st.watch.expiry:
                st.watch = None  # a fallback re-INVITE, whatever its outcome

    def _update(self, ev: Event, dialog: Dialog, out: Output) -> None:
        call = ev.call
        st = self._state(dialog)
        fact = self._fact(call, dialog, other(ev.side))
        state = fact[0] if fact is not None else NO_ALLOW
        report: AllowFact | None = None
        if state == WITHOUT_UPDATE:
            report = fact
        elif state == NO_ALLOW and call.owner_known:
            report = (NO_ALLOW, "", "", "", False)
        if ev.sdp is not None:
            purpose = OFFER
        elif ev.msg.session_expires is not None or st.timer is not None:
            purpose = REFRESH
        else:
            purpose = TARGET_REFRESH
        if st.pending is None:
            st.pending = {}
        st.pending[(ev.side, ev.cseq)] = _Pending(report, purpose)
        if report is not None:
            due = ev.t + self.transaction_timeout_us + self.tolerance_us
            out.schedule(due, call, "c4", (dialog.callee_tag, ev.side, ev.cseq))

    # -- final responses -------------------------------------------------------------------

    def _final(self, ev: Event, dialog: Dialog, out: Output) -> None:
        method = ev.method
        st = self._existing(dialog)
        if 200 <= ev.status < 300 and method in ("INVITE", "UPDATE"):
            st = st or self._state(dialog)
            se = ev.msg.session_expires
            st.timer = (ev.t, se.delta) if se is not None else None
            if method == "UPDATE" and st.watch is not None and ev.t <= st.watch.expiry:
                st.watch = None  # another UPDATE refreshed the session
        if method != "UPDATE" or ev.tx is None:
            return
        req_side = ev.tx.side
        pending = st.pending.pop((req_side, ev.cseq), None) if st and st.pending else None
        if pending is not None and pending.c4 is not None:
            self._report_c4(ev.call, dialog, req_side, ev.cseq, pending, ev.status, out, ev)
        if ev.status in (405, 501):
            self._refused(ev, dialog, pending, out)

    def _report_c4(
        self,
        call: Call,
        dialog: Dialog,
        side: int,
        cseq: int,
        pending: _Pending,
        status: int,
        out: Output,
        ev: Event | None = None,
    ) -> None:
        fact = pending.c4
        assert fact is not None
        pending.c4 = None
        tx = call.transactions.get((_tag_of(call, dialog, side), cseq, "UPDATE"))
        lm = tx.request if tx is not None else None
        broke = status in (405, 501) and pending.purpose in (OFFER, REFRESH)
        state, raw, source, ref, case_only = fact
        refused = ev.lm.ref if ev is not None and status in (405, 501) else ""
        evidence = [r for r in (ref, refused) if r]
        if state == WITHOUT_UPDATE:
            name = "update_despite_allow"
            severity = Severity.HIGH if broke else Severity.MEDIUM
        else:
            name = "update_without_allow_info"
            severity = Severity.LOW if status in (405, 501) else Severity.INFO
        out.anomaly(
            name,
            severity,
            FAMILY_C4,
            call=call,
            lm=lm,
            dialog=dialog,
            side=side,
            evidence=evidence,
            confidence=0.5 if case_only else 1.0,
            peer_allow=raw or None,
            peer_allow_source=source or None,
            allow_state=state,
        )

    def _refused(self, ev: Event, dialog: Dialog, pending: _Pending | None, out: Output) -> None:
        call = ev.call
        responder = ev.side
        fact = self._fact(call, dialog, responder)
        prior = fact[0] if fact is not None else NO_ALLOW
        req = ev.tx.request if ev.tx is not None else None
        st = self._state(dialog)
        purpose = pending.purpose if pending is not None else _purpose_of(req, st.timer)
        allow = ev.msg.allow
        fields: dict[str, Any] = {
            "responder_allow": ", ".join(ev.msg.header("allow")) if allow is not None else None,
            "prior_allow_state": prior,
            "update_purpose": purpose,
            "new_allow_lacks_update": ("UPDATE" not in allow) if allow is not None else None,
        }
        evidence = [r for r in (req.ref if req else "", fact[3] if fact else "") if r]
        if prior == WITHOUT_UPDATE:
            name, severity, offender = "405_update_allow_said_no", Severity.MEDIUM, other(responder)
        elif prior == HAS_UPDATE:
            name, severity, offender = "405_update_allow_said_yes", Severity.HIGH, responder
        else:
            name, severity, offender = "405_update_no_info", Severity.LOW, other(responder)
        rows = [(name, severity, offender)]
        if ev.status == 405 and allow is None:
            rows.append(("405_missing_allow", Severity.LOW, responder))
        for anomaly, sev, side in rows:
            out.anomaly(
                anomaly,
                sev,
                FAMILY_C5,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=side,
                evidence=[ev.lm.ref, *evidence],
                confidence=0.5 if ev.proxy_generated else 1.0,
                **fields,
            )
        if purpose != REFRESH or st.timer is None or call.record_routed is False:
            return
        t2xx, interval = st.timer
        expiry = t2xx + interval * 1_000_000
        refs = [r for r in (req.ref if req else "", ev.lm.ref) if r]
        st.watch = _Watch(other(responder), ev.cseq, expiry, interval, refs, fields)
        out.schedule(expiry + self.tolerance_us, call, "fallback", (dialog.callee_tag, 0, ev.cseq))

    def _check_fallback(
        self, call: Call, dialog: Dialog, st: _State, out: Output, *, at_end: bool
    ) -> None:
        watch = st.watch
        st.watch = None
        if watch is None:
            return
        window_us = min(32_000_000, watch.interval_s * 1_000_000 // 3)
        bye_window_start = watch.expiry - window_us - self.tolerance_us
        if dialog.bye_ts and dialog.bye_ts < bye_window_start:
            return  # the dialog ended for another reason before a refresh was due
        if at_end and not (dialog.bye_ts and dialog.bye_ts >= bye_window_start):
            return  # the expiry was not reached within what was observed
        out.anomaly(
            "no_fallback_refresh",
            Severity.HIGH,
            FAMILY_C5,
            call=call,
            lm=None,
            dialog=dialog,
            side=watch.side,
            event_time_us=watch.expiry,
            evidence=watch.refs,
            t_expiry=watch.expiry,
            session_expires_s=watch.interval_s,
            **watch.fields,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, dialog: Dialog) -> _State:
        st: _State = dialog.ext_for(self.ext_key, _State)
        return st

    def _existing(self, dialog: Dialog | None) -> _State | None:
        if dialog is None or not dialog.ext:
            return None
        st: _State | None = dialog.ext.get(self.ext_key)
        return st


def _tag_of(call: Call, dialog: Dialog, side: int) -> str:
    """The From-tag a side uses in its requests."""
    return call.caller_tag if side == CALLER else dialog.callee_tag


def _purpose_of(req: Any, timer: tuple[int, int] | None) -> str:
    """The purpose of an UPDATE whose request event was not seen by this detector."""
    if req is None:
        return ""
    msg = req.msg
    if session_sdp(msg) is not None:
        return OFFER
    return REFRESH if msg.session_expires is not None or timer is not None else TARGET_REFRESH


DETECTOR = UpdateSupportDetector
