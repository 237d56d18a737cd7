"""Calls, dialogs and transactions from logical messages, with bounded memory.

`Tracker.process(lm, t)` applies one logical message (already deduplicated, released in
event-time order) and returns the `Event` the detectors see: the message with its call,
dialog and transaction, the sender side, whether it is a retransmission, who generated it,
the dialog state before it, and its offer/answer role.

Rules (RFC sections as cited; PROTOCOL.md B.2 to B.4, C.0):
- Calls are keyed by Call-ID (byte-exact [3261 §8.1.1.4]); the caller tag is the From-tag of
  the initial INVITE (no To-tag). If the initial INVITE was not captured, the first request's
  sender is taken as caller and `owner_known` stays False (C.0 rule 6).
- Transactions are keyed by (From-tag of the request, CSeq number, CSeq method); the ACK
  belongs to the INVITE with its CSeq number [§17.1.1.3, §13.2.2.4]; a request seen again
  for a live transaction is a retransmission [§17], as is a final response repeated with the
  same status and To-tag (2xx retransmissions are counted for C.7).
- Dialogs: created per To-tag by a tagged 101-199 (early) or a 2xx (confirmed) to the
  initial INVITE [§12.1, §13.2.2]; a non-2xx final response ends every early one [§12.3];
  the state table is `states.TRANSITIONS`.
- Offer/answer [3264 §4; 3261 §13.2.1; 3262 §5; 3311 §5.1]: a session SDP when no offer is
  pending is an offer; from the other side while one is pending it is the answer (committed
  per side); the same answer repeated in later responses of the transaction is a repeat; a
  non-2xx final response to the offering transaction rolls the offer back.
- Memory: at most `max_calls` calls. Ended calls linger 64*T1 for late copies, then go;
  idle attempts and idle dialogs time out; past the cap, ended calls are evicted first,
  then call attempts, established calls last (oldest activity first). Every removal is
  counted by reason and reported as a dialog record.
- Frozen calls: an established call whose transactions are all over (64*T1 after their last
  message) is kept as one small blob (`freezer`) in `calls` and thawed, exactly as it was,
  when its next message arrives, a timer fires for it (`get`) or it is removed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import ORIGIN_PROXY, LogicalMessage
from consumers.sip import SipMessage
from consumers.sip.memo import remember, table
from consumers.tracking.freezer import Freezer, dialog_count, last_ts, release
from consumers.tracking.model import (
    CALLEE,
    CALLER,
    DIRECTIONS,
    Call,
    Dialog,
    SdpSummary,
    Transaction,
    other,
)
from consumers.tracking.sdpsummary import session_sdp
from consumers.tracking.states import DialogEvent, DialogState, next_state
from consumers.value import Value

ATTEMPT: Final = "attempt"
ESTABLISHED: Final = "established"
ENDED: Final = "ended"
LIVE_STATES: Final = (DialogState.MORATORIUM, DialogState.ESTABLISHED, DialogState.MORTAL)
# Members read per message, as module constants (an enum class attribute is a slow lookup).
_PRE, _EARLY, _TERMINATED = DialogState.PRE, DialogState.EARLY, DialogState.TERMINATED
_STATE_TEXT: Final = {state: state.value for state in DialogState}


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class TrackerConfig(Value):
    FIELDS = (
        "max_calls",
        "t1_ms",
        "attempt_idle_s",
        "dialog_idle_s",
        "proxy_ips",
        "freeze_idle",
        "freeze_above",
    )

    def __init__(
        self,
        max_calls: int = 1_000_000,
        t1_ms: int = 500,
        attempt_idle_s: float = 300.0,
        dialog_idle_s: float = 3 * 3600.0,
        proxy_ips: set[str] | None = None,
        freeze_idle: bool = True,
        freeze_above: int = 0,
    ) -> None:
        self.max_calls = max_calls
        self.t1_ms = t1_ms
        self.attempt_idle_s = attempt_idle_s  # a call attempt with no message for this long
        self.dialog_idle_s = dialog_idle_s  # an established call with no message for this long
        self.proxy_ips: set[str] = set() if proxy_ips is None else proxy_ips
        self.freeze_idle = freeze_idle  # keep idle established calls as blobs (see freezer.py)
        # ... but only while more calls than this are held. Freezing and thawing a call cost
        # ~0.3 ms of CPU to save ~5 KB; `hepwatch analyze` holds a few thousand calls' worth
        # unfrozen. Bounded: a call that escapes freezing was counted when it did, so at
        # most `freeze_above` of them are alive at any time.
        self.freeze_above = freeze_above

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.freeze_above = 0  # a checkpoint from before the setting
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def linger_us(self) -> int:
        return 64 * self.t1_ms * 1000

    @property
    def freeze_delay_us(self) -> int:
        """How long after its transactions are dropped an idle call is frozen: detector
        timers set at 64*T1 plus a tolerance from its last message fire first, so freezing
        does not wake it again at once."""
        return 4 * self.t1_ms * 1000


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Event:
    """One logical message applied to the state, as the detectors see it."""

    __slots__ = (
        "ack_for",
        "call",
        "cseq",
        "dialog",
        "is_request",
        "lm",
        "method",
        "msg",
        "new_dialog",
        "offer_tx",
        "proxy_generated",
        "retransmission",
        "sdp",
        "sdp_prev",
        "sdp_role",
        "side",
        "state_before",
        "status",
        "t",
        "t_out",
        "tx",
        "unknown_dialog",
    )

    def __init__(
        self,
        lm: LogicalMessage,
        t: int,
        t_out: int,
        call: Call,
        side: int,
        method: str,
        cseq: int,
        status: int,
    ) -> None:
        self.lm = lm
        self.msg: SipMessage = lm.msg
        # Read by several detectors per message: plain values, not derived on each read.
        self.is_request: bool = self.msg.is_request
        self.method = method  # the request method, or the CSeq method of a response
        self.cseq = cseq  # CSeq number
        self.status = status  # 0 for requests
        self.t = t  # when the sender sent it (in-copy time)
        self.t_out = t_out  # when the proxy passed it on (out-copy time)
        self.call = call
        self.side = side  # the side that sent this message (CALLER or CALLEE)
        self.dialog: Dialog | None = None
        self.tx: Transaction | None = None
        self.retransmission = False
        self.proxy_generated = lm.origin == ORIGIN_PROXY
        self.state_before = _PRE
        self.new_dialog = False
        self.unknown_dialog = False  # in-dialog request whose To-tag matches no dialog
        self.ack_for: Transaction | None = None  # ACK: the INVITE it acknowledges
        self.sdp: SdpSummary | None = None
        self.sdp_prev: SdpSummary | None = None  # the sender's last committed SDP
        self.sdp_role = ""  # offer, answer, repeat, ""
        self.offer_tx: Transaction | None = None  # answer: the transaction of the offer

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.side]

    @property
    def state(self) -> DialogState:
        return self.dialog.state if self.dialog is not None else DialogState.PRE

    def __repr__(self) -> str:
        return f"<Event {self.msg.start_line!r} side={self.side} state={self.state_before}>"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Tracker:
    def __init__(
        self,
        config: TrackerConfig | None = None,
        proxy_ips: Callable[[str], set[str]] | None = None,
    ) -> None:
        self.config = config or TrackerConfig()
        self.calls: dict[str, Call | bytes] = {}  # bytes: a frozen call
        self._classes: dict[str, OrderedDict[str, Call | bytes]] = {
            ENDED: OrderedDict(),
            ATTEMPT: OrderedDict(),
            ESTABLISHED: OrderedDict(),
        }
        self._proxy_ips = proxy_ips
        self._compact_queue: deque[tuple[int, Call]] = deque()
        self._freeze_queue: deque[tuple[int, Call]] = deque()
        self.removed: dict[str, int] = {}  # reason -> calls removed
        self.evicted: dict[str, int] = {}  # eviction class -> calls evicted over the cap
        self.freezer = Freezer()
        self._now = 0  # latest stream time seen by expire()

    # -- public ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.calls)

    def live_dialogs(self) -> int:
        return sum(
            (dialog_count(c) if isinstance(c, bytes) else len(c.dialogs)) or 1
            for c in self.calls.values()
        )

    def get(self, call_id: str) -> Call | None:
        """The call with this Call-ID, thawed if it was frozen."""
        call = self.calls.get(call_id)
        if type(call) is bytes:
            return self._thaw(call_id, call)
        return call  # type: ignore[return-value]

    def process(self, lm: LogicalMessage, t: int, t_out: int) -> Event | None:
        msg = lm.msg
        call_id = msg.call_id
        cseq = msg.cseq
        if not call_id or cseq is None or not (msg.is_request or msg.is_response):
            return None
        from_tag = msg.from_tag or ""
        to_tag = msg.to_tag or ""
        found = self.calls.get(call_id)
        call: Call
        if found is None:
            first = lm.observations[0]
            call = Call(call_id, first.node, first.capture_id, from_tag, t)
            self.calls[call_id] = call
        elif isinstance(found, bytes):
            call = self._thaw(call_id, found)
        else:
            call = found
        if t > call.last_ts:
            call.last_ts = t
        if msg.is_request:
            ev = self._request(lm, msg, call, cseq.number, cseq.method, from_tag, to_tag, t, t_out)
        else:
            ev = self._response(lm, msg, call, cseq.number, cseq.method, from_tag, to_tag, t, t_out)
        headers = msg.headers
        if "x-cid" in headers or "session-id" in headers or "p-charging-vector" in headers:
            self._correlation(call, msg, lm)
        elif not call.correlation_id:  # what _correlation does for the many without them
            call.correlation_id = lm.observations[0].correlation_id
        dialog = ev.dialog
        if dialog is not None and t > dialog.last_ts:
            dialog.last_ts = t
        lm.state_at = _STATE_TEXT[ev.state_before]
        lm.direction = DIRECTIONS[ev.side]
        lm.retransmission = ev.retransmission
        lm.sdp_role = ev.sdp_role
        self._classify(call)
        self._compact_queue.append((t + 64_000 * self.config.t1_ms, call))  # linger_us
        return ev

    def expire(self, now_us: int, out: list[Call]) -> None:
        """Remove ended calls past their linger and idle ones; append them to `out`."""
        cfg = self.config
        limits = (
            (ENDED, cfg.linger_us, "ended"),
            (ATTEMPT, int(cfg.attempt_idle_s * 1e6), "idle"),
            (ESTABLISHED, int(cfg.dialog_idle_s * 1e6), "idle"),
        )
        if now_us > self._now:
            self._now = now_us
        for klass, age_us, reason in limits:
            calls = self._classes[klass]
            while calls:
                value = next(iter(calls.values()))
                if type(value) is bytes:
                    ref = last_ts(value)
                else:
                    ref = value.end_ts if klass == ENDED else value.last_ts  # type: ignore[union-attr]
                if ref + age_us > now_us:
                    break
                call = self._hydrated(value)
                self._remove(call, reason)
                out.append(call)
        self._compact(now_us)
        while len(self.calls) > self.config.max_calls:
            for klass in (ENDED, ATTEMPT, ESTABLISHED):
                calls = self._classes[klass]
                if calls:
                    call = self._hydrated(next(iter(calls.values())))
                    self._remove(call, "evicted")
                    self.evicted[klass] = self.evicted.get(klass, 0) + 1
                    out.append(call)
                    break

    def _compact(self, now_us: int) -> None:
        """Drop what a quiet call no longer needs: transactions completed more than 64*T1
        ago (their retransmissions and ACKs are over) and the messages they held."""
        linger = self.config.linger_us
        queue = self._compact_queue
        while queue and queue[0][0] <= now_us:
            _, call = queue.popleft()
            cid = call.call_id
            if cid is None or self.calls.get(cid) is not call or call.last_ts + linger > now_us:
                continue  # released, gone or frozen, or active again (a later entry is queued)
            keep: dict[tuple[str, int, str], Transaction] = {}
            for key, tx in call.transactions.items():
                done_ts = max(tx.final_last_ts, tx.ack_ts)
                if tx.final_status < 200 or done_ts + linger > now_us:
                    keep[key] = tx
                    continue
                tx.request = tx.final = tx.ack = None
                tx.provisional = []
                for dialog in call.dialogs.values():
                    if dialog.pending_invite[tx.side] is tx:
                        dialog.pending_invite[tx.side] = None
                    if dialog.pending_update[tx.side] is tx:
                        dialog.pending_update[tx.side] = None
            call.transactions = keep
            if call.ext is not None and not any(d.offer for d in call.dialogs.values()):
                call.ext.pop("initial_offer", None)
                call.ext.pop("offer_sdp", None)
            if (
                not keep
                and call.klass == ESTABLISHED
                and self.config.freeze_idle
                and len(self.calls) > self.config.freeze_above
            ):
                self._freeze_queue.append((now_us + self.config.freeze_delay_us, call))
        self._freeze(now_us)

    def _freeze(self, now_us: int) -> None:
        """Freeze the established calls still idle since they were compacted."""
        idle_us = self.config.linger_us + self.config.freeze_delay_us
        queue = self._freeze_queue
        while queue and queue[0][0] <= now_us:
            _, call = queue.popleft()
            cid = call.call_id
            if (
                cid is None
                or self.calls.get(cid) is not call
                or call.last_ts + idle_us > now_us
                or call.transactions
                or call.klass != ESTABLISHED
            ):
                continue
            blob = self.freezer.freeze(call)
            self.calls[cid] = blob
            self._classes[ESTABLISHED][cid] = blob  # keeps its place in the idle order
            release(call)

    def _thaw(self, call_id: str, blob: bytes) -> Call:
        call = self.freezer.thaw(blob)
        self.calls[call_id] = call
        self._classes[call.klass][call_id] = call  # keeps its place in the idle order
        # Frozen again once quiet for 64*T1 (a timer may have been all that woke it).
        self._compact_queue.append((max(self._now, call.last_ts) + self.config.linger_us, call))
        return call

    def _hydrated(self, value: Call | bytes) -> Call:
        """A call about to be removed, thawed if frozen (not registered again)."""
        return self.freezer.thaw(value) if type(value) is bytes else value  # type: ignore[arg-type, return-value]

    def drain(self) -> Iterator[Call]:
        """Remove and yield every call (end of input), thawing frozen ones one at a time."""
        for call_id in list(self.calls):
            value = self.calls.get(call_id)
            if value is None:
                continue
            call = self._hydrated(value)
            self._remove(call, "capture_end")
            yield call

    # -- requests --------------------------------------------------------------------------

    def _request(
        self,
        lm: LogicalMessage,
        msg: SipMessage,
        call: Call,
        num: int,
        cseq_method: str,
        from_tag: str,
        to_tag: str,
        t: int,
        t_out: int,
    ) -> Event:
        method = msg.method or ""
        initial = method == "INVITE" and not to_tag
        if initial and from_tag != call.caller_tag and not call.owner_known and not call.dialogs:
            call.caller_tag = from_tag  # the first message seen was not from the caller
        if initial and from_tag == call.caller_tag:
            call.owner_known = True
        side = CALLER if from_tag == call.caller_tag else CALLEE
        ev = Event(lm, t, t_out, call, side, method, num, 0)
        callee_tag = to_tag if side == CALLER else from_tag
        dialog = call.dialogs.get(callee_tag) if to_tag else None
        if to_tag and dialog is None:
            if call.owner_known:
                ev.unknown_dialog = True
            else:
                # Capture started mid-call: assume the dialog is established.
                dialog = Dialog(call, callee_tag, t)
                dialog.state = DialogState.ESTABLISHED
                dialog.confirmed_ts = t
                call.dialogs[callee_tag] = dialog
                ev.new_dialog = True
        if dialog is not None:
            ev.dialog = dialog
            ev.state_before = dialog.state
            if dialog.ua[side] == "":
                dialog.ua[side] = msg.user_agent or ""
        if not (call.ua[side] and call.addr[side]):
            self._remember_side(call, side, msg, lm)

        if method == "ACK":
            self._ack(ev, call, dialog, from_tag, num, t)
            return ev
        key = (from_tag, num, cseq_method)
        tx = call.transactions.get(key)
        if tx is not None and tx.request is not None:
            tx.retransmissions += 1
            ev.tx = tx
            ev.retransmission = True
            return ev
        if tx is None:
            tx = Transaction(call, cseq_method, num, side)
            call.transactions[key] = tx
        tx.request = lm
        tx.request_ts = t
        tx.branch = msg.top_via_branch or ""
        tx.dialog = dialog
        tx.state_at_send = ev.state_before
        tx.initial = initial
        ev.tx = tx
        if initial:
            call.initial = tx
        if dialog is not None:
            self._in_dialog_request(dialog, tx, method, side, num, t)
        if method == "CANCEL":
            invite = call.transactions.get((from_tag, num, "INVITE"))
            if invite is not None and not invite.cancel_ts:
                invite.cancel_ts = t
        self._offer_answer(ev, dialog, tx)
        return ev

    def _in_dialog_request(
        self, dialog: Dialog, tx: Transaction, method: str, side: int, num: int, t: int
    ) -> None:
        last = dialog.cseq[side]
        if last is None or num > last:
            dialog.cseq[side] = num
        if method == "INVITE":
            dialog.reinvites += 1
            dialog.pending_invite[side] = tx
        elif method == "UPDATE":
            dialog.updates += 1
            dialog.pending_update[side] = tx
        elif method == "PRACK":
            dialog.pracks += 1
        elif method == "BYE":
            if not dialog.bye_ts:
                dialog.bye_ts = t
                dialog.bye_side = side
            dialog.state = next_state(dialog.state, DialogEvent.BYE)

    def _ack(
        self,
        ev: Event,
        call: Call,
        dialog: Dialog | None,
        from_tag: str,
        num: int,
        t: int,
    ) -> None:
        invite = call.transactions.get((from_tag, num, "INVITE"))
        ev.ack_for = invite
        ev.tx = invite
        if invite is None:
            return
        if invite.final_status >= 300 or not ev.msg.to_tag:
            # The hop-by-hop ACK of a non-2xx final response [§17.1.1.3].
            ev.retransmission = invite.ack is not None
            if invite.ack is None:
                invite.ack = ev.lm
                invite.ack_ts = t
            return
        if dialog is not None and invite.initial:
            ev.retransmission = dialog.acked
            dialog.acked = True
            dialog.state = next_state(dialog.state, DialogEvent.ACK)
        else:
            ev.retransmission = invite.ack is not None
        if invite.ack is None:
            invite.ack = ev.lm
            invite.ack_ts = t
        if dialog is not None and not ev.retransmission:
            self._offer_answer(ev, dialog, invite)

    # -- responses -------------------------------------------------------------------------

    def _response(
        self,
        lm: LogicalMessage,
        msg: SipMessage,
        call: Call,
        num: int,
        cseq_method: str,
        from_tag: str,
        to_tag: str,
        t: int,
        t_out: int,
    ) -> Event:
        req_side = CALLER if from_tag == call.caller_tag else CALLEE
        side = 1 - req_side
        status = msg.status_code or 0
        ev = Event(lm, t, t_out, call, side, cseq_method, num, status)
        key = (from_tag, num, cseq_method)
        tx = call.transactions.get(key)
        if tx is None:
            tx = Transaction(call, cseq_method, num, req_side)
            tx.initial = cseq_method == "INVITE" and call.initial is None and not call.dialogs
            if tx.initial:
                call.initial = tx
            call.transactions[key] = tx
        ev.tx = tx
        callee_tag = to_tag if req_side == CALLER else from_tag
        dialog = call.dialogs.get(callee_tag) if callee_tag else None
        if dialog is not None:
            ev.state_before = dialog.state
        if not (call.ua[side] and call.addr[side]):
            self._remember_side(call, side, msg, lm)

        if tx.initial and to_tag and 101 <= status < 300:
            if dialog is None:
                dialog = Dialog(call, callee_tag, tx.request_ts or t)
                call.dialogs[callee_tag] = dialog
                ev.new_dialog = True
                ev.state_before = _PRE
                if tx.offer_in == "request":
                    dialog.offer = tx
            if status < 200:
                dialog.state = next_state(dialog.state, DialogEvent.PROVISIONAL)
                if not dialog.early_ts:
                    dialog.early_ts = t
                if _reliable(msg):
                    dialog.reliable = True
            else:
                if dialog.count_2xx:
                    ev.retransmission = True
                else:
                    dialog.first_2xx_ts = t
                    dialog.confirmed_ts = t
                    dialog.reliable = True
                dialog.count_2xx += 1
                dialog.last_2xx_ts = t
                dialog.state = next_state(dialog.state, DialogEvent.SUCCESS)
            if call.record_routed is None or ev.new_dialog:
                call.record_routed = self._record_routed(call, msg)
        ev.dialog = dialog
        if dialog is not None and dialog.ua[side] == "":
            dialog.ua[side] = msg.server or msg.user_agent or ""

        if status >= 200:
            if tx.final_status == 0:
                tx.final = lm
                tx.final_status = status
                tx.final_ts = t
                tx.final_last_ts = t
                tx.final_count = 1
                if tx.initial:
                    call.initial_status = status
                    if status >= 300:
                        self._initial_failed(call, t)
                elif dialog is not None and cseq_method == "BYE":
                    dialog.state = next_state(dialog.state, DialogEvent.BYE_FINAL)
                    dialog.end_ts = t
            elif tx.final_status == status and (
                not tx.initial or tx.final is None or (tx.final.msg.to_tag or "") == to_tag
            ):
                tx.final_count += 1
                tx.final_last_ts = t
                ev.retransmission = True
            if (
                not ev.retransmission
                and status >= 300
                and dialog is not None
                and dialog.offer is tx
            ):
                dialog.offer = None  # the offer was rejected: nothing changes [3264 §4]
        elif status > 100:
            raw = msg.raw
            for p in tx.provisional:
                if p.msg.raw == raw:
                    ev.retransmission = True
                    break
            else:
                if len(tx.provisional) < 8:
                    tx.provisional.append(lm)
            if _reliable(msg):
                tx.reliable_1xx = True
        if not ev.retransmission and status > 100:
            self._offer_answer(ev, dialog, tx)
        return ev

    def _initial_failed(self, call: Call, t: int) -> None:
        for dialog in call.dialogs.values():
            if dialog.state in (_PRE, _EARLY):
                dialog.state = next_state(dialog.state, DialogEvent.FAILURE)
                dialog.end_ts = t

    # -- offer/answer ----------------------------------------------------------------------

    def _offer_answer(self, ev: Event, dialog: Dialog | None, tx: Transaction) -> None:
        if not ev.msg.body:
            return  # most messages: no session description to look for
        sdp = session_sdp(ev.msg)
        if sdp is None:
            return
        ev.sdp = sdp
        side = ev.side
        if dialog is None:
            # Pre-dialog: only the initial INVITE's offer; answers land on dialogs.
            if ev.msg.is_request and tx.initial:
                ev.sdp_role = "offer"
                tx.offer_in = "request"
                tx.call.ext_for("initial_offer", dict)[tx.cseq] = sdp
            return
        ev.sdp_prev = dialog.sdp[side]
        pending = dialog.offer
        if pending is None:
            if ev.msg.is_response and tx.offer_in == "request" and tx.answered:
                ev.sdp_role = "repeat"  # the answer again in a later response [3261 §13.2.1]
            elif (ev.msg.is_response and tx.offer_in == "response") or (
                ev.msg.is_request and ev.msg.method == "ACK" and tx.answered
            ):
                ev.sdp_role = "repeat"
            else:
                ev.sdp_role = "offer"
                dialog.offer = tx
                tx.offer_in = "request" if ev.msg.is_request else "response"
                tx.call.ext_for("offer_sdp", dict)[dialog.callee_tag] = sdp
            return
        offerer = pending.side if pending.offer_in == "request" else other(pending.side)
        if side != offerer and ev.msg.is_request and ev.msg.method not in ("ACK", "PRACK"):
            # A new INVITE/UPDATE carries an offer, never an answer [3261 §13.2.1; 3311 §5.1]:
            # the peer's offer crossed this one (glare [3264 §4]); the later one is pending.
            ev.sdp_role = "offer"
            dialog.offer = tx
            tx.offer_in = "request"
            tx.call.ext_for("offer_sdp", dict)[dialog.callee_tag] = sdp
        elif side != offerer:
            ev.sdp_role = "answer"
            ev.offer_tx = pending
            pending.answered = True
            dialog.offer = None
            offers = tx.call.ext or {}
            offer_sdp = offers.get("offer_sdp", {}).pop(dialog.callee_tag, None)
            if offer_sdp is None and pending.initial:
                offer_sdp = offers.get("initial_offer", {}).get(pending.cseq)
            if offer_sdp is not None:
                dialog.sdp[offerer] = offer_sdp
            dialog.sdp[side] = sdp
        elif pending is tx:
            ev.sdp_role = "repeat"
        else:
            ev.sdp_role = "offer"  # a new offer while its own is unanswered [3264 §4]
            dialog.offer = tx
            tx.offer_in = "request" if ev.msg.is_request else "response"
            tx.call.ext_for("offer_sdp", dict)[dialog.callee_tag] = sdp

    # -- side facts, correlation, record-route ---------------------------------------------

    def _remember_side(self, call: Call, side: int, msg: SipMessage, lm: LogicalMessage) -> None:
        if lm.origin == ORIGIN_PROXY:
            return  # the proxy's own 100/408/487 say nothing about the endpoint
        if not call.ua[side]:
            call.ua[side] = (msg.user_agent if msg.is_request else msg.server) or (
                msg.user_agent or ""
            )
        if not call.addr[side]:
            call.addr[side] = lm.first.src_ip

    def _correlation(self, call: Call, msg: SipMessage, lm: LogicalMessage) -> None:
        # Most messages carry none of these headers: test the (normalised) names first.
        headers = msg.headers
        if not call.x_cid and "x-cid" in headers:
            call.x_cid = msg.x_cid or ""
        if not call.session_id_pair and "session-id" in headers:
            sid = msg.session_id
            if sid is not None:
                pair = sorted(u for u in (sid.local, sid.remote) if u and set(u) != {"0"})
                call.session_id_pair = ",".join(pair)
        if not call.icid and "p-charging-vector" in headers:
            pcv = msg.p_charging_vector
            if pcv is not None and pcv.icid_value:
                call.icid = pcv.icid_value
        if not call.correlation_id:
            call.correlation_id = lm.observations[0].correlation_id

    def _record_routed(self, call: Call, msg: SipMessage) -> bool | None:
        values = msg.headers.get("record-route")
        if not values:
            return False  # no Record-Route header: no entries
        if len(values) == 1:
            # A proxy writes the same Record-Route on every call: its hosts by text.
            hosts = _RR_HOSTS.get(values[0])
            if hosts is None:
                hosts = remember(_RR_HOSTS, values[0], _route_hosts(msg))
        else:
            hosts = _route_hosts(msg)
        if not hosts:
            return False
        proxies = set(self.config.proxy_ips)
        if self._proxy_ips is not None:
            proxies |= self._proxy_ips(call.node)
        if not proxies:
            return None
        return not proxies.isdisjoint(hosts)

    # -- eviction classes ------------------------------------------------------------------

    def _classify(self, call: Call) -> None:
        """Put the call last (latest activity) in its eviction class."""
        klass = _klass(call)
        calls = self._classes[klass]
        if klass == call.klass:  # the usual case: it is in `calls` already
            calls.move_to_end(call.call_id)
            return
        if klass == ENDED:
            call.end_ts = call.last_ts
        if call.klass:
            self._classes[call.klass].pop(call.call_id, None)
        call.klass = klass
        calls[call.call_id] = call

    def _remove(self, call: Call, reason: str) -> None:
        self.calls.pop(call.call_id, None)
        if call.klass:
            self._classes[call.klass].pop(call.call_id, None)
        call.ext = call.ext or {}
        call.ext["removed"] = reason
        self.removed[reason] = self.removed.get(reason, 0) + 1


def _klass(call: Call) -> str:
    """The eviction class: ended when every dialog is terminated (or the attempt failed
    without one), established while any dialog is live, else an attempt."""
    dialogs = call.dialogs
    if not dialogs:
        initial = call.initial
        return ENDED if initial is not None and initial.final_status >= 300 else ATTEMPT
    all_terminated = True
    for dialog in dialogs.values():
        state = dialog.state
        if state in LIVE_STATES:
            return ESTABLISHED
        if state != _TERMINATED:
            all_terminated = False
    return ENDED if all_terminated else ATTEMPT


# a Record-Route header value -> the hosts of its entries, top first
_RR_HOSTS: Final[dict[str, tuple[str, ...]]] = table()


def _route_hosts(msg: SipMessage) -> tuple[str, ...]:
    """The host of each Record-Route entry, without IPv6 brackets."""
    return tuple(
        (entry.uri.host if entry.uri is not None else "").strip("[]") for entry in msg.record_route
    )


def _reliable(msg: SipMessage) -> bool:
    """A reliable provisional response: Require: 100rel and an RSeq [RFC 3262 §3]."""
    req = msg.require
    return req is not None and "100rel" in req and msg.rseq is not None


__all__ = ["CALLEE", "CALLER", "Event", "Tracker", "TrackerConfig"]
