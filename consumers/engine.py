"""The sans-I/O analysis pipeline of one partition: observations in, records out.

    Observation -> parse -> dedup (C.0.1-3) -> reorder window -> tracker -> detectors
                                                    stream-time timers ---^

`Engine.feed(obs)` returns the records that became final; `advance_to(ts)` moves stream
time for an idle partition (the consumer calls it with the wall clock); `flush()` ends the
input (offline analysis): everything buffered is processed, timers due by the last capture
time fire, and every call is closed. Nothing here reads a clock or does I/O; the whole
engine pickles, which is how the consumer checkpoints a partition with its offsets.

Time (DESIGN "Consumers"; C.0 rule 4): stream time is the largest capture time seen; a
logical message is processed once stream time passes its first copy plus the reorder window,
in capture-time order, so copies stamped out of order by different Kamailio workers or
nodes are sorted first. Timers fire when stream time passes them, before any later message.
Message records are emitted when their dedup window closes, with every copy folded in.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import Deduplicator, LogicalMessage, fast_key
from consumers.detectors.base import Detector, Output
from consumers.observation import Observation
from consumers.record_ids import record_id
from consumers.records import DialogRecord, MessageRecord, ObservationRow, Record
from consumers.sip import parse_message
from consumers.tracking.freezer import release
from consumers.tracking.model import CALLEE, CALLER, Call, Dialog
from consumers.tracking.states import DialogState
from consumers.tracking.tracker import Tracker, TrackerConfig
from consumers.value import Value


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class EngineConfig(Value):
    FIELDS = ("reorder_window_ms", "dedup_window_ms", "tracker", "emit_messages", "keep_raw")

    def __init__(
        self,
        reorder_window_ms: int = 300,
        dedup_window_ms: int = 1000,
        tracker: TrackerConfig | None = None,
        emit_messages: bool = True,
        keep_raw: bool = True,
    ) -> None:
        self.reorder_window_ms = reorder_window_ms
        self.dedup_window_ms = dedup_window_ms
        self.tracker: TrackerConfig = TrackerConfig() if tracker is None else tracker
        self.emit_messages = emit_messages
        self.keep_raw = keep_raw

    @classmethod
    def from_consumer(cls, c: Any) -> EngineConfig:
        """From a `[consumer]` settings section (`hepwatch.config.ConsumerConfig`, which
        `consume` and `run` share; duck-typed so the core does not import the settings)."""
        return cls(
            reorder_window_ms=c.reorder_window_ms,
            dedup_window_ms=c.dedup_window_ms,
            tracker=TrackerConfig(max_calls=c.max_calls_per_partition, t1_ms=c.t1_ms),
        )


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class EngineStats(Value):
    FIELDS = (
        "observations",
        "messages",
        "not_sip",
        "parse_failures",
        "late",
        "timers_fired",
        "timers_dropped",
        "anomalies",
    )

    def __init__(self) -> None:
        self.observations = 0
        self.messages = 0  # logical messages processed
        self.not_sip = 0
        self.parse_failures: dict[str, int] = {}
        self.late = 0  # observations older than what was already processed
        self.timers_fired = 0
        self.timers_dropped = 0  # their call was gone already
        self.anomalies: dict[str, int] = {}


# What a checkpoint of the engine holds.
_STATE: Final = (
    "config",
    "detectors",
    "_by_name",
    "dedup",
    "tracker",
    "stats",
    "stream_time",
    "processed_until",
    "_reorder",
    "_in_order",
    "_timers",
    "_timer_seq",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Engine:
    def __init__(
        self, config: EngineConfig | None = None, detectors: list[Detector] | None = None
    ) -> None:
        self.config = config or EngineConfig()
        if detectors is None:
            from consumers.detectors import default_detectors

            detectors = default_detectors(self.config.tracker.t1_ms)
        self.detectors = detectors
        self._by_name = {d.name: d for d in detectors}
        self._routes: dict[tuple[bool, str, int, bool], tuple[Detector, ...]] = {}
        self._enders = _enders(detectors)
        self.dedup = Deduplicator(self.config.dedup_window_ms * 1000)
        self.tracker = Tracker(self.config.tracker, proxy_ips=self._proxy_ips)
        self.stats = EngineStats()
        self.stream_time = 0
        self.processed_until = 0
        # Logical messages waiting for the reorder window, by (first_ts, seq): those that
        # came in capture-time order in a deque (append/popleft), the others in a heap.
        self._reorder: list[tuple[int, int, LogicalMessage]] = []
        self._in_order: deque[tuple[int, int, LogicalMessage]] = deque()
        self._timers: list[tuple[int, int, str, str, str, Any]] = []
        self._timer_seq = 0

    def __getstate__(self) -> dict[str, Any]:
        # Named, not self.__dict__: compiled, the engine has no instance dict. _routes is a
        # cache, rebuilt on demand.
        return {name: getattr(self, name) for name in _STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if name in _STATE:
                setattr(self, name, value)
        if "_in_order" not in state:  # a checkpoint from before the in-order queue
            self._in_order = deque()
        self._routes = {}
        self._enders = _enders(self.detectors)

    # -- input -----------------------------------------------------------------------------

    def feed(self, obs: Observation) -> list[Record]:
        self._add(obs)
        return self._run(self.stream_time - self.config.reorder_window_ms * 1000)

    def _add(self, obs: Observation) -> None:
        self.stats.observations += 1
        key = fast_key(obs)
        if key is not None and self.dedup.fold(key, obs):
            # another copy of an open message (the proxy's twin, a retransmission): what the
            # full parse would have led to, without it (the key is only known for messages
            # that pass the checks below)
            if obs.ts_us < self.processed_until:
                self.stats.late += 1
            if obs.ts_us > self.stream_time:
                self.stream_time = obs.ts_us
            return
        msg = parse_message(obs.payload)
        if not (msg.is_request or msg.is_response) or not msg.call_id or msg.cseq is None:
            reason = (msg.framing_reasons or msg.malformed_reasons or ["not_sip"])[0]
            self.stats.parse_failures[reason] = self.stats.parse_failures.get(reason, 0) + 1
            return
        if obs.ts_us < self.processed_until:
            self.stats.late += 1
        if key is None:
            lm = self.dedup.add(msg, obs, self.stream_time)
        else:  # fold(key) failed above, and nothing has been opened since
            lm = self.dedup.start(msg, obs, self.stream_time, key)
        if lm is not None:
            in_order = self._in_order
            # seq grows with every message, so a first_ts not below the last one's keeps
            # the deque sorted
            if not in_order or in_order[-1][0] <= lm.first_ts:
                in_order.append((lm.first_ts, lm.seq, lm))
            else:
                heapq.heappush(self._reorder, (lm.first_ts, lm.seq, lm))
        if obs.ts_us > self.stream_time:
            self.stream_time = obs.ts_us

    def feed_many(self, observations: list[Observation]) -> list[Record]:
        """Feed a batch; the pipeline runs once at the end (same records as one by one)."""
        window = self.config.reorder_window_ms * 1000
        for obs in observations:
            self._add(obs)
        return self._run(self.stream_time - window)

    def advance_to(self, ts_us: int) -> list[Record]:
        """Raise stream time to `ts_us` (idle partitions follow the wall clock)."""
        if ts_us > self.stream_time:
            self.stream_time = ts_us
        return self._run(self.stream_time - self.config.reorder_window_ms * 1000)

    def flush(self) -> list[Record]:
        """End of input: process everything, fire due timers, close every call."""
        out = self._run(self.stream_time)
        o = Output()
        o.now_us = self.stream_time
        if self.config.emit_messages:
            for lm in self.dedup.close_all():
                o.records.append(self._message_record(lm))
        for call in self.tracker.drain():
            self._end_call(call, o)
        return out + o.records

    # -- pipeline --------------------------------------------------------------------------

    def _run(self, watermark: int) -> list[Record]:
        out = Output()
        out.anomaly_counts = self.stats.anomalies
        reorder = self._reorder
        in_order = self._in_order
        timers = self._timers
        while True:
            # the smaller head of the two queues ((first_ts, seq) is unique)
            if in_order and not (reorder and reorder[0] < in_order[0]):
                if in_order[0][0] > watermark:
                    break
                ts, _, lm = in_order.popleft()
            elif reorder and reorder[0][0] <= watermark:
                ts, _, lm = heapq.heappop(reorder)
            else:
                break
            if timers and timers[0][0] <= ts:
                self._fire_timers(ts, out)
            self._process(lm, out)
        self._fire_timers(watermark, out)
        if watermark > self.processed_until:
            self.processed_until = watermark
        out.now_us = watermark
        if self.config.emit_messages:
            for lm in self.dedup.expire(watermark):
                out.records.append(self._message_record(lm))
        else:
            self.dedup.expire(watermark)
        ended: list[Call] = []
        self.tracker.expire(watermark, ended)
        for call in ended:
            self._end_call(call, out)
        return out.records

    def _process(self, lm: LogicalMessage, out: Output) -> None:
        t_in, t_out = self.dedup.classify(lm)
        lm.released = True
        self.stats.messages += 1
        ev = self.tracker.process(lm, t_in, t_out)
        if ev is None:
            return
        if lm.first_ts > out.now_us:
            out.now_us = lm.first_ts
        if ev.is_request:
            route = (True, ev.method, 0, ev.retransmission)
        else:
            route = (False, ev.method, ev.status, ev.retransmission)
        detectors = self._routes.get(route)
        if detectors is None:
            detectors = self._route(route)
        for det in detectors:
            out.detector = det.name
            det.on_event(ev, out)
            if out.timers:
                self._take_timers(out)

    def _route(self, route: tuple[bool, str, int, bool]) -> tuple[Detector, ...]:
        """The detectors that want events of this kind, in their order."""
        if len(self._routes) >= 4096:  # methods are whatever the wire says: keep it bounded
            self._routes.clear()
        found = self._routes[route] = tuple(d for d in self.detectors if d.wants(*route))
        return found

    def _fire_timers(self, upto: int, out: Output) -> None:
        timers = self._timers
        while timers and timers[0][0] <= upto:
            due, _, name, call_id, key, data = heapq.heappop(timers)
            call = self.tracker.get(call_id)
            det = self._by_name.get(name)
            if call is None or det is None:
                self.stats.timers_dropped += 1
                continue
            self.stats.timers_fired += 1
            out.now_us = max(out.now_us, due)
            out.detector = name
            det.on_timer(call, key, data, out)
            if out.timers:
                self._take_timers(out)

    def _take_timers(self, out: Output) -> None:
        for due, name, call_id, key, data in out.timers:
            self._timer_seq += 1
            heapq.heappush(self._timers, (due, self._timer_seq, name, call_id, key, data))
        out.timers.clear()

    def _end_call(self, call: Call, out: Output) -> None:
        for det in self._enders:
            out.detector = det.name
            det.on_call_end(call, out)
        out.timers.clear()  # the call is gone: nothing can fire for it any more
        reason = (call.ext or {}).get("removed", "capture_end")
        if call.dialogs:
            for dialog in call.dialogs.values():
                out.records.append(self._dialog_record(call, dialog, reason))
        else:
            out.records.append(self._dialog_record(call, None, reason))
        # Nothing refers to the call any more: break its cycles so reference counting frees
        # it now instead of the cycle collector later (about a tenth of the engine's time).
        release(call)

    def _proxy_ips(self, node: str) -> set[str]:
        return {ip for ip, _ in self.dedup.proxies.get(node, ())}

    # -- records ---------------------------------------------------------------------------

    def _message_record(self, lm: LogicalMessage) -> MessageRecord:
        msg = lm.msg
        observations = lm.observations
        obs = observations[0]
        is_request = msg.is_request
        cseq = msg.cseq
        se = msg.session_expires
        allow, supported, require = msg.allow, msg.supported, msg.require
        # One pass for the rows and the event time (lm.ts, the earliest copy); hops_of has
        # one hop per copy, as copies has.
        rows: list[ObservationRow] = []
        append = rows.append
        ts = obs.ts_us
        for o, c, h in zip(observations, lm.copies, self.dedup.hops_of(lm)):  # noqa: B905
            t = o.ts_us
            if t < ts:
                ts = t
            append(ObservationRow(t, o.src_ip, o.src_port, o.dst_ip, o.dst_port, h, o.ref, c))
        # Positional, in field order (a keyword call costs a name search per field); the
        # field each value fills is named on its line.
        return MessageRecord(
            record_id(obs.ref),  # id
            ts,  # event_time_us
            obs.node,  # node
            obs.capture_id,  # capture_id
            msg.call_id or "",  # call_id
            is_request,  # is_request
            (msg.method or "") if is_request else (cseq.method if cseq else ""),  # method
            msg.status_code or 0,  # status
            msg.reason_phrase or "",  # reason_phrase
            cseq.number if cseq else 0,  # cseq
            msg.from_tag or "",  # from_tag
            msg.to_tag or "",  # to_tag
            lm.direction,  # direction
            lm.state_at or "pre",  # dialog_state
            lm.origin,  # origin
            lm.retransmission,  # retransmission
            obs.transport,  # transport
            obs.src_ip,  # src_ip
            obs.src_port,  # src_port
            obs.dst_ip,  # dst_ip
            obs.dst_port,  # dst_port
            (msg.user_agent if is_request else msg.server) or msg.user_agent or "",  # user_agent
            None if allow is None else _sorted(allow),  # allow
            None if supported is None else _sorted(supported),  # supported
            None if require is None else _sorted(require),  # require
            se.delta if se else None,  # session_expires
            se.refresher if se else None,  # refresher
            msg.min_se,  # min_se
            msg.sdp is not None,  # has_sdp
            lm.sdp_role,  # sdp_role
            msg.framing_reasons,  # malformed (a fresh list)
            obs.correlation_id,  # correlation_id
            msg.x_cid or "",  # x_cid
            rows,  # observations
            msg.raw if self.config.keep_raw else b"",  # raw
        )

    def _dialog_record(self, call: Call, dialog: Dialog | None, reason: str) -> DialogRecord:
        state = dialog.state if dialog is not None else DialogState.PRE
        initial = call.initial_status
        if dialog is not None and dialog.bye_ts:
            end_reason = "bye"
        elif initial >= 300 and state in (DialogState.PRE, DialogState.TERMINATED):
            end_reason = "cancelled" if initial == 487 else "rejected"
        else:
            end_reason = reason
        end_ts = (dialog.end_ts if dialog is not None and dialog.end_ts else 0) or call.last_ts
        ua, addr = call.ua, call.addr
        if dialog is None:
            callee_tag = ""
            start_ts, early, confirmed = call.first_ts, None, None
            caller_ua, callee_ua = ua[CALLER], ua[CALLEE]
            reinvites = updates = pracks = 0
            anomalies = call.anomalies
        else:
            callee_tag = dialog.callee_tag
            start_ts, early, confirmed = dialog.start_ts, dialog.early_ts, dialog.confirmed_ts
            early, confirmed = early or None, confirmed or None
            dialog_ua = dialog.ua
            caller_ua = dialog_ua[CALLER] or ua[CALLER]
            callee_ua = dialog_ua[CALLEE] or ua[CALLEE]
            reinvites, updates, pracks = dialog.reinvites, dialog.updates, dialog.pracks
            anomalies = dialog.anomalies
        # Positional, in field order; the field each value fills is named on its line.
        return DialogRecord(
            record_id(call.call_id, call.caller_tag, callee_tag, call.first_ts),  # id
            call.node,  # node
            call.call_id,  # call_id
            call.caller_tag,  # caller_tag
            callee_tag,  # callee_tag
            state._value_,  # state (.value is a slower descriptor)
            start_ts,  # start_time_us
            early,  # early_time_us
            confirmed,  # confirmed_time_us
            end_ts,  # end_time_us
            end_reason,  # end_reason
            initial,  # initial_status
            "self" if call.owner_known else "unknown",  # call_id_owner
            call.record_routed,  # record_routed
            caller_ua,  # caller_ua
            callee_ua,  # callee_ua
            addr[CALLER],  # caller_ip
            addr[CALLEE],  # callee_ip
            reinvites,  # reinvites
            updates,  # updates
            pracks,  # pracks
            anomalies,  # anomalies
            call.x_cid,  # x_cid
            call.session_id_pair,  # session_id_pair
            call.icid,  # icid
            call.correlation_id,  # correlation_id
        )


def _enders(detectors: list[Detector]) -> list[Detector]:
    """The detectors whose `on_call_end` does something (is overridden)."""
    return [d for d in detectors if type(d).on_call_end is not Detector.on_call_end]


_SORTED: Final[dict[frozenset[str], tuple[str, ...]]] = {}


def _sorted(tokens: frozenset[str]) -> list[str]:
    """sorted(tokens), memoised: a user agent sends the same Allow/Supported every time."""
    found = _SORTED.get(tokens)
    if found is None:
        if len(_SORTED) >= 4096:
            _SORTED.clear()
        found = _SORTED[tokens] = tuple(sorted(tokens))
    return list(found)
