"""C.11: SDP-level events and violations, and the per-dialog SDP ledger C.10 also reads.

Owns PROTOCOL.md C.11 (RFC 3264 §4, §6, §8; RFC 3261 §13.2.1, §14.1; RFC 3262 §5;
RFC 3311 §5.1; RFC 4566 §6) and `observe(ev)`, the ledger of each dialog's session
descriptions that the session-change records (C.10) are classified from.

Whose SDP: a UA's own. What a UA sent is its in-copy; what it received is the proxy's
out-copy toward it, which rtpengine or SBC functions may have rewritten, so comparisons stay
on one side of the proxy: a UA's successive SDPs with each other, an answer with its offer
as the answerer received it (C.11 trap). `LogicalMessage.msg` is whichever copy was captured
first, so `copies()` picks them with `dedup.sent_and_delivered` (by hop, else by addresses
and Via depth); each copy is parsed once per message (`LogicalMessage.parsed`), and the
receiver's copy only of offers, the one thing read of it.

Offer/answer, decided per transaction, so crossing offers (glare) each keep their own
answer [3264 §4]:
- an INVITE, UPDATE or PRACK request with SDP makes an offer, answered in a response to it,
  except a PRACK (or ACK) that answers an offer made in a response [3262 §5; 3261 §13.2.1];
- a response with SDP to a request that made none makes an offer (late offer);
- an answer in an unreliable 1xx is only a preview: it commits with the reliable 1xx or 2xx
  that repeats it, or with a 2xx without SDP; a non-2xx final response rolls an offer back
  [3261 §13.2.1, §14.1]; what a reliable 1xx committed stays [RFC 6141 §3.3];
- the initial INVITE's offer is read back from its transaction when a dialog's answer comes,
  so every forked dialog commits it for itself.

Per side the ledger keeps the last committed SDP (the session as agreed), the last SDP sent
(any role, for the o= and payload rules) and the streams held with c=0.0.0.0; names in them
are interned, so the ledger stays small.

`SdpChange.changes` lists the events of C.11 (hold, resume, codec_change, add_stream,
remove_stream, address_change, and preconditions when a=inactive only reserves resources
[RFC 3312]) against the sender's committed SDP: they feed C.10's `intent` and are never
anomalies here, so clean hold and resume calls yield nothing.

Anomalies (severity per the catalogue):
- hold_legacy_0000 (low, deprecated): an offer moves a live stream to c=0.0.0.0 with a
  non-zero port [3264 §8.4]; not for a stream that was not live before (RFC 6141 Figure 3
  uses 0.0.0.0 for a stream not accepted yet), not in answers, not with preconditions.
- sdp_version_not_incremented (medium) / sdp_version_jump (low): against the UA's last sent
  and last committed SDP: the same version with identical content is a legal no-op, +1 from
  either is right (after a rejected offer the next may count from either) [3264 §8].
  Identical means the same lines apart from o=. Previews in unreliable 1xx are not compared.
- sdp_origin_changed (medium): o= username or session id differs from the UA's previous SDP.
- mline_count_decreased (medium): an offer with fewer m= lines than the session, or an answer
  with fewer than its offer [3264 §6, §8].
- pt_remapped (medium): a dynamic payload type bound to another codec on the same stream
  than in the UA's previous SDP; a slot freed (port 0) or reused for another media type
  starts afresh [3264 §8.3.2, §8.3.3].
- held_answered_with_held (low): a sendonly offer answered sendonly/inactive by a UA that was
  receiving on that stream [3264 §6.1, §8.4].
- answer_codec_not_in_offer (medium): an answered stream lists a codec its offer did not
  (by name; a bare dynamic number the offer listed counts as offered) [3264 §6.1].
Direction is the media-level attribute over the session-level one [RFC 4566 §6].
"""

from __future__ import annotations

from operator import itemgetter
from sys import intern
from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.detectors.hops import sent_and_delivered
from consumers.hashing import blake2b
from consumers.records import Severity
from consumers.sip import Sdp, SipMessage, effective_direction
from consumers.sip.body import find_session_sdp
from consumers.tracking.model import SdpSummary, Transaction, other
from consumers.tracking.sdpsummary import codec_part, offer_answer_sdp, shared
from consumers.tracking.tracker import Event

