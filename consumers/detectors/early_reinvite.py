"""C.3: re-INVITE in an early dialog (PROTOCOL.md C.3; B.2, B.5; E point 8).

Owns `reinvite_in_early_dialog`.

No INVITE may start inside a dialog while another INVITE transaction is in progress in
either direction [RFC 3261 §14.1]; while a dialog is early the initial INVITE is, so a
re-INVITE cannot modify an early session [RFC 3311 §1]; UPDATE is the tool for that. The
rule is derived, not a literal sentence of an RFC (PROTOCOL.md E.8).

Detected: an INVITE with a To-tag (an INVITE without one, e.g. with Replaces or Join, is an
initial INVITE of its own) sent by either side on a dialog that was early when it was sent:
the dialog of its tags, so under forking a re-INVITE to a confirmed branch is fine while
one to a still-early branch is not. "When it was sent" is capture order after the engine's
reorder window; a final response to the initial INVITE that shows up later but was sent
before the re-INVITE (copies reordered beyond the window) withdraws the finding if it has
not been reported yet. An INVITE whose To-tag matches no dialog while the initial INVITE is
unanswered is reported with to_tag_known_in_1xx=false and lower confidence (the tagged 1xx
may simply not have been captured).

Expected answers [§14.2]: the callee answers the caller's re-INVITE 500 with Retry-After
(it has not answered the first INVITE); the caller answers the callee's 491 (its own INVITE
is pending). The record waits for the answer: a 2xx is reported at once (medium); a failure
waits `teardown_window_s` for the sender to tear the call down (CANCEL or BYE by the caller,
a final error to the initial INVITE or BYE by the callee), which makes it high; no answer
within 64*T1, or the end of the call, reports what is known.

Fields: early_since (µs since the epoch, when the dialog became early), initial_invite_cseq,
response_status (0 if none), to_tag_known_in_1xx, plus expected_status, retry_after_s,
response_origin, torn_down and other_branch_confirmed.
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

TX_TIMEOUT_US: Final = 32_000_000  # 64*T1 [RFC 3261 §17.1.1.2]
EXT: Final = "c3_early"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Case:
    __slots__ = (
        "callee_tag",
        "cseq",
        "early_since",
        "evidence",
        "final_lm",
        "initial_cseq",
        "lm",
        "origin",
        "other_branch",
        "retry_after",
        "side",
        "status",
        "t",
        "t_out",
        "tag_known",
        "torn_down",
    )

    def __init__(self, ev: Event, callee_tag: str, early_since: int | None, tag_known: bool):
        self.lm: LogicalMessage = ev.lm
        self.side = ev.side
        self.cseq = ev.cseq
        self.t = ev.t
        self.t_out = ev.t_out
        self.callee_tag = callee_tag
        self.early_since = early_since
        self.tag_known = tag_known
        initial = ev.call.initial
        self.initial_cseq = initial.cseq if initial is not None else 0
        self.other_branch = 200 <= ev.call.initial_status < 300
        self.evidence: list[str] = []
        self.final_lm: LogicalMessage | None = None
        self.status = 0
        self.retry_after: int | None = None
        self.origin = ""
        self.torn_down = False


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class EarlyReinviteDetector(Detector):
    name: ClassVar[str] = "early_reinvite"
    family: ClassVar[str] = "C.3"
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False
    teardown_window_s: ClassVar[float] = 10.0

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission:
            return
        call = ev.call
        cases: list[_Case] | None = call.ext.get(EXT) if call.ext else None
        if ev.is_request:
            if cases:
                self._teardown_request(ev, cases, out)
            if ev.method == "INVITE" and ev.msg.to_tag and ev.tx is not None:
                self._reinvite(ev, out)
        elif ev.status >= 200 and cases:
            self._final(ev, cases, out)

    # -- detection -------------------------------------------------------------------------

    def _reinvite(self, ev: Event, out: Output) -> None:
        call = ev.call
        tx = ev.tx
        assert tx is not None
        if tx.initial:
            return
        dialog = ev.dialog
        if dialog is not None and ev.state_before == DialogState.EARLY:
            case = _Case(ev, dialog.callee_tag, dialog.early_ts or None, True)
            first_1xx = self._tagged_1xx(call, dialog.callee_tag)
            if first_1xx:
                case.evidence.append(first_1xx)
        elif dialog is None and ev.unknown_dialog and call.owner_known:
            initial = call.initial
            if initial is None or initial.request is None or initial.final_status:
                return
            tag = (ev.msg.to_tag if ev.side == CALLER else ev.msg.from_tag) or ""
            case = _Case(ev, tag, None, False)
        else:
            return
        call.ext_for(EXT, list).append(case)
        out.schedule(ev.t + TX_TIMEOUT_US, call, "unanswered", (case.side, case.cseq))

    @staticmethod
    def _tagged_1xx(call: Call, callee_tag: str) -> str:
        initial = call.initial
        if initial is None:
            return ""
        for lm in initial.provisional:
            if (lm.msg.to_tag or "") == callee_tag:
                return lm.ref
        return ""

    # -- what follows ----------------------------------------------------------------------

    def _final(self, ev: Event, cases: list[_Case], out: Output) -> None:
        call = ev.call
        tx = ev.tx
        if tx is None:
            return
        if tx.initial:
            self._initial_final(ev, cases, out)
            return
        case = next(
            (c for c in cases if tx.method == "INVITE" and (c.side, c.cseq) == (tx.side, tx.cseq)),
            None,
        )
        if case is None or case.status:
            return
        case.final_lm = ev.lm
        case.status = ev.status
        case.origin = ev.lm.origin
        ra = ev.msg.retry_after
        case.retry_after = ra.seconds if ra is not None else None
        if 200 <= ev.status < 300 or case.torn_down:
            self._report(call, case, cases, out)
        else:
            due = ev.t + int(self.teardown_window_s * 1_000_000)
            out.schedule(due, call, "teardown", (case.side, case.cseq))

    def _initial_final(self, ev: Event, cases: list[_Case], out: Output) -> None:
        """A final response to the initial INVITE: reordering check, callee teardown."""
        callee_tag = ev.msg.to_tag or ""
        for case in list(cases):
            if case.callee_tag != callee_tag and case.tag_known:
                continue
            # Sent before the re-INVITE but seen late: the dialog was not early after all. The
            # caller needs the final delivered (out-copy), the callee only to have sent it.
            # Both times come from the capturing node's clock, so no tolerance applies.
            sent = ev.t_out if case.side == CALLER else ev.t
            if sent < case.t and 200 <= ev.status < 300 and not case.status:
                cases.remove(case)
                continue
            if (
                case.side == CALLEE
                and ev.status >= 300
                and not ev.proxy_generated
                and not (ev.tx is not None and ev.tx.cancel_ts)  # 487 after the caller's CANCEL
                and ev.t >= case.t
            ):
                self._torn_down(call=ev.call, case=case, cases=cases, lm=ev.lm, out=out)

    def _teardown_request(self, ev: Event, cases: list[_Case], out: Output) -> None:
        method = ev.method
        if method not in ("BYE", "CANCEL") or ev.proxy_generated:
            return
        for case in list(cases):
            if case.side != ev.side or ev.t < case.t:
                continue
            if method == "CANCEL" and (ev.side != CALLER or ev.cseq != case.initial_cseq):
                continue
            if (
                method == "BYE"
                and ev.dialog is not None
                and ev.dialog.callee_tag != case.callee_tag
            ):
                continue
            self._torn_down(call=ev.call, case=case, cases=cases, lm=ev.lm, out=out)

    def _torn_down(
        self, *, call: Call, case: _Case, cases: list[_Case], lm: LogicalMessage, out: Output
    ) -> None:
        if case.torn_down:
            return
        case.torn_down = True
        case.evidence.append(lm.ref)
        if case.status:
            self._report(call, case, cases, out)

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        cases: list[_Case] | None = call.ext.get(EXT) if call.ext else None
        if not cases:
            return
        side, cseq = data
        case = next((c for c in cases if (c.side, c.cseq) == (side, cseq)), None)
        if case is None:
            return
        if key == "teardown" or (key == "unanswered" and not case.status):
            self._report(call, case, cases, out)

    def on_call_end(self, call: Call, out: Output) -> None:
        cases: list[_Case] | None = call.ext.get(EXT) if call.ext else None
        for case in list(cases or ()):
            self._report(call, case, cases, out)  # type: ignore[arg-type]

    # -- the record ------------------------------------------------------------------------

    def _report(self, call: Call, case: _Case, cases: list[_Case], out: Output) -> None:
        if case in cases:
            cases.remove(case)
        failed = not 200 <= case.status < 300
        severity = Severity.HIGH if failed and case.torn_down else Severity.MEDIUM
        dialog: Dialog | None = call.dialogs.get(case.callee_tag)
        evidence: list[Any] = [case.lm, *case.evidence]
        if case.final_lm is not None:
            evidence.insert(1, case.final_lm)
        out.anomaly(
            "reinvite_in_early_dialog",
            severity,
            self.family,
            call=call,
            lm=case.lm,
            dialog=dialog,
            side=case.side,
            evidence=evidence,
            confidence=1.0 if case.tag_known else 0.6,
            state="early",
            early_since=case.early_since,
            initial_invite_cseq=case.initial_cseq,
            response_status=case.status,
            to_tag_known_in_1xx=case.tag_known,
            expected_status=500 if case.side == CALLER else 491,
            retry_after_s=case.retry_after,
            response_origin=case.origin or None,
            torn_down=case.torn_down,
            other_branch_confirmed=case.other_branch,
        )


DETECTOR = EarlyReinviteDetector

__all__ = ["DETECTOR", "EarlyReinviteDetector"]
