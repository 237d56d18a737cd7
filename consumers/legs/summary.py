"""Leg summaries: the few facts of one call leg that the cross-leg correlator needs.

The first stage (the per-partition engine) cannot see the other leg of a B2BUA or SBC: that
leg has its own Call-ID, tags and owner, so it may sit in another partition. This module
turns the tracker's events into compact `LegRecord`s, which a second keyed stage
(`consumers.legs.correlator`) joins by leg-correlation key (PROTOCOL.md C.12, B.13, A.11):

- "setup", once per call: the dialog-creating answer (2xx, or the early 1xx when a session
  modification comes first), with the initial INVITE's time, addresses and users, the Allow
  of both dialog-creating messages (RFC 3311 §4: UPDATE support is learnt from them; no Allow
  means no information, RFC 3261 §20.5) and the negotiated Session-Expires (RFC 4028 §4);
- "request", per re-INVITE or UPDATE [RFC 3261 §14; RFC 3311 §5]: offer or not, and whether
  the SDP changed against the sender's last committed one (a same-version SDP or none is a
  session refresh [RFC 4028 §7.4; RFC 3264 §8]);
- "final", its final response: status, time, who sent it (an endpoint or the observed proxy).

Every record carries the leg's keys: HEP correlation id (chunk 0x0011), the RFC 7989
Session-ID UUIDs (an unordered pair), X-CID (on a B-leg the A-leg's Call-ID) and the RFC 7315
P-Charging-Vector icid-value, so the second stage can link a leg from any of its records.
Times are the sender's (in-copy) times, C.0 rule 2.
"""

from __future__ import annotations

from typing import Final

from consumers.dedup import ORIGIN_PROXY, LogicalMessage
from consumers.record_ids import record_id
from consumers.records import LegRecord
from consumers.sip import SipMessage
from consumers.sip.lexing import percent_unescape
from consumers.sip.memo import remember, table
from consumers.tracking.model import CALLEE, CALLER, DIRECTIONS, Call, Dialog, SdpSummary, other
from consumers.tracking.tracker import Event

SESSION_METHODS: Final = ("INVITE", "UPDATE")
NIL_UUID: Final = "0" * 32

# Purposes of a session-modification request.
CHANGE: Final = "change"
REFRESH: Final = "refresh"
LATE_OFFER: Final = "late_offer"

# An Allow set (memoised per header text by SipMessage, so the same object recurs) -> its
# tokens in order; a record gets its own list copy.
_SORTED_TOKENS: Final[dict[frozenset[str], tuple[str, ...]]] = {}
# URI text -> its user part (From/To/Request-URI users recur across the calls of a user)
_URI_USERS: Final[dict[str, str]] = table()


def sdp_change(new: SdpSummary | None, prev: SdpSummary | None) -> str:
    """What an offer changes against the sender's last committed SDP [RFC 3264 §8].

    "" when the o= version is unchanged (an identical SDP, e.g. a session refresh); otherwise
    the most visible change: streams, direction, codecs, media (address or port), version.
    """
    if new is None:
        return ""
    if prev is None:
        return "new"
    if new.origin == prev.origin and new.version == prev.version:
        return ""
    if len(new.ports) != len(prev.ports) or any(
        (a == 0) != (b == 0) for a, b in zip(new.ports, prev.ports, strict=False)
    ):
        return "streams"
    if new.directions != prev.directions:
        return "direction"
    if new.codecs != prev.codecs:
        return "codecs"
    if new.addresses != prev.addresses or new.ports != prev.ports:
        return "media"
    return "version"


def purpose_of(method: str, offer: bool, change: str) -> str:
    if offer:
        return CHANGE if change else REFRESH
    return LATE_OFFER if method == "INVITE" else REFRESH


def session_pair(call: Call, msg: SipMessage | None) -> str:
    """The Session-ID UUIDs of the leg so far: the call's first pair plus this message's."""
    if not call.session_id_pair and (msg is None or "session-id" not in msg.headers):
        return ""  # the common case: no Session-ID on the leg
    ids = {u for u in call.session_id_pair.split(",") if u}
    sid = msg.session_id if msg is not None else None
    if sid is not None:
        for u in (sid.local, sid.remote):
            if u and u != NIL_UUID:
                ids.add(u)
    return ",".join(sorted(ids))


def setup_record(ev: Event, now_us: int) -> LegRecord:
    """The leg's setup fact; its message is the dialog-creating answer when there is one."""
    call = ev.call
    dialog = ev.dialog
    inv = call.initial.request if call.initial is not None else None
    answer: LogicalMessage | None = None
    if ev.msg.is_response and ev.tx is not None and ev.tx.initial:
        answer = ev.lm
    elif call.initial is not None and dialog is not None:
        for lm in reversed(call.initial.provisional):
            if lm.origin != ORIGIN_PROXY and (lm.msg.to_tag or "") == dialog.callee_tag:
                answer = lm
                break
    if answer is not None:
        lm, side = answer, CALLEE
    elif inv is not None:
        lm, side = inv, CALLER
    else:
        lm, side = ev.lm, ev.side
    rec = _base(call, dialog, lm, side, "setup", now_us, ev)
    amsg = answer.msg if answer is not None else None
    if amsg is not None:
        rec.callee_allow = _tokens(amsg.allow)
        se = amsg.session_expires
        if se is not None and 200 <= (amsg.status_code or 0) < 300:
            rec.session_expires, rec.refresher = se.delta, se.refresher
    if inv is not None:
        imsg = inv.msg
        obs = inv.first
        rec.invite_time_us = call.initial.request_ts if call.initial is not None else inv.ts
        rec.invite_ref = inv.ref
        rec.invite_src_ip, rec.invite_src_port = obs.src_ip, obs.src_port
        rec.invite_dst_ip, rec.invite_dst_port = obs.dst_ip, obs.dst_port
        rec.caller_allow = _tokens(imsg.allow)
        rec.from_user = _name_addr_user(imsg, "from")
        rec.to_user = _name_addr_user(imsg, "to")
        ruri = imsg.request_uri_text
        rec.ruri_user = _uri_user(ruri) if ruri is not None else ""
    return rec


