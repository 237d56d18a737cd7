"""C.10: one session-change record per mid-dialog INVITE, UPDATE and PRACK, and their outcomes.

Owns PROTOCOL.md C.10 (RFC 3261 §12.2, §14; RFC 3311 §5; RFC 6141 §3-§4; RFC 5057) and the
anomalies `dialog_continued_after_fatal`, `dialog_ended_after_nonfatal`,
`error_after_executed_change`, `no_resync_after_error`, `target_refresh_rejected`.

Records: every INVITE, UPDATE or PRACK request carrying a To-tag (never the initial INVITE)
yields one `SessionChangeRecord` when its first final response is processed, or, with
status 0 and status_class "no_final", when the call is forgotten without one. Retransmissions
are counted, never recorded again.
- intent: from the SDP the request carried against its sender's last committed SDP (the
  sdp_changes ledger, in-copies only): hold, resume, add_stream, remove_stream,
  address_change, codec_change (the answer changed the chosen codec or the common set, or,
  unanswered, the offer's first codec), preconditions (a=inactive only while resources are
  reserved), in that precedence; else target_refresh when the request's Contact differs from
  the sender's remote target; else no_change (a refresh); no_sdp when the request had no
  SDP; initial when the sender had no committed SDP yet (an early offer/answer via PRACK or
  UPDATE, or a capture that began mid-call). `fields.changes` lists every event found.
- status_class: success (2xx), offer_rejected 488, glare 491, overlap 500, dialog_lost 481,
  timeout 408, method_refused 405/501, cancelled 487, other_3xx/4xx/5xx/6xx, no_final.
- sdp_version_before: the sender's committed o= version when it sent the request;
  sdp_version_after: the o= version of the SDP the request carried (None without SDP).
- fields: inner_update_count (UPDATEs either side started while the re-INVITE was pending),
  changes, target_refresh, response_offer_changes (a re-INVITE without SDP: what the offer in
  the response changed), final_by_proxy, unknown_dialog.
- Contacts are compared as the sender wrote them (the in-copy: a proxy may fix up NATed
  Contacts in its out-copy); the remote targets start from the initial INVITE and the 2xx
  that confirmed the dialog and move on each 2xx or reliable 1xx to a target refresh
  [3261 §12.2; RFC 6141 §4].

Anomalies (severity per the catalogue; C.0 scale where it gives none):
- dialog_continued_after_fatal (low, SHOULD [3261 §12.2.1.2; 3311 §5.3]): after a 481 or 408
  to a re-INVITE/UPDATE on a confirmed dialog, the UAC sends another in-dialog request other
  than BYE/ACK/CANCEL more than `tolerance_s` after the error left the proxy toward it, or
  answers the peer's later request with 2xx. A BYE in between clears it.
- dialog_ended_after_nonfatal (info): a BYE is the next in-dialog request within
  `immediate_bye_s` of a 488/491 (transaction-only errors [RFC 5057]); a UAC's BYE sent
  before the error reached it is a crossing, not a reaction.
- error_after_executed_change (medium, RFC 6141 §3.3): a non-2xx final response (not the
  proxy's) to a re-INVITE after an offer/answer without preconditions completed inside it: an
  answer in a reliable 1xx, in a PRACK, or in the 2xx of an UPDATE sent while it was pending.
- no_resync_after_error (low, RFC 6141 §3.4): after that error, no INVITE or UPDATE with SDP
  from either side within `resync_window_s`, the dialog still alive (a capture that ends
  sooner claims nothing: the timer never fires).
- target_refresh_rejected (info, RFC 6141 §4): a re-INVITE or UPDATE that changed Contact got
  an error with no reliable 1xx before it: the old remote target stays.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.detectors.sdp_changes import (
    INTENT_ORDER,
    LEDGER,
    SdpChange,
    SdpLedger,
    observe,
    reliable_1xx,
    sent_message,
)
from consumers.hashing import blake2b
from consumers.record_ids import record_id
from consumers.records import SessionChangeRecord, Severity
from consumers.sip import SipMessage
from consumers.sip.memo import remember, table
from consumers.tracking.model import CALLEE, CALLER, DIRECTIONS, Call, Dialog, Transaction, other
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Event

METHODS: Final = ("INVITE", "UPDATE", "PRACK")
TX_EXT: Final = "c10_tx"  # call.ext: (from-tag, CSeq, method) -> _TxInfo, until the final response
DIALOG_EXT: Final = "c10"  # dialog.ext: _DialogFacts
FATAL: Final = (481, 408)
NONFATAL: Final = (488, 491)
GONE: Final = (DialogState.MORTAL, DialogState.TERMINATED)
CONFIRMED: Final = (DialogState.MORATORIUM, DialogState.ESTABLISHED)
STATUS_CLASSES: Final = {
    488: "offer_rejected",
    491: "glare",
    500: "overlap",
    481: "dialog_lost",
    408: "timeout",
    405: "method_refused",
    501: "method_refused",
    487: "cancelled",
}


def status_class(status: int) -> str:
    if status == 0:
        return "no_final"
    if 200 <= status < 300:
        return "success"
    return STATUS_CLASSES.get(status) or f"other_{status // 100}xx"


_CONTACT_KEYS: Final[dict[str, tuple[int, str]]] = table()


def _stable_hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode("utf-8", "replace"), digest_size=8).digest())


def contact_key(msg: SipMessage) -> tuple[int, str] | None:
    """(stable hash, text) of the first Contact URI: scheme, user, host, port [3261 §19.1.4].

    A UA writes the same Contact in every request and 2xx of a dialog, and often in every
    call: remembered per header text (`sip.memo`)."""
    values = msg.headers.get("contact")
    if not values:
        return None
    text = values[0] if len(values) == 1 else "\n".join(values)
    found = _CONTACT_KEYS.get(text)
    if found is None:
        found = _contact_key(msg)
        if found is not None:
            remember(_CONTACT_KEYS, text, found)
    return found


def _contact_key(msg: SipMessage) -> tuple[int, str] | None:
    contacts = msg.contact
    if not contacts:
        return None
    uri = contacts[0].uri
    if uri.is_sip:
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        text = f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{port}"
    else:
        text = contacts[0].uri_text
    return _stable_hash(text), text


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _TxInfo:
    """A mid-dialog transaction waiting for its final response."""

    __slots__ = (
        "callee_tag",
        "changes",
        "contact_changed",
        "executed",
        "inner_updates",
        "intent",
        "new_contact",
        "response_changes",
        "tx",
        "unknown_dialog",
        "version_after",
        "version_before",
    )

    def __init__(self, tx: Transaction, callee_tag: str) -> None:
        self.tx = tx
        self.callee_tag = callee_tag
        self.intent = "no_sdp"
        self.changes: tuple[str, ...] = ()
        self.response_changes: tuple[str, ...] = ()
        self.contact_changed = False
        self.new_contact: tuple[int, str] | None = None
        self.inner_updates = 0
        self.executed = ""  # evidence id of the message that completed an offer/answer inside
        self.unknown_dialog = False
        self.version_before: int | None = None
        self.version_after: int | None = None


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _DialogFacts:
    """Per dialog: remote targets and the outcome rules waiting for a next message."""

    __slots__ = ("fatal", "nonfatal", "resync", "targets")

    def __init__(self) -> None:
        self.targets: list[int | None] = [None, None]  # Contact hash per side
        # (UAC side, error evidence id, error sent, error delivered, status)
        self.fatal: tuple[int, str, int, int, int] | None = None
        self.nonfatal: tuple[int, str, int, int, int] | None = None
        # (UAC side, error evidence id, CSeq of the re-INVITE, resynced)
        self.resync: list[Any] | None = None


def _facts(dialog: Dialog) -> _DialogFacts:
    return dialog.ext_for(DIALOG_EXT, _DialogFacts)


def _ledger(dialog: Dialog | None) -> SdpLedger | None:
    if dialog is None or dialog.ext is None:
        return None
    return dialog.ext.get(LEDGER)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SessionChangeDetector(Detector):
    name: ClassVar[str] = "session_changes"
    family: ClassVar[str] = "C.10"
    tolerance_s: ClassVar[float] = 0.1
    immediate_bye_s: ClassVar[float] = 3.0  # a BYE this soon after a 488/491 is a reaction
    resync_window_s: ClassVar[float] = 32.0  # 64*T1 for the resync after an RFC 6141 error

    # -- events ----------------------------------------------------------------------------

    def on_event(self, ev: Event, out: Output) -> None:
        change = observe(ev)
        if ev.retransmission:
            return
        if ev.msg.is_request:
            self._request(ev, change, out)
        else:
            self._response(ev, change, out)

    def _request(self, ev: Event, change: SdpChange | None, out: Output) -> None:
        method = ev.method
        dialog = ev.dialog
        tx = ev.tx
        if (
            method in METHODS
            and ev.msg.to_tag
            and tx is not None
            and not tx.initial
            and tx.request is ev.lm
        ):
            self._open(ev, tx, change, out)
        if dialog is None:
            return
        if change is not None:
            self._executed(ev, dialog, change)
        if method in ("ACK", "CANCEL"):
            return
        if method == "UPDATE":
            for info in self._pending_invites(ev.call, dialog):
                info.inner_updates += 1
        st = dialog.ext.get(DIALOG_EXT) if dialog.ext is not None else None
        if st is None:
            return
        if st.resync is not None and (method == "INVITE" or (method == "UPDATE" and ev.sdp)):
            st.resync[3] = True
        if st.fatal is not None:
            uac, ref, _, t_out, status = st.fatal
            if method == "BYE":
                st.fatal = None
            elif (
                ev.side == uac
                and ev.state_before not in GONE
                and ev.t > t_out + self.tolerance_s * 1e6
            ):
                st.fatal = None
                self._continued(ev, dialog, ref, status, uac, out)
        if st.nonfatal is not None:
            uac, ref, t_sent, t_out, status = st.nonfatal
            st.nonfatal = None
            if method == "BYE":
                tol = self.tolerance_s * 1e6
                since = t_out if ev.side == uac else t_sent
                if since - tol <= ev.t <= since + self.immediate_bye_s * 1e6 + tol:
                    out.anomaly(
                        "dialog_ended_after_nonfatal",
                        Severity.INFO,
                        self.family,
                        call=ev.call,
                        lm=ev.lm,
                        dialog=dialog,
                        side=ev.side,
                        evidence=[ref, ev.lm.ref],
                        error_status=status,
                        ms_after_error=round((ev.t - since) / 1000, 3),
                        bye_by="uac" if ev.side == uac else "uas",
                    )

    def _response(self, ev: Event, change: SdpChange | None, out: Output) -> None:
        dialog = ev.dialog
        tx = ev.tx
        status = ev.status
        if dialog is not None and change is not None:
            self._executed(ev, dialog, change)
        if dialog is not None and tx is not None and tx.initial and 200 <= status < 300:
            self._init_targets(ev, dialog)
        if tx is None or status < 101:
            return
        infos = ev.call.ext.get(TX_EXT) if ev.call.ext else None
        key = (ev.msg.from_tag or "", tx.cseq, tx.method)
        info = infos.get(key) if infos else None
        if info is not None and change is not None and change.side != tx.side:
            if change.role == "offer":
                info.response_changes = tuple(k for k, _ in change.changes)
            elif change.role == "answer" and change.offer is not None and change.offer.tx is tx:
                # Answered: what the answer chose decides a codec change, not the offer list.
                kept = tuple(k for k in info.changes if k != "codec_change")
                info.changes = (*kept, "codec_change") if change.negotiated_changed else kept
        accepted = 200 <= status < 300 or (status < 200 and reliable_1xx(ev.msg))
        if dialog is not None and info is not None and tx.method != "PRACK" and accepted:
            self._move_targets(ev, dialog, info)
        if dialog is not None and dialog.ext is not None and 200 <= status < 300:
            st = dialog.ext.get(DIALOG_EXT)
            if st is not None and st.fatal is not None:
                uac, ref, t_sent, _, fstatus = st.fatal
                if (
                    ev.side == uac
                    and tx.side != uac
                    and tx.method not in ("BYE", "CANCEL")
                    and tx.request_ts > t_sent
                    and ev.state_before not in GONE
                ):
                    st.fatal = None
                    self._continued(ev, dialog, ref, fstatus, uac, out)
        if status < 200 or info is None:
            return
        assert infos is not None
        del infos[key]
        if not infos:
            ev.call.ext.pop(TX_EXT, None)  # type: ignore[union-attr]
        self._emit(ev.call, info, ev.lm, ev.t, out)
        if dialog is not None:
            self._outcome(ev, dialog, info, out)

    # -- transactions ----------------------------------------------------------------------

    def _open(self, ev: Event, tx: Transaction, change: SdpChange | None, out: Output) -> None:
        call = ev.call
        dialog = ev.dialog
        msg = ev.msg
        callee_tag = (msg.to_tag if ev.side == CALLER else msg.from_tag) or ""
        info = _TxInfo(tx, callee_tag)
        info.unknown_dialog = ev.unknown_dialog
        led = _ledger(dialog)
        committed = led.committed[ev.side] if led is not None else None
        if change is not None:
            before = change.before
            info.version_before = before.version if before is not None else None
            info.version_after = change.facts.version
            info.changes = tuple(k for k, _ in change.changes)
            info.intent = "initial" if before is None else "no_change"
        elif committed is not None:
            info.version_before = committed.version
        if dialog is not None and ev.method != "PRACK":
            key = contact_key(sent_message(ev.lm))
            if key is not None:
                known = _facts(dialog).targets[ev.side]
                info.new_contact = key
                info.contact_changed = known is not None and known != key[0]
        if info.contact_changed and info.intent in ("no_change", "no_sdp"):
            info.intent = "target_refresh"
        if tx.completed and tx.final is not None:
            self._emit(call, info, tx.final, tx.final_ts, out)  # its final was processed first
            return
        call.ext_for(TX_EXT, dict)[(msg.from_tag or "", tx.cseq, tx.method)] = info

    def _pending_invites(self, call: Call, dialog: Dialog) -> list[_TxInfo]:
        infos = call.ext.get(TX_EXT) if call.ext else None
        if not infos:
            return []
        return [
            i
            for i in infos.values()
            if i.tx.method == "INVITE" and i.callee_tag == dialog.callee_tag and not i.tx.completed
        ]

    def _executed(self, ev: Event, dialog: Dialog, change: SdpChange) -> None:
        """An offer/answer completed inside a pending re-INVITE [RFC 6141 §3.3]."""
        if change.role != "answer" or change.offer is None:
            return
        if change.facts.preconditions or change.offer.sent.preconditions:
            return
        for info in self._pending_invites(ev.call, dialog):
            if ev.tx is info.tx and ev.msg.is_response and ev.status >= 200:
                continue  # the re-INVITE's own final answer: the normal completion
            if not info.executed:
                info.executed = ev.lm.ref

    def _emit(
        self, call: Call, info: _TxInfo, final: LogicalMessage | None, t: int, out: Output
    ) -> None:
        tx = info.tx
        side = tx.side
        dialog = call.dialogs.get(info.callee_tag)
        status = tx.final_status if final is not None else 0
        evidence = [tx.request.ref] if tx.request is not None else []
        if info.executed:
            evidence.append(info.executed)
        if final is not None:
            evidence.append(final.ref)

        def ua(s: int) -> str:
            if dialog is not None and dialog.ua[s]:
                return dialog.ua[s]
            return call.ua[s]

        intent = next((k for k in INTENT_ORDER if k in info.changes), info.intent)
        out.emit(
            SessionChangeRecord(
                id=record_id(
                    call.call_id, call.caller_tag, info.callee_tag, tx.method, tx.cseq, side
                ),
                event_time_us=tx.request_ts,
                node=call.node,
                call_id=call.call_id,
                caller_tag=call.caller_tag,
                callee_tag=info.callee_tag,
                method=tx.method,
                cseq=tx.cseq,
                direction=DIRECTIONS[side],
                dialog_state=tx.state_at_send.value,
                status=status,
                status_class=status_class(status),
                time_to_final_ms=round((t - tx.request_ts) / 1000, 3)
                if final is not None
                else None,
                intent=intent,
                offer_in=tx.offer_in or "none",
                sdp_version_before=info.version_before,
                sdp_version_after=info.version_after,
                had_reliable_1xx=tx.reliable_1xx,
                retransmissions=tx.retransmissions,
                ua_sender=ua(side),
                ua_peer=ua(other(side)),
                evidence=evidence,
                fields={
                    "inner_update_count": info.inner_updates,
                    "changes": list(info.changes),
                    "target_refresh": info.contact_changed,
                    "response_offer_changes": list(info.response_changes),
                    "final_by_proxy": final is not None and final.origin == "proxy",
                    "unknown_dialog": info.unknown_dialog,
                },
            )
        )

    def _outcome(self, ev: Event, dialog: Dialog, info: _TxInfo, out: Output) -> None:
        tx = info.tx
        status = ev.status
        method = tx.method
        if method == "PRACK" or status < 300:
            return
        st = _facts(dialog)
        uac = tx.side
        if status in FATAL and tx.state_at_send in CONFIRMED:
            st.fatal = (uac, ev.lm.ref, ev.t, ev.t_out, status)
        elif status in NONFATAL:
            st.nonfatal = (uac, ev.lm.ref, ev.t, ev.t_out, status)
        if info.contact_changed and not tx.reliable_1xx:
            out.anomaly(
                "target_refresh_rejected",
                Severity.INFO,
                self.family,
                call=ev.call,
                lm=ev.lm,
                dialog=dialog,
                side=uac,
                evidence=[tx.request.ref if tx.request else "", ev.lm.ref],
                new_contact=info.new_contact[1] if info.new_contact else "",
                status_class=status_class(status),
            )
        if method == "INVITE" and info.executed and not ev.proxy_generated:
            out.anomaly(
                "error_after_executed_change",
                Severity.MEDIUM,
                self.family,
                call=ev.call,
                lm=ev.lm,
                dialog=dialog,
                side=other(uac),
                evidence=[tx.request.ref if tx.request else "", info.executed, ev.lm.ref],
                intent=info.intent,
                status=status,
                status_class=status_class(status),
                executed_by=info.executed,
                had_reliable_1xx=tx.reliable_1xx,
                inner_update_count=info.inner_updates,
            )
            st.resync = [uac, ev.lm.ref, tx.cseq, False]
            due = ev.t + int(self.resync_window_s * 1e6)
            out.schedule(due, ev.call, "resync", (dialog.callee_tag, tx.cseq))

    def _continued(
        self, ev: Event, dialog: Dialog, ref: str, status: int, uac: int, out: Output
    ) -> None:
        out.anomaly(
            "dialog_continued_after_fatal",
            Severity.LOW,
            self.family,
            call=ev.call,
            lm=ev.lm,
            dialog=dialog,
            side=uac,
            evidence=[ref, ev.lm.ref],
            fatal_status=status,
            continued_with=ev.method if ev.msg.is_request else f"{ev.status}/{ev.method}",
        )

    # -- remote targets --------------------------------------------------------------------

    def _init_targets(self, ev: Event, dialog: Dialog) -> None:
        """Targets when the dialog is confirmed: the INVITE's and the 2xx's Contacts."""
        st = _facts(dialog)
        if st.targets[CALLEE] is None:
            key = contact_key(sent_message(ev.lm))
            st.targets[CALLEE] = key[0] if key else None
        request = ev.tx.request if ev.tx is not None else None
        if st.targets[CALLER] is None and request is not None:
            key = contact_key(sent_message(request))
            st.targets[CALLER] = key[0] if key else None

    def _move_targets(self, ev: Event, dialog: Dialog, info: _TxInfo) -> None:
        """A 2xx or reliable 1xx to a target refresh moves both targets [RFC 6141 §4]."""
        st = _facts(dialog)
        if info.new_contact is not None:
            st.targets[info.tx.side] = info.new_contact[0]
        key = contact_key(sent_message(ev.lm))
        if key is not None:
            st.targets[ev.side] = key[0]

    # -- timers and the end ----------------------------------------------------------------

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        if key != "resync":
            return
        callee_tag, cseq = data
        dialog = call.dialogs.get(callee_tag)
        st = dialog.ext.get(DIALOG_EXT) if dialog is not None and dialog.ext else None
        if dialog is None or st is None or st.resync is None or st.resync[2] != cseq:
            return
        uac, ref, _, resynced = st.resync
        st.resync = None
        if resynced or dialog.state in GONE or dialog.bye_ts:
            return
        out.anomaly(
            "no_resync_after_error",
            Severity.LOW,
            self.family,
            call=call,
            lm=None,
            dialog=dialog,
            side=uac,
            evidence=[ref],
            state=dialog.state.value,
            window_s=self.resync_window_s,
            reinvite_cseq=cseq,
        )

    def on_call_end(self, call: Call, out: Output) -> None:
        infos = call.ext.get(TX_EXT) if call.ext else None
        if not infos:
            return
        for info in list(infos.values()):
            self._emit(call, info, None, 0, out)
        infos.clear()


DETECTOR = SessionChangeDetector

__all__ = ["DETECTOR", "SessionChangeDetector", "contact_key", "status_class"]
