"""The leg fact record of the cross-leg correlator (PROTOCOL.md C.12), re-exported by
`consumers.records`.

It is kept out of the compiled records module on purpose: `consumers.legs.codec` validates
the JSON form of these records against the field annotations as written
(`dataclasses.fields(LegRecord)[i].type` is the annotation's text here), which a compiled
dataclass reports only as a class, losing `int | None` and `list[str] | None`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Self


@dataclass(slots=True)
class LegRecord:
    """One fact of a call leg for the cross-leg correlator (PROTOCOL.md C.12, B.13).

    `fact` is "setup" (once per call: the dialog-creating answer, with the initial INVITE's
    time, addresses, Allow and users in the invite_/caller_ fields), "request" (a re-INVITE
    or UPDATE) or "final" (its final response). The message columns describe the message
    the fact is about; `direction` is its sender's. Every fact carries the leg's keys.
    """

    id: str
    fact: str  # setup, request, final
    event_time_us: int  # the sender's time of the message (in-copy)
    detected_at_us: int  # first-stage stream time when the fact was emitted
    node: str
    capture_id: int
    call_id: str
    caller_tag: str
    callee_tag: str
    owner_known: bool  # the leg's initial INVITE was observed (C.0 rule 6)
    direction: str  # of the message: caller_to_callee, callee_to_caller
    dialog_state: str
    method: str  # request method, or the CSeq method of a response
    cseq: int
    status: int  # 0 for requests
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    transport: str
    ref: str  # evidence id of the message
    ua_sender: str
    ua_peer: str
    hep_correlation_id: str  # HEP chunk 0x0011
    session_id_pair: str  # RFC 7989 UUIDs seen on the leg, sorted, comma-joined
    x_cid: str  # X-CID header (on a B-leg: the A-leg's Call-ID)
    icid: str  # P-Charging-Vector icid-value (RFC 7315)
    # setup
    from_user: str = ""
    to_user: str = ""
    ruri_user: str = ""
    invite_time_us: int = 0
    invite_ref: str = ""
    invite_src_ip: str = ""
    invite_src_port: int = 0
    invite_dst_ip: str = ""
    invite_dst_port: int = 0
    caller_allow: list[str] | None = None  # Allow of the initial INVITE (None: no header)
    callee_allow: list[str] | None = None  # Allow of the answer
    session_expires: int | None = None  # setup and final: from the 2xx
    refresher: str | None = None
    # request
    purpose: str = ""  # change (offer with a new SDP), refresh (no or same SDP), late_offer
    offer: bool = False  # the request carried an SDP offer
    sdp_change: str = ""  # streams, direction, codecs, media, version, new, "" (none)
    # final
    request_time_us: int = 0
    answered_by: str = ""  # peer (an endpoint sent it), proxy (the observed proxy did)
    response_ms: float | None = None
    offer_in_response: bool = False  # a re-INVITE without SDP got its offer here

    @property
    def kind(self) -> str:
        return "leg"

    def replace(self, **changes: Any) -> Self:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d
