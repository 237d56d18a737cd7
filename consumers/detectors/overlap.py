"""C.2: overlapping re-INVITE / UPDATE and the 500 + Retry-After answer (PROTOCOL.md C.2).

Owns `overlapping_invite`, `overlap_500_without_retry_after`, `overlap_not_500` and
`retry_after_violated`.

A request Y from side S overlaps when, as S sent it, an earlier transaction X of S's (lower
CSeq, same dialog) had no final response yet [RFC 3261 §14.1, §14.2; RFC 3311 §5.2]:
- "invite": Y and X are re-INVITEs. S broke "MUST NOT initiate an INVITE while another is in
  progress" [§14.1]: `overlapping_invite`, reported once Y's answer is known (or after
  64*T1, or at the end of the call) so the record carries it;
- "update": Y and X are UPDATEs (no sender rule; the UAS must answer 500);
- "offer_pending": Y is an UPDATE with an offer while the receiver R holds an offer of S's
  it has not answered: S's re-INVITE offer awaiting R's 2xx, or S's offer in a 2xx to R's
  re-INVITE awaiting R's ACK [3311 §5.2].
"As S sent it" is read conservatively: X's final response was not captured before Y's
in-copy, so it cannot have reached S. X older than 64*T1 has timed out [§17.1.1.2] and
overlaps nothing. A lower CSeq than X's is out-of-order CSeq, a different 500 [§12.2.2],
left to C.14. The initial INVITE is never X: a re-INVITE while it is pending is C.3's.

R's answer is judged only when the overlap held at R too: X's final left R after Y reached
it (X's final in-copy later than Y's out-copy plus `tolerance_ms`). 500 must carry
Retry-After [§14.2; 3311 §5.2] (`overlap_500_without_retry_after`); 491 is accepted; so are
answers that come before or instead of the dialog-state check (authentication, malformed or
unsupported requests, 481, timeouts, overload: `EXEMPT`); anything else, e.g. a 2xx or 488,
is `overlap_not_500`. Responses the proxy generated (its own 500, 408) are not R's and are
not judged. After a 500 with Retry-After N, S's next request of Y's method sooner than N s
(from the 500's out-copy to the resend's in-copy, minus tolerance) is
`retry_after_violated`.

Fields: first_cseq, second_cseq, gap_ms (X to Y, in-copies), retry_after_s,
resend_after_ms, plus overlap_kind, second_method and response_status.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import Call, Dialog, Transaction, other
from consumers.tracking.tracker import Event

TX_TIMEOUT_US: Final = 32_000_000  # 64*T1: Timer B / Timer F [RFC 3261 §17.1.1.2, §17.1.2.2]
EXT: Final = "c2_overlap"
# Answers that precede or replace the overlap check at the UAS, so they say nothing about it.
EXEMPT: Final = frozenset(
    {400, 401, 403, 405, 407, 408, 413, 414, 415, 416, 420, 421, 422, 423, 481, 482, 483}
    | {487, 491, 493, 500, 501, 503, 505, 513}
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Case:
    """An overlapping request Y awaiting its final response."""

    __slots__ = ("first", "gap_ms", "kind", "lm", "reported", "t", "t_out", "tx")

    def __init__(self, kind: str, ev: Event, first: Transaction) -> None:
        self.kind = kind
        self.tx: Transaction = ev.tx  # type: ignore[assignment]
        self.lm: LogicalMessage = ev.lm
        self.t = ev.t
        self.t_out = ev.t_out
        self.first = first
        self.gap_ms = max(ev.t - first.request_ts, 0) // 1000
        self.reported = False


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Resend:
    """S was told to wait Retry-After seconds before sending `method` again."""

    __slots__ = ("case_fields", "cseq", "lm500", "method", "seconds", "t500")

    def __init__(
        self, method: str, cseq: int, lm500: LogicalMessage, t500: int, seconds: int
    ) -> None:
        self.method = method
        self.cseq = cseq
        self.lm500 = lm500
        self.t500 = t500
        self.seconds = seconds
        self.case_fields: dict[str, Any] = {}


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _State:
    __slots__ = ("cases", "resend")

    def __init__(self) -> None:
        self.cases: list[_Case] = []
        self.resend: list[_Resend | None] = [None, None]

    def idle(self) -> bool:
        return not self.cases and self.resend[0] is None and self.resend[1] is None


def _get(dialog: Dialog) -> _State | None:
    return dialog.ext.get(EXT) if dialog.ext else None


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class OverlapDetector(Detector):
    name: ClassVar[str] = "overlap"
    family: ClassVar[str] = "C.2"
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False
    tolerance_ms: ClassVar[int] = 100

    def on_event(self, ev: Event, out: Output) -> None:
        dialog = ev.dialog
        if dialog is None or ev.retransmission or ev.unknown_dialog or ev.tx is None:
            return
        if ev.is_request:
            self._request(ev, dialog, out)
        elif ev.status >= 200:
            self._final(ev, dialog, out)

    # -- requests --------------------------------------------------------------------------

    def _request(self, ev: Event, dialog: Dialog, out: Output) -> None:
        method = ev.method
        st = _get(dialog)
        if st is not None:
            self._check_resend(ev, dialog, st, out)
        if method not in ("INVITE", "UPDATE") or ev.tx is None or ev.tx.initial:
            return
        found = self._overlap(ev, dialog)
        if found is None:
            return
        kind, first = found
        if st is None:
            st = dialog.ext_for(EXT, _State)
        st.cases.append(_Case(kind, ev, first))
        key = (dialog.callee_tag, ev.side, ev.cseq, method)
        out.schedule(ev.t + TX_TIMEOUT_US, ev.call, "unanswered", key)

    def _overlap(self, ev: Event, dialog: Dialog) -> tuple[str, Transaction] | None:
        """The kind of overlap Y makes and the transaction X it overlaps, if any."""
        y = ev.tx
        assert y is not None
        side = ev.side
        method = ev.method
        best: Transaction | None = None
        offer_x: Transaction | None = None
        for tx in ev.call.transactions.values():
            if (
                tx is y
                or tx.dialog is not dialog
                or tx.initial
                or tx.request is None
                or ev.t - tx.request_ts > TX_TIMEOUT_US
            ):
                continue
            if tx.side == side and tx.cseq < y.cseq and not tx.final_status:
                if tx.method == method and (best is None or tx.cseq > best.cseq):
                    best = tx
                elif tx.method == "INVITE" and tx.offer_in == "request" and not tx.answered:
                    offer_x = tx  # S's re-INVITE offer that R has not answered yet
            elif (
                tx.side == other(side)
                and tx.method == "INVITE"
                and tx.offer_in == "response"
                and not tx.answered
                and 200 <= tx.final_status < 300
                and not tx.ack_ts
            ):
                offer_x = tx  # S's offer in its 2xx to R's re-INVITE, awaiting R's ACK
        if best is not None:
            return ("invite" if method == "INVITE" else "update"), best
        if method == "UPDATE" and ev.sdp_role == "offer" and offer_x is not None:
            return "offer_pending", offer_x
        return None

    def _check_resend(self, ev: Event, dialog: Dialog, st: _State, out: Output) -> None:
        side = ev.side
        for s, r in enumerate(st.resend):
            if r is not None and (ev.method == "BYE" or ev.t - r.t500 > r.seconds * 1_000_000):
                st.resend[s] = None  # Retry-After elapsed (any resend is fine now) or BYE
        r = st.resend[side]
        if r is not None and ev.method == r.method and ev.cseq > r.cseq:
            st.resend[side] = None
            after_us = ev.t - r.t500
            if after_us < r.seconds * 1_000_000 - self.tolerance_ms * 1000:
                fields = dict(r.case_fields)
                fields["resend_after_ms"] = max(after_us, 0) // 1000
                out.anomaly(
                    "retry_after_violated",
                    Severity.LOW,
                    self.family,
                    call=ev.call,
                    lm=ev.lm,
                    dialog=dialog,
                    side=side,
                    evidence=[ev.lm, r.lm500],
                    **fields,
                )
        self._tidy(dialog, st)

    # -- the answer ------------------------------------------------------------------------

    def _final(self, ev: Event, dialog: Dialog, out: Output) -> None:
        st = _get(dialog)
        if st is None:
            return
        case = next((c for c in st.cases if c.tx is ev.tx), None)
        if case is None:
            return
        st.cases.remove(case)
        status = ev.status
        x = case.first
        fields = self._fields(case, status, ev.msg if status == 500 else None)
        evidence: list[Any] = [case.lm, *([x.request] if x.request is not None else [])]
        if case.kind == "invite":
            self._report_invite(ev.call, dialog, case, fields, [*evidence, ev.lm], out)
        tol = self.tolerance_ms * 1000
        if case.kind == "offer_pending" and x.side != case.tx.side:
            held_until = x.ack_ts  # R answers S's offer in a 2xx with its ACK
        else:
            held_until = x.final_ts
        at_r = not held_until or held_until > case.t_out + tol
        if x.answered and not x.final_status and x.side == case.tx.side:
            at_r = False  # R answered X's offer in a 1xx, maybe before Y arrived: lenient
        if not at_r or ev.proxy_generated:
            self._tidy(dialog, st)
            return
        responder = ev.side
        if status == 500:
            ra = ev.msg.retry_after
            if not ev.msg.header("retry-after"):
                out.anomaly(
                    "overlap_500_without_retry_after",
                    Severity.LOW,
                    self.family,
                    call=ev.call,
                    lm=ev.lm,
                    dialog=dialog,
                    side=responder,
                    evidence=[ev.lm, *evidence],
                    **fields,
                )
            elif ra is not None and ra.seconds > 0:
                r = _Resend(case.tx.method, case.tx.cseq, ev.lm, ev.t_out, ra.seconds)
                r.case_fields = fields
                st.resend[case.tx.side] = r
        elif status not in EXEMPT:
            out.anomaly(
                "overlap_not_500",
                Severity.LOW,
                self.family,
                call=ev.call,
                lm=ev.lm,
                dialog=dialog,
                side=responder,
                evidence=[ev.lm, *evidence],
                **fields,
            )
        self._tidy(dialog, st)

    def _fields(self, case: _Case, status: int, msg500: Any) -> dict[str, Any]:
        ra = msg500.retry_after if msg500 is not None else None
        return {
            "first_cseq": case.first.cseq,
            "second_cseq": case.tx.cseq,
            "gap_ms": case.gap_ms,
            "retry_after_s": ra.seconds if ra is not None else None,
            "resend_after_ms": None,
            "overlap_kind": case.kind,
            "first_method": case.first.method,
            "second_method": case.tx.method,
            "response_status": status or None,
        }

    def _report_invite(
        self,
        call: Call,
        dialog: Dialog,
        case: _Case,
        fields: dict[str, Any],
        evidence: list[Any],
        out: Output,
    ) -> None:
        if case.reported:
            return
        case.reported = True
        out.anomaly(
            "overlapping_invite",
            Severity.MEDIUM,
            self.family,
            call=call,
            lm=case.lm,
            dialog=dialog,
            side=case.tx.side,
            evidence=evidence,
            **fields,
        )

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        if key != "unanswered":
            return
        callee_tag, side, cseq, method = data
        dialog = call.dialogs.get(callee_tag)
        st = _get(dialog) if dialog is not None else None
        if dialog is None or st is None:
            return
        for case in list(st.cases):
            if (case.tx.side, case.tx.cseq, case.tx.method) == (side, cseq, method):
                st.cases.remove(case)
                if case.kind == "invite":
                    fields = self._fields(case, 0, None)
                    self._report_invite(call, dialog, case, fields, [], out)
        self._tidy(dialog, st)

    def on_call_end(self, call: Call, out: Output) -> None:
        # The overlap itself was seen; only its answer is missing.
        for dialog in call.dialogs.values():
            st = _get(dialog)
            if st is None:
                continue
            for case in st.cases:
                if case.kind == "invite":
                    self._report_invite(call, dialog, case, self._fields(case, 0, None), [], out)
            st.cases.clear()

    def _tidy(self, dialog: Dialog, st: _State) -> None:
        if st.idle() and dialog.ext is not None:
            dialog.ext.pop(EXT, None)


DETECTOR = OverlapDetector

__all__ = ["DETECTOR", "OverlapDetector"]
