"""481 Call/Transaction Does Not Exist to in-dialog requests: PROTOCOL.md C.6.

A 481 to a mid-dialog request makes the UAC terminate the dialog [RFC 3261 §12.2.1.2; RFC
3311 §5.3]; RFC 5057 says it destroys the usage, which for a call is the dialog. Rows, each
on the first (non-retransmitted) 481 of a transaction:

- `early_update_481` (high): an UPDATE sent while the observer held its dialog early
  (`Transaction.state_at_send`), answered 481. The fields help attribute the cause: how the
  To-tag's dialog was created (`to_tag_origin`: the first tagged 1xx of that To-tag, reliable
  or not; RFC 3311 §4 notes only reliable 1xx guarantee the early dialog at both ends), how
  many early dialogs (forks) existed, the initial INVITE's final response or the CANCEL the
  UPDATE crossed or followed (`crossing_message`, `ms_since_final` = UPDATE time minus the
  final response's time, negative when the final came after the UPDATE was sent).
- On confirmed dialogs (moratorium or established when sent): `reinvite_481` (high),
  `update_481` (high): the dialog is lost with the session; `bye_481` (medium): the peer had
  already forgotten the dialog, harmless for the hang-up itself but a sign of lost state.
  These severities are the catalogue's C.0 scale applied; C.6 names only the early one.
- `481_after_bye_race` (info): the responder had itself sent BYE before answering 481, and
  the request was sent before the observer saw the final response to that BYE (the sender
  answers a BYE on receipt, so it had not got it yet): a request crossing a BYE from the
  other side (RFC 5407 §3.2.2), and crossing BYEs.

Not here: 481 to PRACK (C.13 `prack_481`), to CANCEL (affects only the CANCEL [RFC 5057]),
to a re-INVITE or BYE on an early dialog (C.3, C.14), to a request whose To-tag matches no
dialog (C.14 `unknown_dialog_request`), and requests sent after the sender's own BYE
(C.14). A 481 the proxy generated is reported with confidence 0.6: the endpoint may still
hold the dialog.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import Call, Dialog, Transaction
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Event

FAMILY: Final = "C.6"
CONFIRMED: Final = (DialogState.MORATORIUM, DialogState.ESTABLISHED)
CONFIRMED_NAMES: Final = {
    "INVITE": ("reinvite_481", Severity.HIGH),
    "UPDATE": ("update_481", Severity.HIGH),
    "BYE": ("bye_481", Severity.MEDIUM),
}


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Dialog481Detector(Detector):
    name: ClassVar[str] = "dialog_481"
    family: ClassVar[str] = FAMILY
    requests: ClassVar[frozenset[str] | None] = frozenset()
    responses: ClassVar[frozenset[str] | None] = frozenset(CONFIRMED_NAMES)
    statuses: ClassVar[tuple[int, int]] = (481, 481)
    retransmissions: ClassVar[bool] = False

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.msg.is_request or ev.status != 481 or ev.retransmission:
            return
        method = ev.method
        tx = ev.tx
        dialog = ev.dialog
        if method not in CONFIRMED_NAMES or tx is None or dialog is None:
            return
        responder = ev.side
        sent_state = tx.state_at_send if tx.request is not None else ev.state_before
        t_req = tx.request_ts or ev.t
        if dialog.bye_ts and dialog.bye_side == responder and dialog.bye_ts <= ev.t:
            if sent_state == DialogState.TERMINATED:
                return  # sent after it had answered the BYE: not a race (C.14)
            name, severity = "481_after_bye_race", Severity.INFO
        elif sent_state == DialogState.EARLY:
            if method != "UPDATE":
                return
            name, severity = "early_update_481", Severity.HIGH
        elif sent_state in CONFIRMED:
            name, severity = CONFIRMED_NAMES[method]
        else:
            return
        call = ev.call
        evidence = [tx.request, ev.lm] if tx.request is not None else [ev.lm]
        out.anomaly(
            name,
            severity,
            FAMILY,
            call=call,
            lm=ev.lm,
            dialog=dialog,
            side=responder,
            evidence=evidence,
            confidence=0.6 if ev.proxy_generated else 1.0,
            to_tag_origin=_to_tag_origin(call, dialog),
            early_dialog_count=sum(
                1 for d in call.dialogs.values() if d.early_ts and d.early_ts <= t_req
            ),
            ms_since_final=_ms_since_final(call.initial, t_req),
            crossing_message=_crossing(call, dialog, t_req, ev.t, name),
        )


def _crossing(call: Call, dialog: Dialog, t_req: int, t_481: int, name: str) -> str | None:
    """What the request crossed or followed: the BYE of a race; for an early UPDATE, a CANCEL
    sent before it, else the initial INVITE's final response seen before the 481."""
    if name == "481_after_bye_race":
        return "BYE"
    initial = call.initial
    if name != "early_update_481" or initial is None:
        return None
    if initial.cancel_ts and initial.cancel_ts <= t_req:
        return "CANCEL"
    if initial.final is not None and initial.final_ts <= t_481:
        tag = initial.final.msg.to_tag or ""
        fork = "" if tag == dialog.callee_tag else f" (other fork tag={tag})"
        return f"{initial.final_status} INVITE{fork}"
    return None


def _to_tag_origin(call: Call, dialog: Dialog) -> str:
    """The response that created the dialog: "183 reliable", "180 unreliable", "2xx"."""
    initial = call.initial
    if initial is not None:
        for lm in initial.provisional:
            msg = lm.msg
            if (msg.to_tag or "") == dialog.callee_tag:
                reliable = msg.require is not None and "100rel" in msg.require
                kind = "reliable" if reliable and msg.rseq is not None else "unreliable"
                return f"{msg.status_code} {kind}"
    if dialog.count_2xx:
        return "2xx"
    return "unknown"


def _ms_since_final(initial: Transaction | None, t_req: int) -> int | None:
    if initial is None or not initial.final_ts:
        return None
    return round((t_req - initial.final_ts) / 1000)


DETECTOR = Dialog481Detector
