"""C.12 second stage: link the legs of a B2BUA/SBC and compare what each leg did.

`LegCorrelator` is sans-I/O: `feed(LegRecord)` returns the anomalies that became final,
`advance_to(ts)` moves its stream time, `flush()` ends the input. `correlate(records)` runs it
over an engine's records (offline analysis).

Linking (PROTOCOL.md C.12, B.13, A.11). Keys in priority order (configurable): the HEP
correlation id (chunk 0x0011, equal on both legs), the RFC 7989 Session-ID (the session is
the unordered UUID pair; intermediaries pass it through [7989 §4, §7]: legs sharing a UUID
are linked, two full pairs must be equal), X-CID (on the B-leg, the A-leg's Call-ID), the
RFC 7315 icid-value. The first key that matches names the link (`correlation_method`, score
1.0, lowered when another key disagrees). Only for legs with no standard link: a heuristic
(same From user and To/R-URI user, the B-leg's initial INVITE within `heuristic_window_ms`
of the A-leg's through the same node; scored higher when closer in time, when the users
match exactly rather than by their last digits, and when the A-leg's answerer is the
address that sent the B-leg's INVITE), refused below `min_heuristic_score`, when a rival
is about as good (an existing heuristic link is undone then), or when any standard key the
two legs carry contradicts it. A leg never links to a leg with its own Call-ID (the
same leg captured at another node); of several copies of one leg, the same-node one wins.
The A-leg is the one the other's X-CID names, else the one whose INVITE came first.

Pairing. A re-INVITE/UPDATE on one leg and one on a linked leg are the same modification
when they are within `window_ms`, flow the same way (the side index is the same on both
legs: the B2BUA is the callee of the A-leg and the caller of the B-leg), the endpoint's one
comes first, and either both carry a changed SDP offer or the B2BUA's exchange is nested in
the endpoint's (its final response comes no later): a relaying B2BUA answers only after the
far leg did. That nesting test is what tells a relayed refresh from the B2BUA's own
refreshes, which B2BUAs send on their own schedule [RFC 4028 §7.2, PROTOCOL.md C.8 traps].
A request is decided once stream time passes max(request + window, its final) + `lateness_ms`
(records of other partitions arrive late), or request + `final_wait_ms` without a final.

Anomalies (family C.12; fields leg_a_call_id, leg_b_call_id, correlation_method,
correlation_score, leg_a_method, leg_b_method, translation_delay_ms):
- `update_to_reinvite` / `reinvite_to_update` (info): the modification changed method
  between the legs [RFC 3311 §5.1 vs RFC 3261 §14]; fired on the B2BUA's request.
- `update_absorbed` (low for a direction, codec or stream change, else info): an endpoint's
  UPDATE with a changed offer answered 2xx by the B2BUA, with no re-INVITE/UPDATE on any
  linked leg within the window.
- `update_stripped_from_allow` (low): UPDATE in the Allow of the INVITE (A-leg) or of the
  answer (B-leg), missing from a present Allow in the relayed one [RFC 3311 §4; RFC 3261
  §20.5: an absent Allow says nothing].
- `timer_terminated_locally` (info): the B2BUA answered an endpoint's session refresh itself
  on one leg and the other leg had its own, unrelayed refresh [RFC 4028 §7.2, §9].

Absence is never claimed past the end of the input (`flush`), from a proxy-generated final,
or about an endpoint whose side is unknown (capture started mid-call on that leg, C.0 rule
6). Memory: at most `max_legs` legs (oldest evicted), idle legs expire after `leg_idle_s`,
events per leg and legs per key are capped; every drop is counted in `stats`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable

from consumers.legs.summary import CHANGE, LATE_OFFER, REFRESH
from consumers.record_ids import record_id
from consumers.records import (
    AnomalyRecord,
    DialogRecord,
    LegRecord,
    MessageRecord,
    Record,
    SessionChangeRecord,
    Severity,
)
from consumers.value import InterpretedValue

FAMILY = "C.12"
CALLER = 0
CALLEE = 1
KEY_TYPES = ("hep_cid", "session_id", "x_cid", "icid")
HEURISTIC = "heuristic"
_VISIBLE_CHANGES = ("streams", "direction", "codecs", "new")
_SEP = "\x1f"

LegKey = tuple[str, str]  # (node, call_id)
_Rank = tuple[bool, bool, bool, int, float]


class LegCorrelatorConfig(InterpretedValue):
    FIELDS = (
        "window_ms",
        "lateness_ms",
        "final_wait_ms",
        "tolerance_ms",
        "same_node_tolerance_ms",
        "keys",
        "heuristics",
        "heuristic_window_ms",
        "min_heuristic_score",
        "heuristic_ambiguity",
        "max_legs",
        "leg_idle_s",
        "setup_keep_s",
        "max_events_per_leg",
        "max_legs_per_key",
    )
    __slots__ = FIELDS

    def __init__(
        self,
        window_ms: int = 1500,  # longest request-to-relay gap between legs
        lateness_ms: int = 2000,  # how late another partition's records may arrive
        final_wait_ms: int = 34_000,  # decide a request without final after this (64*T1 + margin)
        tolerance_ms: int = 100,  # clock tolerance between nodes (C.0 rule 8)
        same_node_tolerance_ms: int = 1,  # one node, one clock
        keys: tuple[str, ...] = KEY_TYPES,  # standard keys, highest priority first
        heuristics: bool = True,
        heuristic_window_ms: int = 1000,
        min_heuristic_score: float = 0.6,
        heuristic_ambiguity: float = 0.15,  # a runner-up this close makes a heuristic ambiguous
        max_legs: int = 500_000,
        leg_idle_s: float = 7200.0,
        setup_keep_s: float = 60.0,  # setup facts (Allow) are kept this long to compare legs
        max_events_per_leg: int = 16,
        max_legs_per_key: int = 32,
    ) -> None:
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.final_wait_ms = final_wait_ms
        self.tolerance_ms = tolerance_ms
        self.same_node_tolerance_ms = same_node_tolerance_ms
        self.keys = keys
        self.heuristics = heuristics
        self.heuristic_window_ms = heuristic_window_ms
        self.min_heuristic_score = min_heuristic_score
        self.heuristic_ambiguity = heuristic_ambiguity
        self.max_legs = max_legs
        self.leg_idle_s = leg_idle_s
        self.setup_keep_s = setup_keep_s
        self.max_events_per_leg = max_events_per_leg
        self.max_legs_per_key = max_legs_per_key


class LegCorrelatorStats(InterpretedValue):
    FIELDS = (
        "records",
        "legs_seen",
        "links",
        "expired",
        "evicted",
        "events_dropped",
        "key_overflow",
        "heuristic_ambiguous",
        "heuristic_contradicted",
        "unmatched_finals",
        "duplicates",
        "anomalies",
    )
    __slots__ = FIELDS

    def __init__(
        self,
        records: int = 0,
        legs_seen: int = 0,
        links: dict[str, int] | None = None,  # correlation method -> links made
        expired: int = 0,  # idle legs forgotten
        evicted: int = 0,  # legs dropped over the cap
        events_dropped: int = 0,  # undecided requests dropped over the per-leg cap
        key_overflow: int = 0,  # legs dropped from a key's index over the per-key cap
        heuristic_ambiguous: int = 0,
        heuristic_contradicted: int = 0,
        unmatched_finals: int = 0,
        duplicates: int = 0,  # redelivered facts
        anomalies: dict[str, int] | None = None,
    ) -> None:
        self.records = records
        self.legs_seen = legs_seen
        self.links: dict[str, int] = {} if links is None else links
        self.expired = expired
        self.evicted = evicted
        self.events_dropped = events_dropped
        self.key_overflow = key_overflow
        self.heuristic_ambiguous = heuristic_ambiguous
        self.heuristic_contradicted = heuristic_contradicted
        self.unmatched_finals = unmatched_finals
        self.duplicates = duplicates
        self.anomalies: dict[str, int] = {} if anomalies is None else anomalies


class _Link:
    __slots__ = ("a", "b", "fired", "method", "score")

    def __init__(self, a: LegKey, b: LegKey, method: str, score: float) -> None:
        self.a = a  # the A-leg (towards the call's originator)
        self.b = b
        self.method = method
        self.score = score
        self.fired: set[str] = set()

    def other(self, key: LegKey) -> LegKey:
        return self.b if key == self.a else self.a

    def role(self, key: LegKey) -> str:
        return "a" if key == self.a else "b"


class _Leg:
    __slots__ = (
        "by_tx",
        "call_id",
        "callee_ip",
        "caller_ip",
        "events",
        "first_t",
        "from_user",
        "hep",
        "icid",
        "index_keys",
        "invite_t",
        "key",
        "last_seen",
        "links",
        "node",
        "owner_known",
        "refreshes",
        "setup",
        "sids",
        "to_users",
        "x_cid",
    )

    def __init__(self, key: LegKey, t: int) -> None:
        self.key = key
        self.node, self.call_id = key
        self.hep = ""
        self.x_cid = ""
        self.sids: frozenset[str] = frozenset()
        self.icid = ""
        self.from_user = ""
        self.to_users: tuple[str, ...] = ()
        self.invite_t = 0
        self.caller_ip = ""  # who sent the initial INVITE
        self.callee_ip = ""  # who answered it
        self.first_t = t
        self.last_seen = t
        self.owner_known = False
        self.setup: LegRecord | None = None
        self.links: dict[LegKey, _Link] = {}
        self.events: list[_Ev] = []
        self.by_tx: dict[tuple[int, int, str], _Ev] = {}
        self.refreshes: deque[_Ev] = deque(maxlen=4)  # unrelayed, successful refreshes
        self.index_keys: list[str] = []

    def standard_links(self) -> bool:
        return any(link.method != HEURISTIC for link in self.links.values())

    def start(self) -> int:
        return self.invite_t or self.first_t


class _Ev:
    """One re-INVITE/UPDATE on a leg, with its final response when it came."""

    __slots__ = ("deadline", "decided", "final", "leg", "partner", "rec", "side", "t")

    def __init__(self, leg: _Leg, rec: LegRecord) -> None:
        self.leg = leg
        self.rec = rec
        self.t = rec.event_time_us
        self.side = _side(rec.direction)
        self.final: LegRecord | None = None
        self.deadline = 0
        self.decided = False
        self.partner: _Ev | None = None

    @property
    def method(self) -> str:
        return self.rec.method

    @property
    def purpose(self) -> str:
        return self.rec.purpose


class LegCorrelator:
    follow_facts = True  # instance attribute; this default serves pickles made before it

    def __init__(
        self, config: LegCorrelatorConfig | None = None, *, follow_facts: bool = True
    ) -> None:
        self.config = config or LegCorrelatorConfig()
        self.stats = LegCorrelatorStats()
        # Stream time: the newest emission time seen, or with follow_facts False only what
        # advance_to says (the Kafka stage moves it by the first stage's stream marks).
        self.now = 0
        self.follow_facts = follow_facts
        self.legs: OrderedDict[LegKey, _Leg] = OrderedDict()
        self.index: dict[str, list[LegKey]] = {}
        self._due: list[tuple[int, int, _Ev]] = []
        self._seq = 0
        self._setups: deque[tuple[int, _Leg, LegRecord]] = deque()
        self._out: list[AnomalyRecord] = []

    # -- input -----------------------------------------------------------------------------

    def feed(self, rec: LegRecord) -> list[AnomalyRecord]:
        self.stats.records += 1
        if self.follow_facts:
            self.now = max(self.now, rec.detected_at_us)
        leg = self._leg_for(rec)
        if rec.fact == "request":
            self._on_request(leg, rec)
        elif rec.fact == "final":
            self._on_final(leg, rec)
        return self._run()

    def advance_to(self, ts_us: int) -> list[AnomalyRecord]:
        """Raise stream time (an idle input follows the wall clock or the first stage)."""
        self.now = max(self.now, ts_us)
        return self._run()

    def flush(self) -> list[AnomalyRecord]:
        """End of input: decide every open request; no absence is claimed past the end."""
        end = self.now
        pending = sorted(
            (ev for _, _, ev in self._due if not ev.decided and self._alive(ev.leg)),
            key=lambda ev: (ev.deadline, ev.t),
        )
        self._due.clear()
        for ev in pending:
            if not ev.decided:
                self._decide(ev, end)
        return self._take()

    def __len__(self) -> int:
        return len(self.legs)

    # -- legs, keys, links -----------------------------------------------------------------

    def _leg_for(self, rec: LegRecord) -> _Leg:
        key = (rec.node, rec.call_id)
        leg = self.legs.get(key)
        new = leg is None
        if leg is None:
            leg = self.legs[key] = _Leg(key, rec.event_time_us)
            self.stats.legs_seen += 1
        else:
            self.legs.move_to_end(key)
        leg.last_seen = max(leg.last_seen, rec.detected_at_us)
        leg.first_t = min(leg.first_t, rec.event_time_us)
        leg.owner_known = rec.owner_known
        changed = self._merge_keys(leg, rec)
        setup_new = False
        if rec.fact == "setup" and leg.setup is None and not leg.invite_t:
            leg.setup = rec
            self._setups.append((rec.detected_at_us, leg, rec))
            setup_new = True
            if rec.invite_time_us:
                leg.invite_t = rec.invite_time_us
                leg.from_user = rec.from_user.lower()
                users = {u.lower() for u in (rec.to_user, rec.ruri_user) if u}
                leg.to_users = tuple(sorted(users))
                leg.caller_ip = rec.invite_src_ip
                leg.callee_ip = rec.src_ip if _is_answer(rec) else ""
        if new or changed or setup_new:
            self._index(leg)
            self._link(leg)
        if setup_new:
            for link in list(leg.links.values()):
                self._check_allow(link)
        return leg

    def _merge_keys(self, leg: _Leg, rec: LegRecord) -> bool:
        changed = False
        if rec.hep_correlation_id and not leg.hep:
            leg.hep = rec.hep_correlation_id
            changed = True
        if rec.x_cid and rec.x_cid != rec.call_id and not leg.x_cid:
            leg.x_cid = rec.x_cid
            changed = True
        if rec.session_id_pair:
            sids = leg.sids | frozenset(u for u in rec.session_id_pair.split(",") if u)
            if sids != leg.sids and len(sids) <= 4:
                leg.sids = sids
                changed = True
        if rec.icid and not leg.icid:
            leg.icid = rec.icid
            changed = True
        return changed

    def _index_keys(self, leg: _Leg) -> list[str]:
        keys = [f"o{_SEP}{leg.call_id}"]
        if leg.hep:
            keys.append(f"h{_SEP}{leg.hep}")
        keys += [f"s{_SEP}{u}" for u in sorted(leg.sids)]
        if leg.x_cid:
            keys.append(f"r{_SEP}{leg.x_cid}")
        if leg.icid:
            keys.append(f"i{_SEP}{leg.icid}")
        if leg.invite_t and leg.from_user:
            keys += [f"u{_SEP}{leg.node}{_SEP}{_norm_user(u)}" for u in leg.to_users]
        return keys

    def _index(self, leg: _Leg) -> None:
        cap = self.config.max_legs_per_key
        for k in self._index_keys(leg):
            if k in leg.index_keys:
                continue
            legs = self.index.setdefault(k, [])
            legs.append(leg.key)
            leg.index_keys.append(k)
            if len(legs) > cap:
                dropped = self.legs.get(legs.pop(0))
                self.stats.key_overflow += 1
                if dropped is not None and k in dropped.index_keys:
                    dropped.index_keys.remove(k)

    def _unindex(self, leg: _Leg) -> None:
        for k in leg.index_keys:
            legs = self.index.get(k)
            if legs is None:
                continue
            if leg.key in legs:
                legs.remove(leg.key)
            if not legs:
                del self.index[k]
        leg.index_keys = []

    def _lookup(self, kind: str, leg: _Leg) -> list[LegKey]:
        idx = self.index
        if kind == "hep_cid":
            return list(idx.get(f"h{_SEP}{leg.hep}", ())) if leg.hep else []
        if kind == "session_id":
            return [k for u in sorted(leg.sids) for k in idx.get(f"s{_SEP}{u}", ())]
        if kind == "x_cid":
            found = list(idx.get(f"r{_SEP}{leg.call_id}", ()))
            if leg.x_cid:
                found += idx.get(f"o{_SEP}{leg.x_cid}", ())
            return found
        if kind == "icid":
            return list(idx.get(f"i{_SEP}{leg.icid}", ())) if leg.icid else []
        return []

    def _link(self, leg: _Leg) -> None:
        found: dict[LegKey, tuple[str, float]] = {}
        for kind in self.config.keys:
            for key in self._lookup(kind, leg):
                if key in found or key == leg.key:
                    continue
                m = self.legs.get(key)
                if m is None or m.call_id == leg.call_id:
                    continue
                score = _match(kind, leg, m)
                if score > 0:
                    if [c for c in _contradictions(leg, m) if c != kind]:
                        score *= 0.8
                    found[key] = (kind, score)
        if any(k[0] == leg.node for k in found):
            found = {k: v for k, v in found.items() if k[0] == leg.node}
        for key, (kind, score) in found.items():
            m = self.legs[key]
            if not self._copy_ok(leg, m):
                continue
            self._drop_heuristic(leg)
            self._drop_heuristic(m)
            link = leg.links.get(key)
            if link is None:
                self._add_link(leg, m, kind, score)
            elif link.method == HEURISTIC or (
                self.config.keys.index(kind) < self.config.keys.index(link.method)
            ):
                link.method, link.score = kind, score
        if not leg.standard_links():
            self._link_heuristic(leg)

    def _copy_ok(self, leg: _Leg, m: _Leg) -> bool:
        """Link `m` to at most one copy of a Call-ID (C.0: one leg seen by several nodes)."""
        copies = [k for k in m.links if k[1] == leg.call_id and k != leg.key]
        if not copies:
            return True
        if leg.node == m.node:
            for k in copies:
                self._drop_link(m.key, k)
            return True
        return False

    def _link_heuristic(self, leg: _Leg) -> None:
        cfg = self.config
        if not cfg.heuristics or not leg.invite_t or not leg.from_user or not leg.to_users:
            return
        window = cfg.heuristic_window_ms * 1000
        mine = {_norm_user(u) for u in leg.to_users}
        scored: dict[LegKey, float] = {}
        contested: list[_Link] = []
        for u in sorted(mine):
            for key in self.index.get(f"u{_SEP}{leg.node}{_SEP}{u}", ()):
                m = self.legs.get(key)
                if m is None or key == leg.key or key in scored or m.call_id == leg.call_id:
                    continue
                if m.standard_links():
                    continue
                dt = abs(m.invite_t - leg.invite_t)
                if not m.invite_t or dt > window:
                    continue
                if _norm_user(m.from_user) != _norm_user(leg.from_user):
                    continue
                theirs = {_norm_user(x) for x in m.to_users}
                if not mine & theirs:
                    continue
                if _contradictions(leg, m):
                    self.stats.heuristic_contradicted += 1
                    continue
                exact = m.from_user == leg.from_user and bool(set(m.to_users) & set(leg.to_users))
                a, b = (leg, m) if leg.invite_t <= m.invite_t else (m, leg)
                via_box = bool(a.callee_ip) and a.callee_ip == b.caller_ip
                score = 0.4 + 0.1 * exact + 0.3 * (1 - dt / window) + 0.2 * via_box
                taken = [lk for k, lk in m.links.items() if k != leg.key]
                if taken:
                    # m is paired already; a rival this close makes that pairing a guess
                    contested += [lk for lk in taken if score >= lk.score - cfg.heuristic_ambiguity]
                    continue
                scored[key] = score
        if contested:
            for lk in dict.fromkeys(contested):
                self._drop_link(lk.a, lk.b)
                self.stats.heuristic_ambiguous += 1
            return
        if not scored:
            return
        ranked = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))
        best_key, best = ranked[0]
        if len(ranked) > 1 and ranked[1][1] >= best - cfg.heuristic_ambiguity:
            self.stats.heuristic_ambiguous += 1
            return
        if best < cfg.min_heuristic_score or best_key in leg.links:
            return
        self._add_link(leg, self.legs[best_key], HEURISTIC, round(best, 3))

    def _add_link(self, leg: _Leg, m: _Leg, method: str, score: float) -> None:
        a, b = _roles(leg, m)
        link = _Link(a.key, b.key, method, score)
        leg.links[m.key] = link
        m.links[leg.key] = link
        self.stats.links[method] = self.stats.links.get(method, 0) + 1
        self._check_allow(link)

    def _drop_heuristic(self, leg: _Leg) -> None:
        for key, link in list(leg.links.items()):
            if link.method == HEURISTIC:
                self._drop_link(leg.key, key)

    def _drop_link(self, k1: LegKey, k2: LegKey) -> None:
        for a, b in ((k1, k2), (k2, k1)):
            leg = self.legs.get(a)
            if leg is not None:
                leg.links.pop(b, None)

    def _remove_leg(self, leg: _Leg) -> None:
        del self.legs[leg.key]
        self._unindex(leg)
        for key in list(leg.links):
            self._drop_link(leg.key, key)
        leg.events.clear()
        leg.by_tx.clear()

    def _alive(self, leg: _Leg) -> bool:
        return self.legs.get(leg.key) is leg

    # -- requests and finals ---------------------------------------------------------------

    def _on_request(self, leg: _Leg, rec: LegRecord) -> None:
        tx = (_side(rec.direction), rec.cseq, rec.method)
        if tx in leg.by_tx:
            self.stats.duplicates += 1
            return
        ev = _Ev(leg, rec)
        leg.events.append(ev)
        leg.by_tx[tx] = ev
        self._prune(leg)
        self._schedule(ev)

    def _on_final(self, leg: _Leg, rec: LegRecord) -> None:
        ev = leg.by_tx.get((1 - _side(rec.direction), rec.cseq, rec.method))
        if ev is None:
            self.stats.unmatched_finals += 1
            return
        if ev.final is not None:
            self.stats.duplicates += 1
            return
        ev.final = rec
        if not ev.decided:
            self._schedule(ev)

    def _schedule(self, ev: _Ev) -> None:
        cfg = self.config
        if ev.final is not None:
            due = max(ev.t + cfg.window_ms * 1000, ev.final.event_time_us)
        else:
            due = ev.t + cfg.final_wait_ms * 1000
        ev.deadline = due + cfg.lateness_ms * 1000
        self._seq += 1
        heapq.heappush(self._due, (ev.deadline, self._seq, ev))

    def _prune(self, leg: _Leg) -> None:
        cfg = self.config
        horizon = self.now - (cfg.window_ms + cfg.final_wait_ms + 2 * cfg.lateness_ms) * 1000
        events = leg.events
        while events and (
            len(events) > cfg.max_events_per_leg or (events[0].decided and events[0].t < horizon)
        ):
            old = events.pop(0)
            if not old.decided:
                old.decided = True
                self.stats.events_dropped += 1
            leg.by_tx.pop((old.side, old.rec.cseq, old.rec.method), None)

    def _run(self) -> list[AnomalyRecord]:
        due = self._due
        while due and due[0][0] <= self.now:
            deadline, _, ev = heapq.heappop(due)
            if ev.decided or ev.deadline != deadline or not self._alive(ev.leg):
                continue
            self._decide(ev, None)
        self._expire()
        return self._take()

    def _expire(self) -> None:
        cfg = self.config
        idle = int(cfg.leg_idle_s * 1e6)
        while self.legs:
            leg = next(iter(self.legs.values()))
            if leg.last_seen + idle > self.now:
                break
            self._remove_leg(leg)
            self.stats.expired += 1
        while len(self.legs) > cfg.max_legs:
            self._remove_leg(next(iter(self.legs.values())))
            self.stats.evicted += 1
        keep = int(cfg.setup_keep_s * 1e6)
        setups = self._setups
        while setups and setups[0][0] + keep <= self.now:
            _, leg, rec = setups.popleft()
            if leg.setup is rec:
                leg.setup = None

    def _take(self) -> list[AnomalyRecord]:
        out, self._out = self._out, []
        return out

    # -- decisions -------------------------------------------------------------------------

    def _tolerance(self, x: _Leg, y: _Leg) -> int:
        cfg = self.config
        ms = cfg.same_node_tolerance_ms if x.node == y.node else cfg.tolerance_ms
        return ms * 1000

    def _decide(self, ev: _Ev, end: int | None) -> None:
        ev.decided = True
        if ev.partner is not None:
            return
        leg = ev.leg
        best: tuple[_Rank, _Link, _Ev, _Ev, bool, bool] | None = None
        for link in leg.links.values():
            other = self.legs.get(link.other(leg.key))
            if other is None:
                continue
            for f in other.events:
                if f.partner is not None or f.decided or f is ev:
                    continue  # paired, or found unrelayed already: decisions are final
                cand = self._pairing(link, ev, f)
                if cand is not None and (best is None or cand[0] > best[0]):
                    best = cand
        if best is not None:
            _, link, origin, trans, nested, known = best
            origin.partner, trans.partner = trans, origin
            if origin.method != trans.method:
                self._translated(link, origin, trans, nested, known)
            return
        self._unpaired(ev, end)

    def _pairing(
        self, link: _Link, e: _Ev, f: _Ev
    ) -> tuple[_Rank, _Link, _Ev, _Ev, bool, bool] | None:
        tol = self._tolerance(e.leg, f.leg)
        dt = f.t - e.t
        if abs(dt) > self.config.window_ms * 1000 + tol:
            return None
        known = e.leg.owner_known and f.leg.owner_known
        if known:
            if e.side != f.side:
                return None
            origin, trans = (e, f) if _ua_sent(link, e.leg.key, e.side) else (f, e)
            if trans.t < origin.t - tol:
                return None  # the B2BUA's request came first: not a relay of the endpoint's
        else:
            origin, trans = (e, f) if e.t <= f.t else (f, e)
        nested = _nested(origin, trans, tol)
        if not nested and not (origin.purpose == CHANGE and trans.purpose == CHANGE):
            return None
        # the relay that got through wins (an SBC may retry a refused UPDATE as re-INVITE),
        # then the same method, then nesting, then the closest in time
        final = trans.final
        reached = final is not None and 200 <= final.status < 300
        rank = (reached, origin.method == trans.method, nested, -abs(dt), link.score)
        return rank, link, origin, trans, nested, known

    def _translated(self, link: _Link, origin: _Ev, trans: _Ev, nested: bool, known: bool) -> None:
        name = "update_to_reinvite" if origin.method == "UPDATE" else "reinvite_to_update"
        conf = link.score * (1.0 if known else 0.8) * (1.0 if nested else 0.9)
        self._emit(
            name,
            Severity.INFO,
            trans.rec,
            link,
            evidence=[origin.rec.ref, trans.rec.ref],
            confidence=conf,
            methods={
                link.role(origin.leg.key): origin.method,
                link.role(trans.leg.key): trans.method,
            },
            delay_us=trans.t - origin.t,
            origin_leg=link.role(origin.leg.key),
            purpose=origin.purpose,
            translated_purpose=trans.purpose,
            nested=nested,
        )

    def _unpaired(self, ev: _Ev, end: int | None) -> None:
        final = ev.final
        if final is None or not 200 <= final.status < 300 or final.answered_by != "peer":
            return
        if end is not None and ev.t + self.config.window_ms * 1000 > end:
            return  # the input ended inside the window: the relay may just not be in it
        leg = ev.leg
        links = [
            (link, other)
            for link in leg.links.values()
            if (other := self.legs.get(link.other(leg.key))) is not None
        ]
        if not links:
            return
        if ev.purpose == CHANGE and ev.method == "UPDATE":
            self._absorbed(ev, links)
        elif ev.purpose in (REFRESH, LATE_OFFER):
            self._local_refresh(ev, links)

    def _absorbed(self, ev: _Ev, links: list[tuple[_Link, _Leg]]) -> None:
        leg = ev.leg
        final = ev.final
        if not leg.owner_known or final is None:
            return
        hi = max(ev.t + self.config.window_ms * 1000, final.event_time_us)
        usable: list[_Link] = []
        for link, other in links:
            lo = ev.t - self._tolerance(leg, other)
            if any(lo <= f.t <= hi for f in other.events):
                return  # the linked leg did something meanwhile: not a clear absorption
            if _ua_sent(link, leg.key, ev.side) and other.start() <= ev.t:
                usable.append(link)
        if not usable:
            return
        link = max(usable, key=lambda lk: lk.score)
        change = ev.rec.sdp_change
        self._emit(
            "update_absorbed",
            Severity.LOW if change in _VISIBLE_CHANGES else Severity.INFO,
            final,
            link,
            evidence=[ev.rec.ref, final.ref],
            confidence=link.score,
            methods={link.role(leg.key): "UPDATE"},
            delay_us=None,
            sdp_change=change,
            response_ms=final.response_ms,
        )

    def _local_refresh(self, ev: _Ev, links: list[tuple[_Link, _Leg]]) -> None:
        leg = ev.leg
        final = ev.final
        leg.refreshes.append(ev)
        if final is None:
            return
        for link, other in links:
            if "timer" in link.fired or not other.refreshes:
                continue
            mine_ua = leg.owner_known and _ua_sent(link, leg.key, ev.side)
            for r in other.refreshes:
                theirs_ua = other.owner_known and _ua_sent(link, other.key, r.side)
                if not (mine_ua or theirs_ua):
                    continue
                link.fired.add("timer")
                self._emit(
                    "timer_terminated_locally",
                    Severity.INFO,
                    final if mine_ua else ev.rec,
                    link,
                    evidence=[r.rec.ref, ev.rec.ref, final.ref],
                    confidence=link.score,
                    methods={link.role(leg.key): ev.method, link.role(other.key): r.method},
                    delay_us=None,
                    answered_locally_on=link.role(leg.key if mine_ua else other.key),
                    session_expires=ev.final.session_expires if ev.final else None,
                )
                break

    def _check_allow(self, link: _Link) -> None:
        a, b = self.legs.get(link.a), self.legs.get(link.b)
        if a is None or b is None or a.setup is None or b.setup is None:
            return
        if not (a.owner_known and b.owner_known):
            return
        sa, sb = a.setup, b.setup
        if (
            "allow_invite" not in link.fired
            and sa.invite_ref
            and sb.invite_ref
            and _has_update(sa.caller_allow)
            and _lacks_update(sb.caller_allow)
        ):
            link.fired.add("allow_invite")
            self._emit(
                "update_stripped_from_allow",
                Severity.LOW,
                _invite_view(sb),
                link,
                evidence=[sa.invite_ref, sb.invite_ref],
                confidence=link.score,
                methods={"a": "INVITE", "b": "INVITE"},
                delay_us=sb.invite_time_us - sa.invite_time_us,
                stripped_in="invite",
                allow_a=",".join(sa.caller_allow or ()),
                allow_b=",".join(sb.caller_allow or ()),
            )
        if (
            "allow_answer" not in link.fired
            and _is_answer(sa)
            and _is_answer(sb)
            and (sa.status >= 200) == (sb.status >= 200)
            and _has_update(sb.callee_allow)
            and _lacks_update(sa.callee_allow)
        ):
            link.fired.add("allow_answer")
            self._emit(
                "update_stripped_from_allow",
                Severity.LOW,
                sa,
                link,
                evidence=[sb.ref, sa.ref],
                confidence=link.score,
                methods={"a": "INVITE", "b": "INVITE"},
                delay_us=sa.event_time_us - sb.event_time_us,
                stripped_in="answer",
                allow_a=",".join(sa.callee_allow or ()),
                allow_b=",".join(sb.callee_allow or ()),
            )

    # -- output ----------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        severity: Severity,
        trig: LegRecord,
        link: _Link,
        *,
        evidence: list[str],
        confidence: float,
        methods: dict[str, str],
        delay_us: int | None,
        **extra: object,
    ) -> None:
        leg = self.legs.get((trig.node, trig.call_id))
        side = _side(trig.direction)
        owner = "unknown"
        if trig.owner_known:
            owner = "self" if side == CALLER else "peer"
        fields: dict[str, object] = {
            "leg_a_call_id": link.a[1],
            "leg_b_call_id": link.b[1],
            "correlation_method": link.method,
            "correlation_score": round(link.score, 3),
            "leg_a_method": methods.get("a", ""),
            "leg_b_method": methods.get("b", ""),
            "translation_delay_ms": round(delay_us / 1000, 3) if delay_us is not None else None,
        }
        fields.update(extra)
        refs = list(dict.fromkeys(evidence))
        rec = AnomalyRecord(
            id=record_id(FAMILY, name, trig.node, trig.call_id, *refs),
            anomaly=name,
            severity=str(severity),
            confidence=round(confidence, 3),
            event_time_us=trig.event_time_us,
            detected_at_us=max(self.now, trig.event_time_us),
            node=trig.node,
            capture_id=trig.capture_id,
            call_id=trig.call_id,
            caller_tag=trig.caller_tag,
            callee_tag=trig.callee_tag,
            dialog_state=trig.dialog_state,
            direction=trig.direction,
            method=trig.method,
            cseq=trig.cseq,
            status=trig.status,
            reason="",
            src_ip=trig.src_ip,
            src_port=trig.src_port,
            dst_ip=trig.dst_ip,
            dst_port=trig.dst_port,
            transport=trig.transport,
            ua_sender=trig.ua_sender,
            ua_peer=trig.ua_peer,
            hep_correlation_id=(leg.hep if leg else "") or trig.hep_correlation_id,
            x_cid=(leg.x_cid if leg else "") or trig.x_cid,
            session_id_pair=",".join(sorted(leg.sids)) if leg else trig.session_id_pair,
            icid=(leg.icid if leg else "") or trig.icid,
            call_id_owner=owner,
            family=FAMILY,
            evidence=refs,
            fields=fields,
        )
        self._out.append(rec)
        self.stats.anomalies[name] = self.stats.anomalies.get(name, 0) + 1


# -- helpers ---------------------------------------------------------------------------------


def _side(direction: str) -> int:
    return CALLER if direction == "caller_to_callee" else CALLEE


def _ua_sent(link: _Link, key: LegKey, side: int) -> bool:
    """Sent by the endpoint of that leg (not the B2BUA): the A-leg caller, the B-leg callee."""
    return (side == CALLER) == (link.role(key) == "a")


def _nested(outer: _Ev, inner: _Ev, tol: int) -> bool:
    """The inner exchange ended no later than the outer one: the B2BUA waited for it."""
    if inner.final is None:
        return False
    return outer.final is None or inner.final.event_time_us <= outer.final.event_time_us + tol


def _roles(x: _Leg, y: _Leg) -> tuple[_Leg, _Leg]:
    if y.x_cid and y.x_cid == x.call_id:
        return x, y
    if x.x_cid and x.x_cid == y.call_id:
        return y, x
    if x.start() != y.start():
        return (x, y) if x.start() < y.start() else (y, x)
    return (x, y) if x.call_id <= y.call_id else (y, x)


def _match(kind: str, x: _Leg, y: _Leg) -> float:
    if kind == "hep_cid":
        return 1.0 if x.hep and x.hep == y.hep else 0.0
    if kind == "session_id":
        if not x.sids or not y.sids or not x.sids & y.sids:
            return 0.0
        if x.sids == y.sids:
            return 1.0
        return 0.0 if len(x.sids) >= 2 and len(y.sids) >= 2 else 0.9
    if kind == "x_cid":
        return 1.0 if (x.x_cid == y.call_id or y.x_cid == x.call_id) else 0.0
    if kind == "icid":
        return 1.0 if x.icid and x.icid == y.icid else 0.0
    return 0.0


def _contradictions(x: _Leg, y: _Leg) -> list[str]:
    """The standard keys both legs carry that say they are not one session's legs."""
    out: list[str] = []
    xh = x.hep if x.hep != x.call_id else ""  # a chunk equal to its own Call-ID says nothing
    yh = y.hep if y.hep != y.call_id else ""
    if (xh and xh not in (y.hep, y.call_id)) or (yh and yh not in (x.hep, x.call_id)):
        out.append("hep_cid")
    if (
        x.sids
        and y.sids
        and (not x.sids & y.sids or (len(x.sids) >= 2 and len(y.sids) >= 2 and x.sids != y.sids))
    ):
        out.append("session_id")
    if (x.x_cid or y.x_cid) and not (
        x.x_cid == y.call_id or y.x_cid == x.call_id or (x.x_cid and x.x_cid == y.x_cid)
    ):
        out.append("x_cid")
    if x.icid and y.icid and x.icid != y.icid:
        out.append("icid")
    return out