LEDGER: Final = "sdp_ledger"
NULL_ADDR: Final = "0.0.0.0"
RECV_DIRS: Final = frozenset({"sendrecv", "recvonly"})
HELD_DIRS: Final = frozenset({"sendonly", "inactive"})
# Formats that ride along with the voice/video codec and never are "the" codec.
AUX_CODECS: Final = frozenset({"TELEPHONE-EVENT", "CN", "RED", "ULPFEC", "RTX", "FLEXFEC", "FEC"})
PRECONDITION_ATTRS: Final = frozenset({"curr", "des", "conf"})  # RFC 3312 §5
_name: Final = itemgetter(0)  # of an (attribute name, value) pair
_UNSET: Final = object()
MAX_PENDING: Final = 4
# C.10 intent precedence: the first event found names the transaction.
INTENT_ORDER: Final = (
    "hold",
    "resume",
    "add_stream",
    "remove_stream",
    "address_change",
    "codec_change",
    "preconditions",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpFacts:
    """What the C.10/C.11 rules need of one session description, per m= line."""

    __slots__ = (
        "addresses",
        "codecs",
        "digest",
        "directions",
        "formats",
        "kinds",
        "origin",
        "ports",
        "preconditions",
        "pts",
        "version",
    )

    def __init__(self) -> None:
        self.origin: tuple[str, str] | None = None  # (username, session id)
        self.version: int | None = None
        self.kinds: tuple[str, ...] = ()  # media type per m= line
        self.directions: tuple[str, ...] = ()  # effective direction per m= line
        self.ports: tuple[int, ...] = ()
        self.addresses: tuple[str, ...] = ()  # effective c= address per m= line
        self.codecs: tuple[tuple[str, ...], ...] = ()  # upper-case names in format order
        self.formats: tuple[tuple[str, ...], ...] = ()
        self.pts: tuple[tuple[tuple[str, str], ...], ...] = ()  # dynamic PT -> NAME/rate
        self.preconditions = False
        self.digest = 0  # hash of every line but o=

    def receives(self, i: int) -> bool:
        """The UA wants media on stream i (not held, not removed)."""
        return (
            self.ports[i] != 0
            and self.directions[i] in RECV_DIRS
            and self.addresses[i] != NULL_ADDR
        )

    def primary(self, i: int) -> str:
        return next((c for c in self.codecs[i] if c not in AUX_CODECS), "")


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class PendingOffer:
    """An offer whose answer has not been committed yet."""

    __slots__ = (
        "answered",
        "before",
        "early",
        "in_response",
        "legacy",
        "received",
        "ref",
        "sent",
        "side",
        "tx",
    )

    def __init__(
        self,
        tx: Transaction,
        side: int,
        sent: SdpFacts,
        received: SdpFacts,
        ref: str,
        in_response: bool,
    ) -> None:
        self.tx = tx
        self.side = side  # the offerer
        self.sent = sent  # as the offerer sent it
        self.received = received  # as the answerer got it
        self.ref = ref
        self.in_response = in_response
        self.answered = False
        # An unreliable 1xx preview: (answer, None, evidence id); the None is the place of
        # the answer as received, which no rule reads.
        self.early: tuple[SdpFacts, SdpFacts | None, str] | None = None
        self.before: SdpFacts | None = None  # the offerer's committed SDP when offering
        self.legacy = 0  # the offerer's c=0.0.0.0 hold mask once committed


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Violation:
    __slots__ = ("evidence", "fields", "name", "severity", "side")

    def __init__(
        self, name: str, severity: Severity, side: int, evidence: list[str], fields: dict[str, Any]
    ) -> None:
        self.name = name
        self.severity = severity
        self.side = side
        self.evidence = evidence
        self.fields = fields


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpChange:
    """What one SDP-carrying message did to the dialog's session."""

    __slots__ = (
        "before",
        "changes",
        "facts",
        "negotiated_changed",
        "offer",
        "received",
        "role",
        "side",
        "violations",
    )

    def __init__(
        self, role: str, side: int, facts: SdpFacts, received: SdpFacts | None = None
    ) -> None:
        self.role = role  # offer, answer, early_answer (unreliable 1xx), repeat
        self.side = side
        self.facts = facts  # as the sender sent it
        # As the receiver got it: offers only (answers are compared with the offer as their
        # sender received it, never with how the offerer got them).
        self.received = received
        self.before: SdpFacts | None = None  # the sender's committed SDP before this message
        self.changes: tuple[tuple[str, int], ...] = ()  # (event, m= index) vs `before`
        self.offer: PendingOffer | None = None  # answers: the offer they answer
        self.negotiated_changed: tuple[int, ...] = ()  # answers: streams whose codecs changed
        self.violations: list[Violation] = []


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpLedger:
    __slots__ = ("change", "committed", "legacy", "negotiated", "pending", "sent", "seq")

    def __init__(self) -> None:
        self.seq = -1  # the logical message last applied (both detectors share the result)
        self.change: SdpChange | None = None
        self.committed: list[SdpFacts | None] = [None, None]
        self.sent: list[SdpFacts | None] = [None, None]
        self.pending: list[PendingOffer] = []
        self.legacy = [0, 0]  # per side: bit i set = stream i held with c=0.0.0.0
        self.negotiated: tuple[tuple[str, frozenset[str]] | None, ...] | None = None

    def find(self, tx: Transaction | None) -> PendingOffer | None:
        for p in self.pending:
            if p.tx is tx:
                return p
        return None

    def add(self, pend: PendingOffer) -> None:
        self.pending = [p for p in self.pending if p.tx is not pend.tx]
        self.pending.append(pend)
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]

    def drop(self, pend: PendingOffer) -> None:
        self.pending = [p for p in self.pending if p is not pend]


