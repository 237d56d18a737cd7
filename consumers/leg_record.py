"""The leg fact record of the cross-leg correlator (PROTOCOL.md C.12), re-exported by
`consumers.records`.

It is kept out of the compiled records module on purpose: `consumers.legs.codec` validates
the JSON form of these records against the constructor's annotations as written
(`inspect.signature(LegRecord)` gives their text here, `int | None`, `list[str] | None`),
which a compiled constructor does not keep.
"""

from __future__ import annotations

from typing import Any, Final

from consumers.value import InterpretedValue, plain

_FIELDS: Final = (
    "id",
    "fact",
    "event_time_us",
    "detected_at_us",
    "node",
    "capture_id",
    "call_id",
    "caller_tag",
    "callee_tag",
    "owner_known",
    "direction",
    "dialog_state",
    "method",
    "cseq",
    "status",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "transport",
    "ref",
    "ua_sender",
    "ua_peer",
    "hep_correlation_id",
    "session_id_pair",
    "x_cid",
    "icid",
    "from_user",
    "to_user",
    "ruri_user",
    "invite_time_us",
    "invite_ref",
    "invite_src_ip",
    "invite_src_port",
    "invite_dst_ip",
    "invite_dst_port",
    "caller_allow",
    "callee_allow",
    "session_expires",
    "refresher",
    "purpose",
    "offer",
    "sdp_change",
    "request_time_us",
    "answered_by",
    "response_ms",
    "offer_in_response",
)


class LegRecord(InterpretedValue):
    """One fact of a call leg for the cross-leg correlator (PROTOCOL.md C.12, B.13).

    `fact` is "setup" (once per call: the dialog-creating answer, with the initial INVITE's
    time, addresses, Allow and users in the invite_/caller_ fields), "request" (a re-INVITE
    or UPDATE) or "final" (its final response). The message columns describe the message
    the fact is about; `direction` is its sender's. Every fact carries the leg's keys.
    """

    __slots__ = _FIELDS
    FIELDS = _FIELDS

    def __init__(
        self,
        id: str,
        fact: str,  # setup, request, final
        event_time_us: int,  # the sender's time of the message (in-copy)
        detected_at_us: int,  # first-stage stream time when the fact was emitted
        node: str,
        capture_id: int,
        call_id: str,
        caller_tag: str,
        callee_tag: str,
        owner_known: bool,  # the leg's initial INVITE was observed (C.0 rule 6)
        direction: str,  # of the message: caller_to_callee, callee_to_caller
        dialog_state: str,
        method: str,  # request method, or the CSeq method of a response
        cseq: int,
        status: int,  # 0 for requests
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        transport: str,
        ref: str,  # evidence id of the message
        ua_sender: str,
        ua_peer: str,
        hep_correlation_id: str,  # HEP chunk 0x0011
        session_id_pair: str,  # RFC 7989 UUIDs seen on the leg, sorted, comma-joined
        x_cid: str,  # X-CID header (on a B-leg: the A-leg's Call-ID)
        icid: str,  # P-Charging-Vector icid-value (RFC 7315)
        # setup
        from_user: str = "",
        to_user: str = "",
        ruri_user: str = "",
        invite_time_us: int = 0,
        invite_ref: str = "",
        invite_src_ip: str = "",
        invite_src_port: int = 0,
        invite_dst_ip: str = "",
        invite_dst_port: int = 0,
        caller_allow: list[str] | None = None,  # Allow of the initial INVITE (None: no header)
        callee_allow: list[str] | None = None,  # Allow of the answer
        session_expires: int | None = None,  # setup and final: from the 2xx
        refresher: str | None = None,
        # request
        purpose: str = "",  # change (offer with a new SDP), refresh (no or same SDP), late_offer
        offer: bool = False,  # the request carried an SDP offer
        sdp_change: str = "",  # streams, direction, codecs, media, version, new, "" (none)
        # final
        request_time_us: int = 0,
        answered_by: str = "",  # peer (an endpoint sent it), proxy (the observed proxy did)
        response_ms: float | None = None,
        offer_in_response: bool = False,  # a re-INVITE without SDP got its offer here
    ) -> None:
        self.id = id
        self.fact = fact
        self.event_time_us = event_time_us
        self.detected_at_us = detected_at_us
        self.node = node
        self.capture_id = capture_id
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = callee_tag
        self.owner_known = owner_known
        self.direction = direction
        self.dialog_state = dialog_state
        self.method = method
        self.cseq = cseq
        self.status = status
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.transport = transport
        self.ref = ref
        self.ua_sender = ua_sender
        self.ua_peer = ua_peer
        self.hep_correlation_id = hep_correlation_id
        self.session_id_pair = session_id_pair
        self.x_cid = x_cid
        self.icid = icid
        self.from_user = from_user
        self.to_user = to_user
        self.ruri_user = ruri_user
        self.invite_time_us = invite_time_us
        self.invite_ref = invite_ref
        self.invite_src_ip = invite_src_ip
        self.invite_src_port = invite_src_port
        self.invite_dst_ip = invite_dst_ip
        self.invite_dst_port = invite_dst_port
        self.caller_allow = caller_allow
        self.callee_allow = callee_allow
        self.session_expires = session_expires
        self.refresher = refresher
        self.purpose = purpose
        self.offer = offer
        self.sdp_change = sdp_change
        self.request_time_us = request_time_us
        self.answered_by = answered_by
        self.response_ms = response_ms
        self.offer_in_response = offer_in_response

    @property
    def kind(self) -> str:
        return "leg"

    def to_dict(self) -> dict[str, Any]:
        """Every field (containers copied, as `dataclasses.asdict` copies them) and "kind"."""
        d = dict(zip(_FIELDS, plain(self.to_tuple()), strict=True))
        d["kind"] = "leg"
        return d