def _norm_user(user: str) -> str:
    """Users compared loosely: case, visual separators, and the national/E.164 prefix."""
    u = user.strip().lower()
    digits = "".join(c for c in u if c not in "+-.() ")
    if digits.isdigit() and len(digits) >= 8:
        return digits[-8:]
    return u


def _has_update(allow: list[str] | None) -> bool:
    return allow is not None and "UPDATE" in allow


def _lacks_update(allow: list[str] | None) -> bool:
    return allow is not None and "UPDATE" not in allow


def _is_answer(rec: LegRecord) -> bool:
    return rec.direction == "callee_to_caller" and rec.status > 100


def _invite_view(setup: LegRecord) -> LegRecord:
    """The setup fact seen as its initial INVITE (the message an Allow check may blame)."""
    return setup.replace(
        event_time_us=setup.invite_time_us,
        direction="caller_to_callee",
        dialog_state="pre",
        method="INVITE",
        status=0,
        src_ip=setup.invite_src_ip,
        src_port=setup.invite_src_port,
        dst_ip=setup.invite_dst_ip,
        dst_port=setup.invite_dst_port,
        ref=setup.invite_ref,
        ua_sender=setup.ua_peer,
        ua_peer=setup.ua_sender,
    )


def _record_time(rec: Record) -> int:
    if isinstance(rec, MessageRecord | SessionChangeRecord):
        return rec.event_time_us
    if isinstance(rec, DialogRecord):
        return rec.end_time_us
    if isinstance(rec, AnomalyRecord):
        return rec.detected_at_us
    return 0


def correlate(
    records: Iterable[Record], config: LegCorrelatorConfig | None = None
) -> list[AnomalyRecord]:
    """Run the second stage over an engine's records (in emission order) and end it.

    The other records only move stream time, so the end of the input is the end of the
    capture, not the last leg fact.
    """
    correlator = LegCorrelator(config)
    out: list[AnomalyRecord] = []
    for rec in records:
        if isinstance(rec, LegRecord):
            out += correlator.feed(rec)
        else:
            t = _record_time(rec)
            if t > correlator.now:
                out += correlator.advance_to(t)
    out += correlator.flush()
    return out


__all__ = [
    "HEURISTIC",
    "KEY_TYPES",
    "LegCorrelator",
    "LegCorrelatorConfig",
    "LegCorrelatorStats",
    "correlate",
]