# -- copies ------------------------------------------------------------------------------


def copies(
    lm: LogicalMessage, toward: tuple[str, int] | None = None
) -> tuple[SipMessage, SipMessage]:
    """(the message as its sender sent it, as its receiver got it); the same object twice
    when the two carry the same body, which is all the SDP checks compare."""
    sent_obs, recv_obs = sent_and_delivered(lm, toward)
    sent = lm.parsed(sent_obs)
    if recv_obs is sent_obs:
        return sent, sent
    recv = lm.parsed(recv_obs)
    return (sent, sent) if recv.body == sent.body else (sent, recv)


def sent_message(lm: LogicalMessage) -> SipMessage:
    """The message with the headers its sender wrote (Contact before any NAT fix-up)."""
    return lm.parsed(sent_and_delivered(lm)[0])


# -- facts -------------------------------------------------------------------------------


_FACTS: Final[dict[bytes, SdpFacts | None]] = {}
_FACTS_MAX: Final = 1024  # descriptions remembered; the table is emptied when full
_FACTS_MAX_KEY: Final = 8192


def facts_of(msg: SipMessage, summary: SdpSummary | None = None) -> SdpFacts | None:
    """The session SDP of a message (disposition "session", multipart searched), or None.

    Facts are a pure function of the description's bytes and never change once built, so
    they are remembered per bytes: a 183 and the 2xx that repeats its SDP, a refresh
    re-offering the same SDP, and the copies of one message share one object. `summary`,
    the tracker's summary of this same message's SDP when there is one, gives the facts
    they share (origin, directions, ports, addresses) without reading the SDP again."""
    sdp = offer_answer_sdp(msg)
    if sdp is None:
        return None
    raw = find_session_sdp(msg.content_type, msg.content_disposition, msg.body) or b""
    found = _FACTS.get(raw, _UNSET)
    if found is not _UNSET:
        return found  # type: ignore[return-value]
    f = _facts(sdp, raw, summary)
    if len(raw) <= _FACTS_MAX_KEY:
        if len(_FACTS) >= _FACTS_MAX:
            _FACTS.clear()
        _FACTS[raw] = f
    return f