def request_record(ev: Event, now_us: int) -> LegRecord:
    rec = _base(ev.call, ev.dialog, ev.lm, ev.side, "request", now_us, ev)
    offer = ev.sdp_role == "offer"
    change = sdp_change(ev.sdp, ev.sdp_prev) if offer else ""
    rec.offer = offer
    rec.sdp_change = change
    rec.purpose = purpose_of(rec.method, offer, change)
    se = ev.msg.session_expires
    if se is not None:
        rec.session_expires, rec.refresher = se.delta, se.refresher
    return rec


def final_record(ev: Event, now_us: int) -> LegRecord:
    rec = _base(ev.call, ev.dialog, ev.lm, ev.side, "final", now_us, ev)
    tx = ev.tx
    if tx is not None:
        rec.request_time_us = tx.request_ts
        rec.response_ms = (ev.t - tx.request_ts) / 1000 if tx.request_ts else None
    rec.answered_by = "proxy" if ev.proxy_generated else "peer"
    rec.offer_in_response = ev.sdp_role == "offer"
    se = ev.msg.session_expires
    if se is not None and 200 <= ev.status < 300:
        rec.session_expires, rec.refresher = se.delta, se.refresher
    return rec


def _base(
    call: Call,
    dialog: Dialog | None,
    lm: LogicalMessage,
    side: int,
    fact: str,
    now_us: int,
    ev: Event,
) -> LegRecord:
    msg = lm.msg
    obs = lm.first
    cseq = msg.cseq
    method = (msg.method or "") if msg.is_request else (cseq.method if cseq else "")
    when = ev.t if lm is ev.lm else lm.ts
    callee_tag = dialog.callee_tag if dialog is not None else ""
    state = lm.state_at or "pre"
    if state == "terminated":
        state = "mortal"
    return LegRecord(
        id=record_id("leg", call.node, call.call_id, fact, lm.ref),
        fact=fact,
        event_time_us=when,
        detected_at_us=max(now_us, when),
        node=call.node,
        capture_id=call.capture_id,
        call_id=call.call_id,
        caller_tag=call.caller_tag,
        callee_tag=callee_tag,
        owner_known=call.owner_known,
        direction=DIRECTIONS[side],
        dialog_state=state,
        method=method,
        cseq=cseq.number if cseq else 0,
        status=msg.status_code or 0,
        src_ip=obs.src_ip,
        src_port=obs.src_port,
        dst_ip=obs.dst_ip,
        dst_port=obs.dst_port,
        transport=obs.transport,
        ref=lm.ref,
        ua_sender=_ua(call, dialog, side),
        ua_peer=_ua(call, dialog, other(side)),
        hep_correlation_id=call.correlation_id or obs.correlation_id,
        session_id_pair=session_pair(call, msg),
        x_cid=call.x_cid,
        icid=call.icid,
    )


def _ua(call: Call, dialog: Dialog | None, side: int) -> str:
    if dialog is not None and dialog.ua[side]:
        return dialog.ua[side]
    return call.ua[side]


def _tokens(values: frozenset[str] | None) -> list[str] | None:
    if values is None:
        return None
    ordered = _SORTED_TOKENS.get(values)
    if ordered is None:
        ordered = tuple(sorted(values))
        if len(values) <= 64:  # a real Allow; a hostile one is not kept
            if len(_SORTED_TOKENS) >= 4096:
                _SORTED_TOKENS.clear()
            _SORTED_TOKENS[values] = ordered
    return list(ordered)


def _name_addr_user(msg: SipMessage, key: str) -> str:
    """The URI user of the first From or To value: `msg.from_/to.uri.user or ""`, read
    without building the NameAddr and Uri when the value has no quote and a <>-enclosed
    URI (then the URI text is what `name_addr.parse_name_addr` would take)."""
    values = msg.headers.get(key)
    if not values:
        return ""
    value = values[0]
    lt = value.find("<")
    if lt >= 0 and '"' not in value:
        gt = value.find(">", lt)
        if gt >= 0:
            return _uri_user(value[lt + 1 : gt].strip(" \t"))
    name_addr = msg.from_ if key == "from" else msg.to
    return (name_addr.uri.user or "") if name_addr is not None else ""


def _uri_user(text: str) -> str:
    """`uri.parse_uri(text).user or ""` without building the Uri (memoised per text): the
    unescaped userinfo before ':' of a sip/sips URI with an '@', a tel URI's number."""
    user = _URI_USERS.get(text)
    if user is None:
        colon = text.find(":")
        user = ""
        if colon > 0:
            scheme = text[:colon].lower()
            if scheme == "sip" or scheme == "sips":
                at = text.find("@", colon + 1)
                if at >= 0:
                    user = percent_unescape(text[colon + 1 : at].partition(":")[0])
            elif scheme == "tel":
                user = text[colon + 1 :].partition(";")[0]
        remember(_URI_USERS, text, user)
    return user


__all__ = [
    "CHANGE",
    "LATE_OFFER",
    "REFRESH",
    "SESSION_METHODS",
    "final_record",
    "purpose_of",
    "request_record",
    "sdp_change",
    "session_pair",
    "setup_record",
]
