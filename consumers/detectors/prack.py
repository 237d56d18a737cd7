"""Reliable provisional responses and PRACK: PROTOCOL.md C.13 (RFC 3262 §3-§5, RFC 3311 §5.1).

State, per dialog, for the latest INVITE transaction that got a reliable 1xx (one with
`Require: 100rel` and an RSeq [RFC 3262 §3]): the last RSeq, the reliable 1xx not yet
PRACKed (a PRACK matches by its RAck: RSeq, CSeq number, method [§7.2]), and for the first
reliable 1xx with SDP whether it was PRACKed, whether that PRACK carried SDP and whether it
got a 2xx. RSeq spaces are per transaction and per UAS, so forks (one dialog per To-tag)
never mix. A reliable 1xx whose RSeq is not above the last one is a retransmission.

Rows (severities from the catalogue):
- `reliable_1xx_without_supported` (medium): a reliable 1xx to an INVITE that listed 100rel
  in neither Supported nor Require [§3]; once per INVITE transaction, only when the INVITE
  itself was captured.
- `rseq_gap` (low): a new reliable 1xx whose RSeq is not the last + 1 [§3, §4].
- `second_reliable_1xx_before_prack` (low): a new reliable 1xx while an earlier one of the
  same transaction is not PRACKed [§3].
- `2xx_before_prack_of_sdp_1xx` (medium): the 2xx to the INVITE while a reliable 1xx that
  carried SDP is not PRACKed [§3, §5].
- `prack_481` (medium): a PRACK answered 481 [§3]; `matched_reliable_1xx` says whether the
  observer had seen an unacknowledged reliable 1xx that the RAck matches (then the UAS is
  at fault, else the PRACK's sender). A PRACK sent after the INVITE's final response
  (`after_final`: it crossed the 2xx, which ends the 1xx's retransmissions) is the benign
  race the 481 rightly answers: confidence 0.5.
- `update_offer_before_prack` (medium): an UPDATE with SDP on an early dialog before the
  first offer/answer completed as RFC 3311 §5.1 requires: with an offer in the INVITE the
  answer must be in a reliable 1xx, and the callee must also have received its PRACK;
  without one, the offer must be in a reliable 1xx and the answer in its PRACK, and the
  caller must also have received the 2xx to that PRACK. Outstanding PRACK/UPDATE offers
  are glare and overlap (C.1, C.2), not checked here.

Checks that rest on a PRACK not having been seen are skipped when the proxy is not in the
route set (PRACK is an in-dialog request and then bypasses it, C.0 rule 7), and have
confidence 0.6 when no PRACK at all was captured on the dialog (tracing gap, C.0 rule 9).
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.detectors.base import Detector, Output
from consumers.records import Severity
from consumers.tracking.model import SIDE_NAMES, Dialog, other
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Event

FAMILY: Final = "C.13"
MAX_UNACKED: Final = 4


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Reliable:
    """Reliable-1xx facts of one INVITE transaction on one dialog."""

    __slots__ = (
        "invite_cseq",
        "invite_side",
        "last_prack",
        "last_rseq",
        "prack_2xx",
        "prack_cseq",
        "prack_sdp",
        "sdp_acked",
        "sdp_rseq",
        "unacked",
    )

    def __init__(self, invite_side: int, invite_cseq: int) -> None:
        self.invite_side = invite_side
        self.invite_cseq = invite_cseq
        self.last_rseq: int | None = None
        self.unacked: list[tuple[int, bool, str]] = []  # (RSeq, carried SDP, evidence ref)
        self.sdp_rseq: int | None = None  # the first reliable 1xx with SDP
        self.sdp_acked = False
        self.prack_cseq: int | None = None  # the PRACK of that 1xx
        self.prack_sdp = False
        self.prack_2xx = False
        self.last_prack: tuple[int, bool] | None = None  # (PRACK CSeq, matched a 1xx)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class PrackDetector(Detector):
    name: ClassVar[str] = "prack"
    family: ClassVar[str] = FAMILY
    requests: ClassVar[frozenset[str] | None] = frozenset({"PRACK", "UPDATE"})
    responses: ClassVar[frozenset[str] | None] = frozenset({"INVITE", "PRACK"})
    statuses: ClassVar[tuple[int, int]] = (101, 481)
    retransmissions: ClassVar[bool] = False
    ext_key: ClassVar[str] = "prack"
    untraced_confidence: ClassVar[float] = 0.6
    race_confidence: ClassVar[float] = 0.5

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission or ev.proxy_generated or ev.dialog is None:
            return
        dialog = ev.dialog
        method = ev.method
        if ev.msg.is_request:
            if method == "PRACK":
                self._prack(ev, dialog)
            elif method == "UPDATE" and ev.state_before == DialogState.EARLY and ev.sdp is not None:
                self._early_update(ev, dialog, out)
            return
        status = ev.status
        if method == "INVITE":
            if 100 < status < 200 and _reliable(ev):
                self._reliable_1xx(ev, dialog, out)
            elif 200 <= status < 300:
                self._invite_2xx(ev, dialog, out)
        elif method == "PRACK":
            st = self._existing(dialog)
            if 200 <= status < 300 and st is not None and ev.tx is not None:
                if st.prack_cseq == ev.cseq and ev.tx.side == st.invite_side:
                    st.prack_2xx = True
            elif status == 481:
                self._prack_481(ev, dialog, st, out)

    # -- reliable 1xx ----------------------------------------------------------------------

    def _reliable_1xx(self, ev: Event, dialog: Dialog, out: Output) -> None:
        tx = ev.tx
        rseq = ev.msg.rseq
        if tx is None or rseq is None:
            return
        st = self._existing(dialog)
        fresh = st is None or (st.invite_side, st.invite_cseq) != (tx.side, tx.cseq)
        if st is None or fresh:
            st = _Reliable(tx.side, tx.cseq)
            self._put(dialog, st)
        if st.last_rseq is not None and rseq <= st.last_rseq:
            return  # a retransmission (or an old one captured late)
        call = ev.call
        uas = ev.side
        if fresh and tx.request is not None:
            req = tx.request.msg
            offered = (req.supported or frozenset()) | (req.require or frozenset())
            if "100rel" not in offered:
                out.anomaly(
                    "reliable_1xx_without_supported",
                    Severity.MEDIUM,
                    FAMILY,
                    call=call,
                    lm=ev.lm,
                    dialog=dialog,
                    side=uas,
                    evidence=[ev.lm, tx.request],
                    rseq=rseq,
                    invite_supported=sorted(req.supported or ()),
                    invite_require=sorted(req.require or ()),
                )
        if st.last_rseq is not None and rseq != st.last_rseq + 1:
            out.anomaly(
                "rseq_gap",
                Severity.LOW,
                FAMILY,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=uas,
                rseq=rseq,
                expected_rseq=st.last_rseq + 1,
            )
        if st.unacked and call.record_routed is not False:
            first = st.unacked[0]
            out.anomaly(
                "second_reliable_1xx_before_prack",
                Severity.LOW,
                FAMILY,
                call=call,
                lm=ev.lm,
                dialog=dialog,
                side=uas,
                evidence=[ev.lm.ref, first[2]],
                confidence=self._confidence(dialog),
                rseq=rseq,
                unacked_rseq=first[0],
            )
        st.last_rseq = rseq
        has_sdp = ev.sdp is not None
        if has_sdp and st.sdp_rseq is None:
            st.sdp_rseq = rseq
        if len(st.unacked) < MAX_UNACKED:
            st.unacked.append((rseq, has_sdp, ev.lm.ref))

    def _invite_2xx(self, ev: Event, dialog: Dialog, out: Output) -> None:
        st = self._existing(dialog)
        tx = ev.tx
        if st is None or tx is None or (st.invite_side, st.invite_cseq) != (tx.side, tx.cseq):
            return
        pending_sdp = [u for u in st.unacked if u[1]]
        st.unacked = []
        if not pending_sdp or ev.call.record_routed is False:
            return
        out.anomaly(
            "2xx_before_prack_of_sdp_1xx",
            Severity.MEDIUM,
            FAMILY,
            call=ev.call,
            lm=ev.lm,
            dialog=dialog,
            side=ev.side,
            evidence=[ev.lm.ref, *(u[2] for u in pending_sdp)],
            confidence=self._confidence(dialog),
            unacked_rseq=pending_sdp[0][0],
        )

    # -- PRACK -----------------------------------------------------------------------------

    def _prack(self, ev: Event, dialog: Dialog) -> None:
        st = self._existing(dialog)
        rack = ev.msg.rack
        if st is None or rack is None:
            return
        matched = (
            rack.method == "INVITE"
            and rack.cseq == st.invite_cseq
            and ev.side == st.invite_side
            and any(u[0] == rack.rseq for u in st.unacked)
        )
        st.last_prack = (ev.cseq, matched)
        if not matched:
            return
        st.unacked = [u for u in st.unacked if u[0] != rack.rseq]
        if rack.rseq == st.sdp_rseq:
            st.sdp_acked = True
            st.prack_cseq = ev.cseq
            st.prack_sdp = ev.sdp is not None

    def _prack_481(self, ev: Event, dialog: Dialog, st: _Reliable | None, out: Output) -> None:
        tx = ev.tx
        req = tx.request if tx is not None else None
        rack = req.msg.rack if req is not None else None
        matched: bool | None = None
        if st is not None and st.last_prack is not None and st.last_prack[0] == ev.cseq:
            matched = st.last_prack[1]
        elif st is None and req is not None:
            matched = False  # no reliable 1xx at all on this dialog
        after_final = False
        if tx is not None and req is not None and rack is not None:
            invite = ev.call.transactions.get((req.msg.from_tag or "", rack.cseq, "INVITE"))
            after_final = invite is not None and 0 < invite.final_ts <= tx.request_ts
        out.anomaly(
            "prack_481",
            Severity.MEDIUM,
            FAMILY,
            call=ev.call,
            lm=ev.lm,
            dialog=dialog,
            side=ev.side if matched else other(ev.side),
            evidence=[ev.lm, req] if req is not None else [ev.lm],
            confidence=self.race_confidence if after_final else 1.0,
            rack=f"{rack.rseq} {rack.cseq} {rack.method}" if rack is not None else None,
            matched_reliable_1xx=matched,
            after_final=after_final,
        )

    # -- UPDATE offers in the early dialog (RFC 3311 §5.1) ---------------------------------

    def _early_update(self, ev: Event, dialog: Dialog, out: Output) -> None:
        call = ev.call
        initial = call.initial
        if initial is None or initial.request is None:
            return
        st = self._existing(dialog)
        if st is not None and (st.invite_side, st.invite_cseq) != (initial.side, initial.cseq):
            st = None
        sender_is_caller = ev.side == initial.side
        prack_visible = call.record_routed is not False
        violation = ""
        if initial.offer_in == "request":
            if st is None or st.sdp_rseq is None:
                violation = "answer_not_in_reliable_1xx"
            elif not sender_is_caller and prack_visible and not st.sdp_acked:
                violation = "answer_1xx_not_pracked"
        elif st is None or st.sdp_rseq is None:
            violation = "offer_not_in_reliable_1xx"
        elif prack_visible and not (st.sdp_acked and st.prack_sdp):
            violation = "answer_not_in_prack"
        elif sender_is_caller and prack_visible and not st.prack_2xx:
            violation = "prack_not_answered"
        if not violation:
            return
        prack_based = violation not in ("answer_not_in_reliable_1xx", "offer_not_in_reliable_1xx")
        out.anomaly(
            "update_offer_before_prack",
            Severity.MEDIUM,
            FAMILY,
            call=call,
            lm=ev.lm,
            dialog=dialog,
            side=ev.side,
            confidence=self._confidence(dialog) if prack_based else 1.0,
            violation=violation,
            sender_role=SIDE_NAMES[ev.side],
            invite_had_offer=initial.offer_in == "request",
        )

    # -- helpers ---------------------------------------------------------------------------

    def _confidence(self, dialog: Dialog) -> float:
        return 1.0 if dialog.pracks else self.untraced_confidence

    def _existing(self, dialog: Dialog) -> _Reliable | None:
        if not dialog.ext:
            return None
        st: _Reliable | None = dialog.ext.get(self.ext_key)
        return st

    def _put(self, dialog: Dialog, st: _Reliable) -> None:
        if dialog.ext is None:
            dialog.ext = {}
        dialog.ext[self.ext_key] = st


def _reliable(ev: Event) -> bool:
    req = ev.msg.require
    return req is not None and "100rel" in req and ev.msg.rseq is not None


DETECTOR = PrackDetector