def _facts(sdp: Sdp, raw: bytes, summary: SdpSummary | None = None) -> SdpFacts | None:
    if not sdp.media and sdp.origin is None:
        return None
    f = SdpFacts()
    if summary is not None:
        f.origin, f.version = summary.origin, summary.version
        f.directions, f.ports, f.addresses = summary.directions, summary.ports, summary.addresses
    elif sdp.origin is not None:
        f.origin = (sdp.origin.username, sdp.origin.session_id)
        f.version = sdp.origin.version
    # Names repeat across calls: interned, a million dialogs share one copy of each.
    kinds, dirs, ports, addrs, cods, fmts, pts = [], [], [], [], [], [], []
    for m in sdp.media:
        kinds.append(intern(m.media))
        if summary is None:
            dirs.append(intern(effective_direction(m)))
            ports.append(m.port)
            conn = m.effective_connection
            addrs.append(conn.address if conn is not None else "")
        part = codec_part(m)
        cods.append(part[1])
        fmts.append(part[2])
        pts.append(part[3])
        if not f.preconditions and not PRECONDITION_ATTRS.isdisjoint(map(_name, m.attributes)):
            f.preconditions = True
    # Names repeat across calls and so do these tuples: one shared object each.
    f.kinds = shared(tuple(kinds))
    if summary is None:
        f.directions, f.ports, f.addresses = shared(tuple(dirs)), tuple(ports), tuple(addrs)
    f.codecs, f.formats, f.pts = shared(tuple(cods)), shared(tuple(fmts)), shared(tuple(pts))
    f.digest = _digest(raw)
    return f


def _digest(raw: bytes) -> int:
    """Hash of the description's lines, stripped, without empty lines and o= lines."""
    norm = b"\n".join(filter(None, map(bytes.strip, raw.replace(b"\r", b"").split(b"\n"))))
    while norm.startswith(b"o="):
        end = norm.find(b"\n")
        norm = norm[end + 1 :] if end >= 0 else b""
    cut = norm.find(b"\no=")
    while cut >= 0:
        end = norm.find(b"\n", cut + 1)
        norm = norm[:cut] + norm[end:] if end >= 0 else norm[:cut]
        cut = norm.find(b"\no=", cut)
    return int.from_bytes(blake2b(norm, digest_size=8).digest(), "big")


def diff(
    before: SdpFacts | None, after: SdpFacts, legacy_mask: int = 0
) -> tuple[tuple[str, int], ...]:
    """The C.11 events from `before` to `after` of one UA, per m= line [3264 §8]."""
    if before is None:
        return ()
    out: list[tuple[str, int]] = []
    nb, na = len(before.ports), len(after.ports)
    for i in range(max(nb, na)):
        if i >= na:
            if before.ports[i]:
                out.append(("remove_stream", i))
            continue
        if i >= nb:
            if after.ports[i]:
                out.append(("add_stream", i))
            continue
        pb, pa = before.ports[i], after.ports[i]
        if not pb or not pa:
            if pa:
                out.append(("add_stream", i))
            elif pb:
                out.append(("remove_stream", i))
            continue
        if before.kinds[i] != after.kinds[i]:
            out.append(("add_stream", i))  # the slot now carries another media type [§8.3.3]
            continue
        rb, ra = before.receives(i), after.receives(i)
        if rb and not ra:
            if after.preconditions and after.directions[i] == "inactive":
                out.append(("preconditions", i))
            else:
                out.append(("hold", i))
        elif ra and not rb:
            if before.directions[i] in HELD_DIRS:
                pre = before.preconditions and before.directions[i] == "inactive"
                out.append(("preconditions" if pre else "resume", i))
            elif legacy_mask >> i & 1:
                out.append(("resume", i))
            else:
                out.append(("address_change", i))  # a stream not accepted before (6141 Fig. 3)
        ab, aa = before.addresses[i], after.addresses[i]
        if NULL_ADDR not in (ab, aa) and (ab != aa or pb != pa):
            out.append(("address_change", i))
        if before.primary(i) != after.primary(i):
            out.append(("codec_change", i))
    return tuple(out)


Negotiated = tuple[tuple[str, frozenset[str]] | None, ...]
# Codec lists repeat from call to call (the same user agents), so what two lists give is
# remembered per pair of (shared) lists, for descriptions without removed streams.
_NEGOTIATED: Final[dict[tuple[object, object], Negotiated]] = {}
_NOT_OFFERED: Final[dict[tuple[object, ...], tuple[int, tuple[str, ...]] | None]] = {}
_PAIRS_MAX: Final = 1024


def _negotiated(offer: SdpFacts, answer: SdpFacts) -> Negotiated:
    """Per stream: the codec the answerer chose first and the codecs both sides listed."""
    if 0 in offer.ports or 0 in answer.ports:
        return _negotiate(offer, answer)
    key = (offer.codecs, answer.codecs)
    found = _NEGOTIATED.get(key)
    if found is None:
        found = _negotiate(offer, answer)
        if len(_NEGOTIATED) >= _PAIRS_MAX:
            _NEGOTIATED.clear()
        _NEGOTIATED[key] = found
    return found


