"""`hepwatch run`: the whole flow in one process, on embedded defaults.

    HEP listeners (collector.ingest) -> RecordQueue (in place of Kafka) -> analysis thread
    (one consumers.engine.Engine, checkpointed) -> ClickHouseSink -> chDB in <data_dir>/clickhouse
                                        query endpoint (ClickHouse HTTP, read-only) <-'
                                        alert evaluator, every alerts.interval_s   <-'

The listeners and the accept path are the collector's; the queue gives every accepted
record the next offset, as a one-partition topic would; the analysis thread is what
`consume` does for one partition: decode, feed the engine in batches, write the records
stamped with their offset (`sink.position`), flush at least every
`clickhouse.flush_interval_s`, move stream time on by the wall clock when idle, and
checkpoint the engine with its offset to `<data_dir>/state` every
`consumer.checkpoint_interval_s` and at shutdown, so a restart continues the calls in flight.

Cross-leg checks (PROTOCOL.md C.12) run in the same thread: the engine's leg facts go to one
`LegPartition` (what `hepwatch legs` keeps per legs-topic partition: repeat window and
`LegCorrelator`), whose stream time follows the engine's watermark (its stream time minus
the reorder window: a leg fact emitted later is never detected earlier than that), so the
wall-clock rules below move it too. Its anomalies go to the same sink stamped with
`src_partition` LEGS_PARTITION (1) and the next input offset, so rows decided after a
checkpoint at offset N are stamped >= N and `sink.resume(LEGS_PARTITION, N)` on restore
drops the ones re-decided from the checkpointed state. The checkpoint holds both (`RunState`).

Offsets continue across restarts (the checkpoint's, or past the largest `src_offset` stored
if rows were written after the last checkpoint, e.g. after a crash), so message ids, which
derive from them, stay unique.

chDB allows one process per data directory and is not safe for concurrent use: every chDB
call (inserts, the query endpoint, the alert evaluator) holds `RunService.chdb_lock`.

Shutdown (SIGTERM, SIGINT): stop the listeners (what they read is still queued), drain the
queue through the engine, flush the sink, checkpoint, then close the endpoints and chDB.
`run` always uses chDB in the data directory; `[clickhouse] dsn` is for `consume`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from collector.auth import AuthPolicy
from collector.hep import fast
from collector.hep.errors import HepError
from collector.hep.model import PROTO_SIP
from collector.ingest import H_NODE, Ingest, ListenerStats
from collector.listeners.start import start_listeners
from collector.listeners.stream import StreamListener
from collector.listeners.udp import UdpListener
from consumers.alerts.service import AlertEvaluator
from consumers.checkpoint import Checkpoint, CheckpointStore
from consumers.clickhouse.client import connect
from consumers.clickhouse.migrations import apply_migrations
from consumers.clickhouse.rows import TABLES
from consumers.clickhouse.sink import ClickHouseSink, SinkFlushError
from consumers.engine import Engine, EngineConfig
from consumers.legs.partition import LegPartition
from consumers.observation import Observation, from_hep
from consumers.records import AnomalyRecord, LegRecord, Record
from consumers.runtime import GcSweepCollector, dump_stacks_on_sigusr1, tune_gc
from consumers.service import ConsumerMetrics
from hepwatch.config import ListenAddress, Settings, parse_host_port
from hepwatch.ops_http import start_ops_server
from hepwatch.query_http import ChdbQueries, QueryHttpServer
from hepwatch.queue import RecordQueue

log = logging.getLogger("hepwatch.run")

TOPIC = "run"  # the checkpoint's name for the in-process queue
PARTITION = 0
LEGS_PARTITION = 1  # src_partition of the cross-leg (C.12) anomaly rows
TAKE_BATCH = 5000
CHECKPOINT_BUDGET = 10  # periodic checkpoints: at least this many times their duration apart


# -- the analysis thread --------------------------------------------------------------------


@dataclass
class RunState:
    """What a run checkpoint holds: the engine and the cross-leg correlation state, saved
    together so that they always match one input offset."""

    engine: Engine
    legs: LegPartition


class Analysis(threading.Thread):
    """Queue -> engine -> sink, with flushes, idle stream-time advance and checkpoints."""

    def __init__(
        self,
        settings: Settings,
        queue: RecordQueue,
        engine: Engine,
        sink: ClickHouseSink,
        store: CheckpointStore,
        chdb_lock: threading.Lock,
        metrics: ConsumerMetrics,
        on_fatal: Callable[[BaseException], None],
        legs: LegPartition | None = None,
    ) -> None:
        super().__init__(name="analysis", daemon=True)
        self.settings = settings
        self.queue = queue
        self.engine = engine
        self.legs = legs if legs is not None else LegPartition()
        self.sink = sink
        self.store = store
        self.lock = chdb_lock
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.next_offset = queue.taken_offset
        self._checkpointed: tuple[int, int] | None = None  # (offset, stream time) saved
        self.last_wall = time.time()
        self.clock = CaptureClock()
        self.errors = 0
        self.flushes = 0
        self.error: BaseException | None = None
        self._draining = threading.Event()
        self._next_checkpoint = time.monotonic() + settings.consumer.checkpoint_interval_s
        self.checkpoint_seconds = 0.0  # duration of the last checkpoint
        self._retry_at = 0.0

    def drain_and_stop(self) -> None:
        """Process everything queued, flush, checkpoint, end (join the thread after)."""
        self._draining.set()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the loop itself guards per batch; this is a bug
            log.critical("analysis thread failed", exc_info=True)
            self.error = exc
            self.on_fatal(exc)

    def _loop(self) -> None:
        queue = self.queue
        while True:
            first, items = queue.take(TAKE_BATCH, timeout=0.05)
            now = time.time()
            if items:
                self._guarded(self._feed, first, items, now)
            elif self._draining.is_set() and queue.depth == 0:
                break
            self._guarded(self._idle_advance, now)
            mono = time.monotonic()
            if self.sink.due() and mono >= self._retry_at:
                self._flush()
            if mono >= self._next_checkpoint:
                self._checkpoint()
        # Shutdown: everything queued was fed; store it and the engine state.
        for attempt in range(5):
            if self._flush():
                break
            time.sleep(self.settings.clickhouse.retry_backoff_s * (attempt + 1))
        if self.sink.buffered_rows:
            log.error(
                "shutdown: %d rows could not be stored in ClickHouse; no checkpoint written, "
                "so the engine state matches what is stored",
                self.sink.buffered_rows,
            )
            return
        self._checkpoint(force=True)
        log.info(
            "analysis stopped: checkpoint at offset %d, %d calls in flight",
            self.next_offset,
            len(self.engine.tracker),
        )

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("analysis: %s failed", getattr(fn, "__name__", fn))

    def _feed(self, first: int, items: list[tuple[bytes, Any]], now: float) -> None:
        metrics = self.metrics
        observations: list[Observation] = []
        latency = metrics.latency
        nodes: dict[int, str] = {}  # id(headers) -> node: one headers list per sender and batch
        now_us = int(now * 1e6)
        worst = None  # largest (now - capture time) of the batch, µs
        for i, (value, headers) in enumerate(items):
            offset = first + i
            node = nodes.get(id(headers))
            if node is None:
                node = nodes[id(headers)] = _node(headers)
            try:
                pkt = fast.decode(value)
            except HepError as exc:
                metrics.parse_failures.labels(str(exc.reason)).inc()
                continue
            if pkt.proto_type != PROTO_SIP:
                metrics.parse_failures.labels("not_sip").inc()
                continue
            obs = from_hep(pkt, f"{TOPIC}/{PARTITION}/{offset}", node or None)
            latency.observe(max(0.0, now - obs.ts_us / 1e6))
            observations.append(obs)
            delay = now_us - obs.ts_us
            if worst is None or delay > worst:
                worst = delay
        metrics.consumed.inc(len(items))
        if worst is not None:
            self.clock.observe(now, worst)
        self.next_offset = first + len(items)
        self.last_wall = now
        failures = self.engine.stats.parse_failures
        before = dict(failures)
        records = self.engine.feed_many(observations)
        for reason, n in failures.items():
            if n != before.get(reason, 0):
                metrics.parse_failures.labels(reason).inc(n - before.get(reason, 0))
        self._emit(records, self.next_offset - 1)

    def _emit(self, records: list[Record], offset: int) -> None:
        if records:
            self.sink.position(PARTITION, offset)
            self.sink.write(records)
            self._count(records)
        self._correlate(records)

    def _count(self, records: list[Record] | list[AnomalyRecord]) -> None:
        out = self.metrics.records_out
        for rec in records:
            out.labels(rec.kind).inc()
            if rec.kind == "anomaly":
                self.metrics.anomalies.labels(rec.anomaly).inc()  # type: ignore[union-attr]

    def _correlate(self, records: list[Record]) -> None:
        """The engine's leg facts to the correlator, whose time then follows the engine's
        watermark; its anomalies to the sink as the legs partition's rows."""
        legs = self.legs
        anomalies: list[AnomalyRecord] = []
        for rec in records:
            if isinstance(rec, LegRecord):
                anomalies += legs.feed(rec)
        watermark = self.engine.stream_time - self.engine.config.reorder_window_ms * 1000
        if watermark > legs.now:
            anomalies += legs.advance_to(watermark)
        if anomalies:
            self.sink.position(LEGS_PARTITION, self.next_offset)
            self.sink.write(anomalies)
            self._count(anomalies)

    def _idle_advance(self, now: float) -> None:
        """Stream time follows the wall clock on a quiet system, so timers fire and dedup
        windows close without more input. Two rules; the one further ahead wins:

        - `consume`'s: after `idle_advance_s` without input, the wall clock that far behind.
        - The wall clock read in the capture clock: now minus the largest (analysis -
          capture) delay of the last minute (`CaptureClock`). A message taken off the queue
          no later than those were is never behind stream time, and with the proxies'
          clocks close to ours a quiet system's rows and anomalies are out within the
          reorder window plus a flush, without waiting `idle_advance_s`.
        """
        target = -1
        lag = self.clock.lag_us(now)
        if lag is not None:
            target = int(now * 1e6) - lag
        idle = self.settings.consumer.idle_advance_s
        if now - self.last_wall >= idle:
            target = max(target, int((now - idle) * 1e6))
        if target > self.engine.stream_time:
            self._emit(self.engine.advance_to(target), self.next_offset - 1)

    def _flush(self) -> bool:
        try:
            with self.lock:
                self.sink.flush()
        except SinkFlushError as exc:
            self.errors += 1
            self._retry_at = time.monotonic() + self.settings.clickhouse.retry_backoff_s
            log.warning("flush to chDB failed (kept, retried): %s", exc)
            return False
        self.flushes += 1
        return True

    def _checkpoint(self, force: bool = False) -> None:
        """Engine state with its offset; only when everything it emitted is stored, and
        only when something changed (input, or stream time moved by the idle advance).

        Pickling the engine stops the analysis for as long as it takes (seconds with tens
        of thousands of calls in flight), so the next periodic checkpoint waits at least
        CHECKPOINT_BUDGET times that long: checkpoints never take more than about a tenth
        of the analysis thread, whatever `checkpoint_interval_s` asks."""
        started = time.monotonic()
        interval = self.settings.consumer.checkpoint_interval_s
        self._next_checkpoint = started + max(interval, CHECKPOINT_BUDGET * self.checkpoint_seconds)
        if self.sink.buffered_rows and not self._flush():
            return
        mark = (self.next_offset, self.engine.stream_time)
        if mark == self._checkpointed and not force:
            return
        state = RunState(self.engine, self.legs)
        # the store pickles whatever state it is given; here the engine with the legs
        self.store.save(TOPIC, PARTITION, Checkpoint(self.next_offset, 0, state))  # type: ignore[arg-type]
        self._checkpointed = mark
        took = time.monotonic() - started
        self.checkpoint_seconds = took
        self._next_checkpoint = time.monotonic() + max(interval, CHECKPOINT_BUDGET * took)
        if took > interval / 2:
            log.info(
                "checkpoint of %d calls took %.1f s; the next in %.0f s",
                len(self.engine.tracker),
                took,
                CHECKPOINT_BUDGET * took,
            )
        self.metrics.checkpoints.inc()
        self.metrics.live_calls.set(len(self.engine.tracker))


