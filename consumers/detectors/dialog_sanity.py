"""C.14: dialog-level sanity (RFC 3261 §12.2.2, §13.2.2.4, §15; RFC 5407 §3.1.4, §3.2).

Owns `cseq_regression`, `in_dialog_request_after_bye`, `unknown_dialog_request`,
`multiple_2xx_forked` and `early_bye_by_callee` (PROTOCOL.md C.14, B.2, B.3).

- cseq_regression (medium): an in-dialog request whose CSeq is lower than the last one its
  sender used in that dialog (the caller's count starts at the initial INVITE); the UAS must
  answer 500 [§12.2.2]. Gaps are normal (a challenged request was resent with a new number).
  ACK and CANCEL reuse the INVITE's number, the late ACK of RFC 5407 §3.1.4 the initial
  INVITE's, so neither is judged; retransmissions are not new requests. A lower number that
  reaches the proxy within `tolerance_s` of the higher one may be network reordering:
  confidence 0.5.
- in_dialog_request_after_bye (info; low when an endpoint answered it with something other
  than 481): a new request other than BYE, ACK or CANCEL on a dialog after a BYE [5407 §2,
  §3.2]. A crossing BYE from the peer (the request left within `tolerance_s` of it) is still
  reported, marked `crossing`. NOTIFY/SUBSCRIBE of a subscription the dialog carries
  (REFER or SUBSCRIBE seen in it) outlive the INVITE usage [RFC 5057 §5] and are skipped.
  Reported at the request's final response (or when the call is forgotten).
- unknown_dialog_request: a request with a To-tag matching no dialog of a call whose initial
  INVITE was seen (ACK and CANCEL excepted: a hop-by-hop ACK carries the To-tag of a failure
  that never made a dialog). Reported at its final response: 481 means the peer has no such
  dialog either (low); a 2xx means the observer missed the dialog's creation (capture gap,
  info, confidence 0.3); otherwise info, confidence 0.5.
- multiple_2xx_forked (info): a 2xx to the initial INVITE creates a second confirmed dialog
  (another To-tag) [§13.2.2.4]; 2xx retransmissions are the same dialog.
- early_bye_by_callee (medium): the callee sends BYE on a dialog that is still early; only
  the caller may [§15]. A BYE the proxy generated is not the callee's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import CALLEE, CALLER, Call, Dialog
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Event

# call.ext: (from-tag, CSeq, method) -> _Held, until the final response
PENDING: Final = "c14_pending"
# dialog.ext: a REFER/SUBSCRIBE created a subscription usage
SUBSCRIPTION: Final = "c14_subscription"
GONE: Final = (DialogState.MORTAL, DialogState.TERMINATED)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Held:
    """A request whose anomaly waits for its final response to be graded."""

    __slots__ = ("callee_tag", "fields", "lm", "name", "side")

    def __init__(
        self, name: str, lm: LogicalMessage, side: int, callee_tag: str, fields: dict[str, Any]
    ) -> None:
        self.name = name
        self.lm = lm
        self.side = side
        self.callee_tag = callee_tag
        self.fields = fields


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class DialogSanityDetector(Detector):
    name: ClassVar[str] = "dialog_sanity"
    family: ClassVar[str] = "C.14"
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False
    tolerance_s: ClassVar[float] = 0.1

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission:
            return
        if ev.msg.is_request:
            self._request(ev, out)
        else:
            self._response(ev, out)

    # -- requests --------------------------------------------------------------------------

    def _request(self, ev: Event, out: Output) -> None:
        method = ev.method
        if method in ("ACK", "CANCEL") or ev.proxy_generated:
            return
        msg = ev.msg
        key = (msg.from_tag or "", ev.cseq, method)
        if ev.unknown_dialog:
            callee_tag = (msg.to_tag if ev.side == CALLER else msg.from_tag) or ""
            fields = {"to_tag": msg.to_tag or "", "known_dialogs": len(ev.call.dialogs)}
            self._hold(
                ev.call, key, _Held("unknown_dialog_request", ev.lm, ev.side, callee_tag, fields)
            )
            return
        dialog = ev.dialog
        if dialog is None:
            return
        if method in ("REFER", "SUBSCRIBE"):
            dialog.ext_for(SUBSCRIPTION, lambda: True)
        self._cseq(ev, dialog, out)
        if method == "BYE":
            if ev.side == CALLEE and ev.state_before == DialogState.EARLY:
                out.anomaly(
                    "early_bye_by_callee",
                    Severity.MEDIUM,
                    self.family,
                    call=ev.call,
                    lm=ev.lm,
                    dialog=dialog,
                    side=CALLEE,
                    early_since=dialog.early_ts,
                )
            return
        if not dialog.bye_ts or ev.state_before not in GONE:
            return
        if method in ("NOTIFY", "SUBSCRIBE") and dialog.ext and dialog.ext.get(SUBSCRIPTION):
            return
        crossing = dialog.bye_side != ev.side and ev.t <= dialog.bye_ts + self.tolerance_s * 1e6
        fields = {
            "bye_side": "caller" if dialog.bye_side == CALLER else "callee",
            "ms_after_bye": round((ev.t - dialog.bye_ts) / 1000, 3),
            "crossing": crossing,
        }
        self._hold(
            ev.call,
            key,
            _Held("in_dialog_request_after_bye", ev.lm, ev.side, dialog.callee_tag, fields),
        )

    def _cseq(self, ev: Event, dialog: Dialog, out: Output) -> None:
        side = ev.side
        num = ev.cseq
        last = dialog.cseq[side] or 0  # the tracker keeps the highest number seen
        call = ev.call
        if side == CALLER and call.initial is not None and call.owner_known:
            last = max(last, call.initial.cseq)
        if num >= last:
            return
        higher = next(
            (
                tx
                for tx in call.transactions.values()
                if tx.side == side
                and tx.cseq == last
                and tx.method not in ("ACK", "CANCEL")
                and (tx.dialog is dialog or tx.initial)
            ),
            None,
        )
        gap_ms = round((ev.t - higher.request_ts) / 1000, 3) if higher is not None else None
        reordered = gap_ms is not None and gap_ms <= self.tolerance_s * 1000
        out.anomaly(
            "cseq_regression",
            Severity.MEDIUM,
            self.family,
            call=call,
            lm=ev.lm,
            dialog=dialog,
            side=side,
            evidence=[ev.lm, higher.request] if higher is not None and higher.request else None,
            confidence=0.5 if reordered else 1.0,
            last_cseq=last,
            last_method=higher.method if higher is not None else "",
            gap_ms=gap_ms,
            possibly_reordered=reordered,
        )

    def _hold(self, call: Call, key: tuple[str, int, str], held: _Held) -> None:
        call.ext_for(PENDING, dict)[key] = held

    # -- responses -------------------------------------------------------------------------

    def _response(self, ev: Event, out: Output) -> None:
        status = ev.status
        if status < 200:
            return
        call = ev.call
        pending = call.ext.get(PENDING) if call.ext else None
        if pending:
            key = (ev.msg.from_tag or "", ev.cseq, ev.method)
            held = pending.pop(key, None)
            if held is not None:
                self._report(call, held, ev.lm, out)
        tx = ev.tx
        dialog = ev.dialog
        if (
            status < 300
            and tx is not None
            and tx.initial
            and dialog is not None
            and dialog.count_2xx == 1
        ):
            confirmed = [
                d.callee_tag for d in call.dialogs.values() if d is not dialog and d.count_2xx > 0
            ]
            if confirmed:
                first = tx.final if tx.final is not None and tx.final is not ev.lm else None
                out.anomaly(
                    "multiple_2xx_forked",
                    Severity.INFO,
                    self.family,
                    call=call,
                    lm=ev.lm,
                    dialog=dialog,
                    side=CALLEE,
                    evidence=[first, ev.lm] if first is not None else None,
                    confirmed_dialogs=len(confirmed) + 1,
                    to_tags=[*confirmed, dialog.callee_tag],
                )

    def _report(self, call: Call, held: _Held, final: LogicalMessage | None, out: Output) -> None:
        status = (final.msg.status_code or 0) if final is not None else 0
        by_endpoint = final is not None and final.origin != "proxy"
        severity = Severity.INFO
        confidence = 1.0
        fields = dict(held.fields)
        fields["response_status"] = status
        if held.name == "unknown_dialog_request":
            if status == 481:
                severity, cause = Severity.LOW, "peer_has_no_dialog"
            elif 200 <= status < 300:
                confidence, cause = 0.3, "capture_gap"
            else:
                confidence, cause = 0.5, "unknown" if final is not None else "unanswered"
            fields["cause"] = cause
        elif by_endpoint and status != 481:
            severity = Severity.LOW  # the peer still treated the ended dialog as alive
        out.anomaly(
            held.name,
            severity,
            self.family,
            call=call,
            lm=held.lm,
            dialog=call.dialogs.get(held.callee_tag),
            side=held.side,
            evidence=[held.lm, final] if final is not None else None,
            confidence=confidence,
            **fields,
        )

    def on_call_end(self, call: Call, out: Output) -> None:
        pending = call.ext.get(PENDING) if call.ext else None
        if not pending:
            return
        for held in list(pending.values()):
            self._report(call, held, None, out)
        pending.clear()


DETECTOR = DialogSanityDetector