def _negotiate(offer: SdpFacts, answer: SdpFacts) -> Negotiated:
    out: list[tuple[str, frozenset[str]] | None] = []
    for i in range(len(answer.ports)):
        if i >= len(offer.ports) or not answer.ports[i] or not offer.ports[i]:
            out.append(None)
            continue
        offered = set(offer.codecs[i])
        common = frozenset(c for c in answer.codecs[i] if c in offered and c not in AUX_CODECS)
        out.append(shared((answer.primary(i), shared(common))))
    return shared(tuple(out))


# -- the ledger --------------------------------------------------------------------------


def reliable_1xx(msg: SipMessage) -> bool:
    req = msg.require
    return req is not None and "100rel" in req and msg.rseq is not None


def observe(ev: Event) -> SdpChange | None:
    """Apply one event to its dialog's ledger (once, whichever detector asks first)."""
    dialog = ev.dialog
    if dialog is None or ev.retransmission or ev.tx is None:
        return None
    ext = dialog.ext
    led: SdpLedger | None = ext.get(LEDGER) if ext is not None else None
    if led is None:
        if ev.sdp is None:
            return None
        led = dialog.ext_for(LEDGER, SdpLedger)
    seq = ev.lm.seq
    if led.seq == seq:
        return led.change
    led.seq = seq
    led.change = None
    msg = ev.msg
    tx = ev.tx
    change = _apply(led, ev) if ev.sdp is not None else None
    pend = led.find(tx)
    if pend is not None and msg.is_response and ev.status >= 200:
        if ev.status >= 300:
            led.drop(pend)  # rejected: the session stays as it was [3261 §14.1; 3264 §4]
        else:
            if not pend.answered and pend.early is not None and change is None:
                # The 2xx without SDP confirms the answer previewed in an unreliable 1xx.
                early, _, ref = pend.early
                change = SdpChange("answer", other(pend.side), early)
                _commit(led, pend, change, ref)
            if pend.answered or not pend.in_response:
                led.drop(pend)
    elif pend is not None and msg.method == "ACK":
        led.drop(pend)  # the ACK answered the offer in the 2xx, or never will
    led.change = change
    return change


def _sent_facts(ev: Event) -> SdpFacts | None:
    """The SDP of the event's message as its sender sent it."""
    msg = sent_message(ev.lm)
    # ev.sdp is the tracker's summary of ev.msg (the first captured copy).
    return facts_of(msg, ev.sdp if msg is ev.msg else None) or facts_of(ev.msg, ev.sdp)


def _received(lm: LogicalMessage, sent: SdpFacts) -> SdpFacts:
    """An offer as its answerer got it: the proxy's out-copy, when its body differs."""
    sent_msg, recv_msg = copies(lm)
    return sent if recv_msg is sent_msg else (facts_of(recv_msg) or sent)


def _offer_of(led: SdpLedger, tx: Transaction, toward: tuple[str, int]) -> PendingOffer | None:
    """The offer a request made, read back from its transaction (the initial INVITE's)."""
    pend = led.find(tx)
    if pend is not None or tx.offer_in != "request" or tx.request is None:
        return pend
    sent_msg, recv_msg = copies(tx.request, toward)
    sent = facts_of(sent_msg)
    if sent is None:
        return None
    received = sent if recv_msg is sent_msg else (facts_of(recv_msg) or sent)
    pend = PendingOffer(tx, tx.side, sent, received, tx.request.ref, in_response=False)
    pend.before = led.committed[tx.side]
    led.add(pend)
    return pend


