"""State kept per call, per dialog and per transaction, small enough for a million calls.

A `Call` is everything under one Call-ID at one capture node: the initial INVITE attempts,
the dialogs they created (one per callee To-tag), and the live transactions. Sides are
numbered CALLER (0) and CALLEE (1): the caller is the side whose From-tag is the caller tag,
the tag of the initial INVITE (PROTOCOL.md C.0 rule 5). Per-side facts are two-slot lists
indexed by side.

Only compact facts outlive a transaction: a `Transaction` holds its messages while it is
live; `Dialog` keeps tags, times, per-side CSeq and user agents, the offer/answer state and
a small SDP summary per side. Detectors keep their own per-dialog facts in `Dialog.ext`.
"""

from __future__ import annotations

from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.tracking.states import DialogState

CALLER: Final = 0
CALLEE: Final = 1
SIDE_NAMES: Final = ("caller", "callee")
DIRECTIONS: Final = ("caller_to_callee", "callee_to_caller")


def other(side: int) -> int:
    return 1 - side


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpSummary:
    """What the session-change and SDP checks need of one session description."""

    __slots__ = ("addresses", "codecs", "directions", "origin", "ports", "version")

    def __init__(
        self,
        origin: tuple[str, str] | None,
        version: int | None,
        directions: tuple[str, ...],
        ports: tuple[int, ...],
        addresses: tuple[str, ...],
        codecs: tuple[tuple[str, ...], ...],
    ) -> None:
        self.origin = origin  # (username, session id)
        self.version = version
        self.directions = directions  # effective direction per m= line
        self.ports = ports
        self.addresses = addresses  # effective c= address per m= line
        self.codecs = codecs  # codec names per m= line, in offer order


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Transaction:
    """One request and its responses, keyed by (sender's From-tag, CSeq number, method)."""

    __slots__ = (
        "ack",
        "ack_ts",
        "answered",
        "branch",
        "call",
        "cancel_ts",
        "cseq",
        "dialog",
        "final",
        "final_count",
        "final_last_ts",
        "final_status",
        "final_ts",
        "initial",
        "method",
        "offer_in",
        "provisional",
        "reliable_1xx",
        "request",
        "request_ts",
        "retransmissions",
        "side",
        "state_at_send",
    )

    def __init__(self, call: Call, method: str, cseq: int, side: int) -> None:
        self.call = call
        self.method = method
        self.cseq = cseq
        self.side = side  # the side that sent the request
        self.initial = False  # the dialog-creating INVITE (no To-tag)
        self.dialog: Dialog | None = None
        self.branch = ""
        self.request: LogicalMessage | None = None
        self.request_ts = 0
        self.state_at_send = DialogState.PRE
        self.retransmissions = 0
        self.provisional: list[LogicalMessage] = []
        self.reliable_1xx = False
        self.final: LogicalMessage | None = None
        self.final_status = 0
        self.final_ts = 0
        self.final_last_ts = 0
        self.final_count = 0  # copies of the final response incl. retransmissions
        self.ack: LogicalMessage | None = None
        self.ack_ts = 0
        self.cancel_ts = 0
        self.offer_in = ""  # "request", "response" or "" when no offer was made in it
        self.answered = False

    @property
    def completed(self) -> bool:
        return self.final_status >= 200

    def __repr__(self) -> str:
        return (
            f"<Transaction {self.method} {self.cseq} from {SIDE_NAMES[self.side]}"
            f" final={self.final_status}>"
        )


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Dialog:
    """One dialog: (Call-ID, caller tag, callee tag) (RFC 3261 §12)."""

    __slots__ = (
        "acked",
        "anomalies",
        "bye_side",
        "bye_ts",
        "call",
        "callee_tag",
        "confirmed_ts",
        "count_2xx",
        "cseq",
        "early_ts",
        "end_ts",
        "ext",
        "first_2xx_ts",
        "last_2xx_ts",
        "last_ts",
        "offer",
        "pending_invite",
        "pending_update",
        "pracks",
        "reinvites",
        "reliable",
        "sdp",
        "start_ts",
        "state",
        "ua",
        "updates",
    )

    def __init__(self, call: Call, callee_tag: str, ts: int) -> None:
        self.call = call
        self.callee_tag = callee_tag
        self.state = DialogState.PRE
        self.start_ts = ts
        self.early_ts = 0
        self.confirmed_ts = 0
        self.end_ts = 0
        self.last_ts = ts
        self.reliable = False  # created by a reliable 1xx (RFC 3262) or a 2xx
        self.first_2xx_ts = 0  # 2xx to the initial INVITE on this dialog
        self.last_2xx_ts = 0
        self.count_2xx = 0
        self.acked = False
        self.bye_ts = 0
        self.bye_side = -1
        self.cseq: list[int | None] = [None, None]  # last CSeq number per sending side
        self.ua: list[str] = ["", ""]
        self.pending_invite: list[Transaction | None] = [None, None]  # by sender side
        self.pending_update: list[Transaction | None] = [None, None]
        self.offer: Transaction | None = None  # the transaction holding an unanswered offer
        self.sdp: list[SdpSummary | None] = [None, None]  # last committed SDP per side
        self.reinvites = 0
        self.updates = 0
        self.pracks = 0
        self.anomalies = 0
        self.ext: dict[str, Any] | None = None

    def ext_for(self, name: str, factory: Any) -> Any:
        return _ext_for(self, name, factory)

    def __repr__(self) -> str:
        return f"<Dialog {self.call.call_id} {self.call.caller_tag}/{self.callee_tag} {self.state}>"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Call:
    """Everything under one Call-ID at one capture node."""

    __slots__ = (
        "addr",
        "anomalies",
        "call_id",
        "caller_tag",
        "capture_id",
        "correlation_id",
        "dialogs",
        "end_ts",
        "ext",
        "first_ts",
        "icid",
        "initial",
        "initial_status",
        "klass",
        "last_ts",
        "node",
        "owner_known",
        "record_routed",
        "session_id_pair",
        "transactions",
        "ua",
        "x_cid",
    )

    def __init__(self, call_id: str, node: str, capture_id: int, caller_tag: str, ts: int):
        self.call_id = call_id
        self.node = node
        self.capture_id = capture_id
        self.caller_tag = caller_tag
        self.owner_known = False  # the initial INVITE was observed (C.0 rule 6)
        self.first_ts = ts
        self.last_ts = ts
        self.end_ts = 0
        self.initial: Transaction | None = None  # the latest initial INVITE attempt
        self.initial_status = 0
        self.dialogs: dict[str, Dialog] = {}
        self.transactions: dict[tuple[str, int, str], Transaction] = {}
        self.record_routed: bool | None = None
        self.ua: list[str] = ["", ""]
        self.addr: list[str] = ["", ""]
        self.x_cid = ""
        self.session_id_pair = ""
        self.icid = ""
        self.correlation_id = ""
        self.anomalies = 0
        self.klass = ""  # eviction class, kept by the tracker
        self.ext: dict[str, Any] | None = None

    def ext_for(self, name: str, factory: Any) -> Any:
        return _ext_for(self, name, factory)

    def side_of_tag(self, from_tag: str) -> int:
        return CALLER if from_tag == self.caller_tag else CALLEE

    def __repr__(self) -> str:
        return f"<Call {self.call_id} dialogs={len(self.dialogs)}>"


def _ext_for(owner: Call | Dialog, name: str, factory: Any) -> Any:
    """A detector's own state on a call or dialog, created on first use."""
    if owner.ext is None:
        owner.ext = {}
    value = owner.ext.get(name)
    if value is None:
        value = owner.ext[name] = factory()
    return value