def _node(headers: list[tuple[str, bytes]]) -> str:
    for key, value in headers:
        if key == H_NODE:
            return value.decode("utf-8", "replace")
    return ""


class CaptureClock:
    """How far capture times run behind the analysis: the largest (analysis time - capture
    time) delay of the batches of the last `window_s`, a sliding maximum. Capture times are
    the proxies' clocks; this delay is their skew from ours plus the network delay plus the
    time records waited in the queue (so a backlog makes it larger, never smaller)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._maxima: deque[tuple[float, int]] = deque()  # (wall, delay), delays decreasing

    def observe(self, wall: float, delay_us: int) -> None:
        maxima = self._maxima
        while maxima and maxima[-1][1] <= delay_us:
            maxima.pop()
        maxima.append((wall, delay_us))

    def lag_us(self, now: float) -> int | None:
        """The delay to allow now; after a quiet minute, the last one seen (None before any)."""
        maxima = self._maxima
        while len(maxima) > 1 and maxima[0][0] < now - self.window_s:
            maxima.popleft()
        return maxima[0][1] if maxima else None


# -- metrics --------------------------------------------------------------------------------


class RunMetrics(Collector):
    """Listener, queue and sink counters read at scrape time (`hepwatch_run_*`, and the
    collector's listener metrics under their usual names)."""

    def __init__(self, service: RunService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        p = "hepwatch_collector_"
        received = CounterMetricFamily(p + "received_packets", "HEP packets received",
                                       labels=["listener", "transport"])  # fmt: skip
        accepted = CounterMetricFamily(p + "accepted_packets", "Packets accepted",
                                       labels=["listener"])  # fmt: skip
        rejected = CounterMetricFamily(p + "rejected_packets", "Packets rejected, by reason",
                                       labels=["reason"])  # fmt: skip
        by_reason: dict[str, int] = {}
        for s in svc.listener_stats():
            received.add_metric([s.name, s.transport], s.received)
            accepted.add_metric([s.name], s.accepted)
            for reason, count in s.rejected.items():
                by_reason[reason.value] = by_reason.get(reason.value, 0) + count
        for reason, count in by_reason.items():
            rejected.add_metric([reason], count)
        yield from (received, accepted, rejected)
        drops = GaugeMetricFamily(p + "udp_kernel_drops", "Datagrams the kernel dropped",
                                  labels=["listener"])  # fmt: skip
        for u in svc.udp:
            drops.add_metric([u.name], u.kernel_drops() or 0)
        yield drops
        r = "hepwatch_run_"
        q = svc.queue
        if q is not None:
            st = q.stats
            yield CounterMetricFamily(r + "queued_records", "Records queued", value=st.published)
            yield CounterMetricFamily(r + "processed_records", "Records taken", value=st.taken)
            yield GaugeMetricFamily(r + "queue_depth", "Records waiting", value=q.depth)
            yield CounterMetricFamily(
                r + "queue_full_waits", "Publishes that waited for room", value=st.full_waits
            )
            yield CounterMetricFamily(
                r + "queue_full_wait_seconds", "Time publishers waited", value=st.full_wait_seconds
            )
        sink = svc.sink
        if sink is not None:
            rows = CounterMetricFamily(r + "rows_written", "Rows stored", labels=["table"])
            for table, n in sink.rows_written.items():
                rows.add_metric([table], n)
            yield rows
            yield GaugeMetricFamily(
                r + "rows_buffered", "Rows not yet stored", value=sink.buffered_rows
            )
            yield CounterMetricFamily(
                r + "flush_failures", "Failed flushes (rows kept)", value=sink.flush_failures
            )
        if svc.query_server is not None:
            yield CounterMetricFamily(
                r + "queries", "Queries answered", value=svc.query_server.served
            )
            yield CounterMetricFamily(
                r + "query_errors", "Queries refused or failed", value=svc.query_server.failed
            )


# -- periodic tasks -------------------------------------------------------------------------


@dataclass
class PeriodicTask:
    """Something `run` does every `interval_s` on its maintenance thread (e.g. alerts)."""

    name: str
    interval_s: float
    fn: Callable[[], object]
    next_at: float = 0.0


@dataclass
class Periodic:
    """One thread running the periodic tasks in turn; a failing task is logged, not fatal."""

    tasks: list[PeriodicTask] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.tasks:
            return
        now = time.monotonic()
        for t in self.tasks:
            t.next_at = now + t.interval_s
        self._thread = threading.Thread(target=self._run, name="periodic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for t in self.tasks:
                if now >= t.next_at:
                    t.next_at = now + t.interval_s
                    try:
                        t.fn()
                    except Exception:
                        log.exception("periodic task %s failed", t.name)
            wait = min(t.next_at for t in self.tasks) - time.monotonic()
            self._stop.wait(max(0.05, wait))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


# -- the service ----------------------------------------------------------------------------


@dataclass
class RunService:
    settings: Settings
    udp: list[UdpListener] = field(default_factory=list)
    streams: list[StreamListener] = field(default_factory=list)
    queue: RecordQueue | None = None
    sink: ClickHouseSink | None = None
    analysis: Analysis | None = None
    query_server: QueryHttpServer | None = None
    query_port: int | None = None
    metrics_port: int | None = None
    periodic: Periodic = field(default_factory=Periodic)
    chdb_lock: threading.Lock = field(default_factory=threading.Lock)
    failed: BaseException | None = None
    _client: Any = None
    _ops_runner: web.AppRunner | None = None
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.run.data_dir).expanduser().resolve()

    def listener_stats(self) -> list[ListenerStats]:
        return [u.stats for u in self.udp] + [s.stats for s in self.streams]

    def not_ready(self) -> list[str]:
        problems = []
        if not self.udp and not self.streams:
            problems.append("no listener is bound")
        if self.analysis is None or not self.analysis.is_alive():
            problems.append("the analysis thread is not running")
        return problems

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        data = self.data_dir
        chdb_dir = data / "clickhouse"
        (data / "state").mkdir(parents=True, exist_ok=True)
        registry = CollectorRegistry()

        # chDB, the schema, the sink; the engine restored from its checkpoint.
        tune_gc()  # as `consume`: the engine holds many small long-lived objects
        dump_stacks_on_sigusr1()
        registry.register(GcSweepCollector())
        check_not_in_use(chdb_dir)
        self._client = connect(f"chdb://{chdb_dir}")
        with self.chdb_lock:
            applied = apply_migrations(self._client, s.clickhouse)
        if applied:
            log.info("schema migrations applied: %s", applied)
        self.sink = ClickHouseSink(self._client, s.clickhouse)
        store = CheckpointStore(data / "state")
        ckpt = store.load(TOPIC, PARTITION)
        state: object = ckpt.engine if ckpt is not None else None
        legs: LegPartition | None = None
        if isinstance(state, RunState):
            engine, legs = state.engine, state.legs
        elif isinstance(state, Engine):  # a checkpoint from before the cross-leg checks
            engine = state
        else:
            engine = Engine(self._engine_config())
        if ckpt is not None and legs is not None:
            # Cross-leg anomalies stored after the checkpoint are decided again from its
            # state: the sink drops them (they are stamped >= the checkpoint's offset).
            with self.chdb_lock:
                self.sink.resume(LEGS_PARTITION, ckpt.next_offset)
        stored = self._stored_max_offset()
        start = max(ckpt.next_offset if ckpt is not None else 0, stored + 1)
        if ckpt is not None:
            log.info(
                "resumed from the checkpoint at offset %d with %d calls and %d legs in flight",
                ckpt.next_offset,
                len(engine.tracker),
                len(legs) if legs is not None else 0,
            )
        if stored + 1 > (ckpt.next_offset if ckpt is not None else 0):
            log.warning(
                "rows up to offset %d were stored after the last checkpoint (an unclean stop?); "
                "the input behind them is gone, offsets continue at %d",
                stored,
                start,
            )
        self.queue = RecordQueue(s.run.queue_max_records, next_offset=start)
        metrics = ConsumerMetrics(registry)
        self.analysis = Analysis(
            s, self.queue, engine, self.sink, store, self.chdb_lock, metrics, self._fatal, legs
        )
        self.analysis.start()

        # The listeners, publishing into the queue through the collector's accept path.
        c = s.collector
        ingest = Ingest(
            self.queue.publish,
            publish_many=self.queue.publish_many,
            node_name=c.node_name,
            auth=AuthPolicy(s.auth.keys, s.auth.allow_cidrs),
            max_packet_bytes=c.max_packet_bytes,
            reject_log_per_minute=c.reject_log_per_minute,
        )
        addresses = [ListenAddress.parse(url) for url in s.run.listen]
        self.udp, self.streams = await start_listeners(addresses, ingest, s.collector)

        # The query endpoint over the same engine.
        if s.query_http.listen:
            queries = ChdbQueries(os.path.realpath(chdb_dir), self.chdb_lock, s.query_http)
            await asyncio.to_thread(queries.load_server_info)
            self.query_server = QueryHttpServer(queries, s.query_http)
            host, port = parse_host_port(s.query_http.listen)
            self.query_port = await self.query_server.start(host, port)
            if not s.query_http.users and host not in ("127.0.0.1", "::1", "localhost"):
                log.warning(
                    "the query endpoint on %s has no users configured: anyone who reaches it "
                    "can read every captured message ([query_http] users)",
                    s.query_http.listen,
                )

        # Periodic work: the alert evaluator (more tasks go in this list).
        evaluator = AlertEvaluator(
            self._client,
            s.alerts,
            lock=self.chdb_lock,
            query_url=self.query_url or "",
            registry=registry,
        )
        self.periodic.tasks.append(
            PeriodicTask("alerts", s.alerts.interval_s, evaluator.evaluate_once)
        )
        self.periodic.start()

        registry.register(RunMetrics(self))
        if s.metrics.listen:
            host, port = parse_host_port(s.metrics.listen)
            self._ops_runner, self.metrics_port = await start_ops_server(
                host, port, registry, self.not_ready
            )

    def _engine_config(self) -> EngineConfig:
        return EngineConfig.from_consumer(self.settings.consumer)

    def _stored_max_offset(self) -> int:
        """The largest src_offset of this queue's rows in any table (-1 when none)."""
        best = -1
        with self.chdb_lock:
            for spec in TABLES.values():
                rows = self._client.query(
                    f"SELECT maxOrNull(src_offset) FROM {spec.table} "
                    "WHERE src_partition = {p:Int32}",
                    parameters={"p": PARTITION},
                ).result_rows
                if rows and rows[0][0] is not None:
                    best = max(best, int(rows[0][0]))
        return best

    @property
    def query_url(self) -> str | None:
        listen = self.settings.query_http.listen
        if not listen or self.query_port is None:
            return None
        host, _ = parse_host_port(listen)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{_bracket(host)}:{self.query_port}"

    # -- run and stop ---------------------------------------------------------------------

    def _fatal(self, exc: BaseException) -> None:
        self.failed = exc
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def stop(self) -> None:
        for u in self.udp:
            u.stop()
        for st in self.streams:
            await st.stop()
        if self.analysis is not None and self.analysis.is_alive():
            self.analysis.drain_and_stop()
            await asyncio.to_thread(self.analysis.join)
        if self.queue is not None:
            self.queue.close()
        self.periodic.stop()
        if self.query_server is not None:
            await self.query_server.stop()
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()
        if self.sink is not None and self.failed is None:
            with contextlib.suppress(SinkFlushError), self.chdb_lock:
                self.sink.close()
        if self._client is not None:
            with self.chdb_lock:
                self._client.close()

    async def run_until_signalled(self, ready: Callable[[RunService], None] | None = None) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            await self.start()
            if ready is not None:
                ready(self)
            await self._stop.wait()
            log.info("shutting down: draining the queue, storing, checkpointing")
        finally:
            await self.stop()
        if self.failed is not None:
            raise RuntimeError(f"the analysis thread failed: {self.failed}")


def check_not_in_use(chdb_dir: Path) -> None:
    """Fail clearly when another process has the chDB directory open (chDB's own error is
    "Error initializing EmbeddedServer"). ClickHouse holds an flock on `status` and writes
    its pid there; the probe takes and drops that lock."""
    status = chdb_dir / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = status.read_text(errors="replace")
        pid = re.search(r"PID:\s*(\d+)", text)
        who = f"process {pid.group(1)}" if pid else "another process"
        raise ValueError(
            f"{chdb_dir.parent} is in use by {who} (chDB allows one process per data "
            "directory): stop it, or give this one another --data-dir"
        ) from None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- the start-up banner --------------------------------------------------------------------


def banner(service: RunService) -> list[str]:
    """Where `run` listens and the Kamailio siptrace settings that point at it."""
    s = service.settings
    hep = [u.name for u in service.udp] + [st.name for st in service.streams]
    lines = ["hepwatch run is up", f"  HEP in       {', '.join(hep)}"]
    if service.query_url:
        auth = "basic auth" if s.query_http.users else "no auth"
        lines.append(f"  queries      {service.query_url}  (ClickHouse HTTP, read-only, {auth})")
        lines.append(f"               hepwatch sql --server {service.query_url} "
                     "\"SELECT count() FROM sip_messages\"")  # fmt: skip
    if service.metrics_port is not None and s.metrics.listen:
        host, _ = parse_host_port(s.metrics.listen)
        lines.append(f"  metrics      http://{_bracket(host)}:{service.metrics_port}/metrics")
    data = service.data_dir
    lines.append(f"  data         {data}  (chDB in clickhouse/, engine checkpoints in state/)")
    rules = str(s.alerts.rules) if s.alerts.rules else "shipped default rules"
    lines.append(f"  alerts       {rules}, every {s.alerts.interval_s:g} s")
    uri = _kamailio_uri(service)
    if uri:
        lines += [
            "",
            "Point Kamailio at it (kamailio.cfg; deploy/kamailio/siptrace.cfg explains each line):",
            '  loadmodule "siptrace.so"',
            '  modparam("siptrace", "trace_on", 1)',
            '  modparam("siptrace", "trace_mode", 1)',
            '  modparam("siptrace", "trace_to_database", 0)',
            '  modparam("siptrace", "hep_mode_on", 1)',
            '  modparam("siptrace", "hep_version", 3)',
            '  modparam("siptrace", "hep_capture_id", 2001)   # one id per proxy',
            f'  modparam("siptrace", "duplicate_uri", "{uri}")',
        ]
    return lines


def _kamailio_uri(service: RunService) -> str | None:
    for lst, transport in [(u, "") for u in service.udp] + [
        (st, ";transport=tcp") for st in service.streams if st.scheme == "tcp"
    ]:
        host, port = (lst.address if isinstance(lst, UdpListener) else (lst.host, lst.port))[:2]
        if host in ("0.0.0.0", "::", ""):
            host = _outbound_address()
        return f"sip:{_bracket(host)}:{port}{transport}"
    return None


def _outbound_address() -> str:
    """This host's address on the default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["Analysis", "Periodic", "PeriodicTask", "RunService", "banner"]