def _apply(led: SdpLedger, ev: Event) -> SdpChange | None:
    msg = ev.msg
    tx = ev.tx
    assert tx is not None
    side = ev.side
    if msg.is_request:
        facts = _sent_facts(ev)
        if facts is None:
            return None
        method = msg.method
        if method == "ACK":
            pend = led.find(tx)
            if pend is not None and pend.in_response and not pend.answered and pend.side != side:
                return _answer(led, ev, pend, facts)
            return _repeat(led, ev, facts)
        if method == "PRACK":
            pend = next(
                (
                    p
                    for p in led.pending
                    if p.in_response and not p.answered and p.side != side and p.tx is not tx
                ),
                None,
            )
            if pend is not None:
                return _answer(led, ev, pend, facts)
        return _offer(led, ev, tx, facts, in_response=False)
    # A response: its sender answers the request's offer, makes a late offer, or repeats.
    pend = led.find(tx)
    if pend is None and tx.offer_in == "request":
        pend = _offer_of(led, tx, _sender_addr(ev.lm))
    facts = _sent_facts(ev)
    if facts is None:
        return None
    if pend is None and tx.offer_in == "request":
        return _repeat(led, ev, facts)  # the offer was not captured: no judgement
    if pend is None:
        return _offer(led, ev, tx, facts, in_response=True)
    if pend.in_response or pend.side == side or pend.answered:
        return _repeat(led, ev, facts)
    if ev.status < 200 and not reliable_1xx(msg):
        pend.early = (facts, None, ev.lm.ref)
        ch = SdpChange("early_answer", side, facts)
        ch.offer = pend
        _answer_checks(led, ch, pend, ev.lm.ref)
        return ch
    return _answer(led, ev, pend, facts)


def _sender_addr(lm: LogicalMessage) -> tuple[str, int]:
    return sent_and_delivered(lm)[0].src


def _offer(
    led: SdpLedger,
    ev: Event,
    tx: Transaction,
    facts: SdpFacts,
    in_response: bool,
) -> SdpChange:
    side = ev.side
    received = _received(ev.lm, facts)
    ch = SdpChange("offer", side, facts, received)
    before = led.committed[side]
    ch.before = before
    mask = led.legacy[side]
    ch.changes = diff(before, facts, mask)
    ref = ev.lm.ref
    _own_checks(led, ch, ref)
    prev = before or led.committed[other(side)]
    if prev is not None and len(facts.ports) < len(prev.ports):
        ch.violations.append(
            _violation(
                "mline_count_decreased",
                Severity.MEDIUM,
                side,
                [ref],
                None,
                prev,
                facts,
                offer_msg=ref,
                mlines_before=len(prev.ports),
                mlines_after=len(facts.ports),
                context="offer",
            )
        )
    held = []
    for i, port in enumerate(facts.ports):
        if not port or facts.addresses[i] != NULL_ADDR:
            mask &= ~(1 << i)
        elif (
            before is not None
            and i < len(before.ports)
            and before.ports[i]
            and before.addresses[i] not in (NULL_ADDR, "")
            and not facts.preconditions
        ):
            held.append(i)
            mask |= 1 << i
    if held:
        ch.violations.append(
            _violation(
                "hold_legacy_0000",
                Severity.LOW,
                side,
                [ref],
                held[0],
                before,
                facts,
                offer_msg=ref,
                held_streams=held,
            )
        )
    pend = PendingOffer(tx, side, facts, received, ref, in_response)
    pend.before = before
    pend.legacy = mask
    led.add(pend)
    led.sent[side] = facts
    return ch


def _answer(led: SdpLedger, ev: Event, pend: PendingOffer, facts: SdpFacts) -> SdpChange:
    ch = SdpChange("answer", ev.side, facts)
    if pend.early is None or pend.early[0].digest != facts.digest:
        _answer_checks(led, ch, pend, ev.lm.ref)  # a preview already checked is not again
    _commit(led, pend, ch, ev.lm.ref)
    return ch


def _repeat(led: SdpLedger, ev: Event, facts: SdpFacts) -> SdpChange:
    side = ev.side
    ch = SdpChange("repeat", side, facts)
    ch.before = led.committed[side]
    ch.changes = diff(ch.before, facts, led.legacy[side])
    _own_checks(led, ch, ev.lm.ref)
    led.sent[side] = facts
    return ch


def _commit(led: SdpLedger, pend: PendingOffer, ch: SdpChange, ref: str) -> None:
    """The answer `ch` completes `pend`: both SDPs become the session [3264 §4]."""
    answerer = ch.side
    offerer = pend.side
    ch.offer = pend
    ch.before = led.committed[answerer]
    ch.changes = diff(ch.before, ch.facts, led.legacy[answerer])
    _own_checks(led, ch, ref)
    led.committed[offerer] = pend.sent
    led.committed[answerer] = ch.facts
    led.sent[answerer] = ch.facts
    led.legacy[offerer] = pend.legacy
    neg = _negotiated(pend.received, ch.facts)
    old = led.negotiated
    if old is not None:
        ch.negotiated_changed = tuple(
            i
            for i in range(min(len(old), len(neg)))
            if old[i] is not None and neg[i] is not None and old[i] != neg[i]
        )
    led.negotiated = neg
    pend.answered = True
    if pend.in_response or pend.tx.completed:
        led.drop(pend)


def _answer_checks(led: SdpLedger, ch: SdpChange, pend: PendingOffer, ref: str) -> None:
    """Answer against its offer as the answerer received it [3264 §6, §8.4]."""
    offer, answer, side = pend.received, ch.facts, ch.side
    prior = led.committed[side]
    evidence = [pend.ref, ref]
    if len(answer.ports) < len(offer.ports):
        ch.violations.append(
            _violation(
                "mline_count_decreased",
                Severity.MEDIUM,
                side,
                evidence,
                None,
                offer,
                answer,
                offer_msg=pend.ref,
                answer_msg=ref,
                mlines_before=len(offer.ports),
                mlines_after=len(answer.ports),
                context="answer",
            )
        )
    n = min(len(offer.ports), len(answer.ports))
    found = _not_offered(offer, answer)
    if found is not None:
        i, extra = found
        ch.violations.append(
            _violation(
                "answer_codec_not_in_offer",
                Severity.MEDIUM,
                side,
                evidence,
                i,
                offer,
                answer,
                offer_msg=pend.ref,
                answer_msg=ref,
                codecs_not_offered=list(extra),
            )
        )
    if offer.preconditions or answer.preconditions or prior is None:
        return
    for i in range(n):
        if (
            offer.directions[i] == "sendonly"
            and offer.ports[i]
            and answer.ports[i]
            and answer.directions[i] in HELD_DIRS
            and i < len(prior.ports)
            and prior.receives(i)
        ):
            ch.violations.append(
                _violation(
                    "held_answered_with_held",
                    Severity.LOW,
                    side,
                    evidence,
                    i,
                    offer,
                    answer,
                    offer_msg=pend.ref,
                    answer_msg=ref,
                    answerer_direction_before=prior.directions[i],
                )
            )
            break


def _not_offered(offer: SdpFacts, answer: SdpFacts) -> tuple[int, tuple[str, ...]] | None:
    """The first stream live in both whose answer lists codecs the offer did not, and those
    codecs (by name; a bare dynamic number the offer listed counts as offered)."""
    if 0 in offer.ports or 0 in answer.ports:
        return _find_not_offered(offer, answer)
    key = (offer.codecs, offer.formats, answer.codecs, answer.formats)
    found = _NOT_OFFERED.get(key, _UNSET)
    if found is _UNSET:
        found = _find_not_offered(offer, answer)
        if len(_NOT_OFFERED) >= _PAIRS_MAX:
            _NOT_OFFERED.clear()
        _NOT_OFFERED[key] = found
    return found  # type: ignore[return-value]


def _find_not_offered(offer: SdpFacts, answer: SdpFacts) -> tuple[int, tuple[str, ...]] | None:
    for i in range(min(len(offer.ports), len(answer.ports))):
        if not offer.ports[i] or not answer.ports[i]:
            continue
        offered = set(offer.codecs[i])
        offered_fmts = set(offer.formats[i])
        extra = tuple(
            c
            for c, fmt in zip(answer.codecs[i], answer.formats[i], strict=False)
            if c not in offered and not (c == fmt.upper() and fmt in offered_fmts)
        )
        if extra:
            return i, extra
    return None


def _own_checks(led: SdpLedger, ch: SdpChange, ref: str) -> None:
    """A UA's SDP against its own previous ones: o= line and payload bindings [3264 §8]."""
    side, facts = ch.side, ch.facts
    sent, committed = led.sent[side], led.committed[side]
    base = sent or committed
    _pt_checks(led, ch, ref)
    if base is None:
        return
    if base.origin is not None and facts.origin is not None and base.origin != facts.origin:
        ch.violations.append(
            _violation(
                "sdp_origin_changed",
                Severity.MEDIUM,
                side,
                [ref],
                None,
                base,
                facts,
                origin_before=list(base.origin),
                origin_after=list(facts.origin),
            )
        )
        return
    v = facts.version
    bases = [b for b in (sent, committed) if b is not None and b.version is not None]
    if v is None or not bases:
        return
    for b in bases:
        assert b.version is not None
        if v == b.version + 1 or (v == b.version and facts.digest == b.digest):
            return
    same = next((b for b in bases if b.version == v), None)
    if same is not None:
        ch.violations.append(
            _violation(
                "sdp_version_not_incremented",
                Severity.MEDIUM,
                side,
                [ref],
                None,
                same,
                facts,
                differs_in=_differences(same, facts),
            )
        )
        return
    b = bases[0]
    assert b.version is not None
    ch.violations.append(
        _violation(
            "sdp_version_jump", Severity.LOW, side, [ref], None, b, facts, increment=v - b.version
        )
    )


def _pt_checks(led: SdpLedger, ch: SdpChange, ref: str) -> None:
    """Dynamic payload types keep their codec on a stream [3264 §8.3.2]: against the UA's
    previous SDP, on slots live in both and carrying the same media type."""
    side, facts = ch.side, ch.facts
    base = led.sent[side] or led.committed[side]
    if base is None:
        return
    for i, dyn in enumerate(facts.pts):
        if (
            not dyn
            or i >= len(base.ports)
            or not facts.ports[i]
            or not base.ports[i]
            or base.kinds[i] != facts.kinds[i]
        ):
            continue
        bound = dict(base.pts[i])
        remapped = [(pt, bound[pt], codec) for pt, codec in dyn if bound.get(pt, codec) != codec]
        if remapped:
            pt, old, new = remapped[0]
            ch.violations.append(
                _violation(
                    "pt_remapped",
                    Severity.MEDIUM,
                    side,
                    [ref],
                    i,
                    base,
                    facts,
                    payload_type=int(pt),
                    codec_before=old,
                    codec_after=new,
                    remapped=[list(r) for r in remapped],
                )
            )
            return


def _differences(a: SdpFacts, b: SdpFacts) -> list[str]:
    names = ("kinds", "ports", "addresses", "directions", "codecs", "pts")
    found = [n for n in names if getattr(a, n) != getattr(b, n)]
    return found or ["other_lines"]


def _violation(
    name: str,
    severity: Severity,
    side: int,
    evidence: list[str],
    i: int | None,
    before: SdpFacts | None,
    after: SdpFacts,
    offer_msg: str = "",
    answer_msg: str = "",
    **extra: Any,
) -> Violation:
    """A violation with C.11's fields filled from the two SDPs compared."""
    j = 0 if i is None else i

    def at(f: SdpFacts | None, attr: str) -> Any:
        if f is None:
            return None
        values = getattr(f, attr)
        return values[j] if j < len(values) else None

    cb, ca = at(before, "codecs"), at(after, "codecs")
    fields: dict[str, Any] = {
        "media_index": i,
        "direction_before": at(before, "directions"),
        "direction_after": at(after, "directions"),
        "conn_addr_before": at(before, "addresses"),
        "conn_addr_after": at(after, "addresses"),
        "codecs_before": list(cb) if cb is not None else [],
        "codecs_after": list(ca) if ca is not None else [],
        "o_version_before": before.version if before is not None else None,
        "o_version_after": after.version,
        "offer_msg": offer_msg,
        "answer_msg": answer_msg,
    }
    fields.update(extra)
    return Violation(name, severity, side, evidence, fields)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpChangeDetector(Detector):
    """Emits the C.11 violations (and hold_legacy_0000) the ledger finds."""

    name: ClassVar[str] = "sdp_changes"
    family: ClassVar[str] = "C.11"

    def on_event(self, ev: Event, out: Output) -> None:
        change = observe(ev)
        if change is None or not change.violations or ev.proxy_generated:
            return
        for v in change.violations:
            out.anomaly(
                v.name,
                v.severity,
                self.family,
                call=ev.call,
                lm=ev.lm,
                dialog=ev.dialog,
                side=v.side,
                evidence=v.evidence,
                **v.fields,
            )


DETECTOR = SdpChangeDetector
