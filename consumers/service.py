"""`hepwatch consume`: the Kafka adapter around the per-partition analysis engines.

One consumer group; each assigned partition gets its own `Engine`, restored from its
checkpoint (state, next offset, output length; see `checkpoint.py`) when one exists, so a
restarted or reassigned consumer resumes the calls that started before. Records go to the
output of `consumer.sink` (`outputs.py`: JSON lines per partition, or ClickHouse). Every
`checkpoint_interval_s`, on revocation and on shutdown, in this order: the output is
flushed (fsync, or INSERTs acknowledged), the checkpoint is written, the offsets are
committed. Input is at-least-once; the output is exactly-once: JSON-lines files are
truncated to the checkpoint on restore, and ClickHouse rows carry their source partition
and offset, so a restored partition skips the ids already stored (`sink.resume`).

ClickHouse unavailable (connect, migrations, resume or an INSERT fails): every assigned
partition is paused (no fetching, no wall-clock timers, no checkpoint, no commit), what is
buffered is kept, and the flush is retried with a doubling backoff from
`clickhouse.retry_backoff_s` up to 16 times it. The loop keeps polling, so the consumer
stays in its group; lag and `hepwatch_consumer_sink_paused` show the outage. When a flush
succeeds the partitions resume from the first offset not yet processed. A partition revoked
while ClickHouse is down is not committed: its unstored records are dropped here and
replayed by its next owner from the checkpoint.

The partition handling (assignment, revocation, the checkpoint order, the pause) is
`consumers.partitioned.PartitionedConsumer`, shared with the C.12 legs stage; this module
holds what a HEP record does to a partition's engine.

Stream time is event time; a partition that received nothing for `idle_advance_s` and has
read everything available has its stream time moved on by the wall clock, so timers
(missing ACK, session expiry) still fire on a quiet system. Metrics: consumed, lag, parse
failures by reason, live dialogs, anomalies by type, processing latency, checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from collector.hep import fast
from collector.hep.errors import HepError
from collector.hep.model import PROTO_SIP
from consumers.checkpoint import CheckpointStore
from consumers.engine import Engine, EngineConfig
from consumers.legs.stage import LegPublisher, start_legs_thread
from consumers.observation import Observation, from_hep
from consumers.outputs import ClickHouseOutputs, Outputs, outputs_for
from consumers.partitioned import PartitionedConsumer
from consumers.records import Record
from consumers.sink_pause import SinkPause
from hepwatch.config import Settings

log = logging.getLogger("hepwatch.consume")


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "hepwatch_consumer_"
        self.consumed = Counter(p + "records", "Kafka records consumed", registry=registry)
        self.parse_failures = Counter(
            p + "parse_failures",
            "Records that are not usable SIP, by reason",
            ["reason"],
            registry=registry,
        )
        self.anomalies = Counter(
            p + "anomalies", "Anomalies detected, by type", ["anomaly"], registry=registry
        )
        self.records_out = Counter(
            p + "output_records", "Records written, by kind", ["kind"], registry=registry
        )
        self.checkpoints = Counter(p + "checkpoints", "Checkpoints written", registry=registry)
        self.live_calls = Gauge(p + "live_calls", "Calls tracked in memory", registry=registry)
        self.lag = Gauge(
            p + "lag", "Records behind the high watermark", ["partition"], registry=registry
        )
        self.latency = Histogram(
            p + "processing_latency_seconds",
            "Wall time from capture to processing",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.sink_failures = Counter(
            p + "sink_failures",
            "Failed attempts to store records (connect, migrate, resume or insert)",
            registry=registry,
        )
        self.sink_paused = Gauge(
            p + "sink_paused",
            "1 while fetching is paused because the sink cannot store records",
            registry=registry,
        )


@dataclass
class PartitionWorker:
    topic: str
    partition: int
    engine: Engine
    output: Outputs
    next_offset: int | None = None  # None: whatever Kafka says (committed or earliest)
    last_wall: float = field(default_factory=time.time)
    legs: LegPublisher | None = None  # leg facts to the C.12 second stage

    @property
    def key(self) -> int:
        return self.partition

    def emit(self, records: list[Record], metrics: ConsumerMetrics, idle: bool = False) -> None:
        if not records:
            return
        # Source position stamped on the rows (ClickHouse): the last offset consumed, or for
        # records emitted while idle the next one, so every row written after a checkpoint
        # at offset N is stamped >= N and a restore at N finds it.
        nxt = self.next_offset
        self.output.write(self.partition, 0 if nxt is None else nxt - (not idle), records)
        if self.legs is not None:
            self.legs.publish(records)
        for rec in records:
            metrics.records_out.labels(rec.kind).inc()
            if rec.kind == "anomaly":
                metrics.anomalies.labels(rec.anomaly).inc()  # type: ignore[union-attr]


class ConsumerService(PartitionedConsumer[PartitionWorker]):
    log = log

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        super().__init__(settings)
        c = settings.consumer
        self.store = CheckpointStore(c.state_dir)
        self.output_dir = Path(c.sink.partition(":")[2])
        self.output = outputs_for(c.sink, settings.clickhouse)
        self.registry = registry or CollectorRegistry()
        self.metrics = ConsumerMetrics(self.registry)
        self.checkpoints = self.metrics.checkpoints
        self.lag = self.metrics.lag
        self.topic = settings.kafka.topic
        self.group = c.group
        # Paused: the sink failed; fetching stops until a retried flush succeeds.
        self.pause = SinkPause(
            settings.clickhouse.retry_backoff_s,
            self.metrics.sink_failures,
            self.metrics.sink_paused,
            log,
        )
        self.legs = LegPublisher(settings, self.registry)

    # -- lifecycle -------------------------------------------------------------------------

    def engine_config(self) -> EngineConfig:
        return EngineConfig.from_consumer(self.settings.consumer)

    def run(self) -> None:
        s = self.settings
        conf = self._conf(dict(s.kafka.extra), "hepwatch.consume.kafka")
        self._loop(conf, f"consuming {self.topic} as group {self.group}")

    def _connected(self) -> bool:
        return isinstance(self.output, ClickHouseOutputs)

    # -- partitions ------------------------------------------------------------------------

    def _restore(self, topic: str, partition: int) -> PartitionWorker:
        ckpt = self.store.load(topic, partition)
        start = 0
        if ckpt is None and isinstance(self.output, ClickHouseOutputs):
            start = self._start_offset(topic, partition)
        self.output.open(topic, partition, ckpt, start)
        if ckpt is None:
            engine = Engine(self.engine_config())
            return PartitionWorker(topic, partition, engine, self.output, legs=self.legs)
        log.info(
            "partition %d: resumed at offset %d with %d calls in flight",
            partition,
            ckpt.next_offset,
            len(ckpt.engine.tracker),
        )
        return PartitionWorker(
            topic,
            partition,
            ckpt.engine,
            self.output,
            next_offset=ckpt.next_offset,
            legs=self.legs,
        )

    def _state(self, worker: PartitionWorker) -> Engine:
        return worker.engine

    def _may_checkpoint(self) -> bool:
        return self.legs.flush()  # a checkpoint must not cover leg facts not yet in Kafka

    def _report_live(self) -> None:
        self.metrics.live_calls.set(sum(len(w.engine.tracker) for w in self.workers.values()))

    # -- records ---------------------------------------------------------------------------

    def _take_batch(self, messages: list[Any], now: float) -> None:
        pending: dict[int, list[Observation]] = {}
        for msg in messages:
            obs = self._observation(msg, now)
            if obs is not None:
                pending.setdefault(msg.partition(), []).append(obs)
        for partition, observations in pending.items():
            self._feed(self.workers[partition], observations)

    def _advance(self, now: float) -> None:
        self._idle_advance(now)
        self.legs.publish_marks(
            ((w.topic, p, w.engine.processed_until) for p, w in self.workers.items()), now
        )

    def _observation(self, msg: Any, now: float) -> Observation | None:
        """The SIP observation a record holds; counts and skips what is not one."""
        worker = self.workers.get(msg.partition())
        if worker is None:
            return None  # revoked meanwhile
        offset = msg.offset()
        if worker.next_offset is not None and offset < worker.next_offset:
            return None  # fetched again after a seek: processed already
        if self.pause.active:
            # Fetched before the pause took effect: left for after the resume, which seeks
            # back to the first offset not processed.
            if worker.next_offset is None:
                worker.next_offset = offset
            return None
        self.metrics.consumed.inc()
        worker.next_offset = offset + 1
        worker.last_wall = now
        node = ""
        for key, value in msg.headers() or ():
            if key == "hep.node" and value:
                node = value.decode("utf-8", "replace")
        try:
            pkt = fast.decode(msg.value() or b"")
        except HepError as exc:
            self.metrics.parse_failures.labels(str(exc.reason)).inc()
            return None
        if pkt.proto_type != PROTO_SIP:
            self.metrics.parse_failures.labels("not_sip").inc()
            return None
        obs = from_hep(pkt, f"{msg.topic()}/{msg.partition()}/{offset}", node or None)
        self.metrics.latency.observe(max(0.0, now - obs.ts_us / 1e6))
        return obs

    def _feed(self, worker: PartitionWorker, observations: list[Observation]) -> None:
        """One engine run per partition per consumed batch (as `analyze` feeds)."""
        failures = worker.engine.stats.parse_failures
        before = dict(failures)
        worker.emit(worker.engine.feed_many(observations), self.metrics)
        for reason, n in failures.items():
            if n != before.get(reason, 0):
                self.metrics.parse_failures.labels(reason).inc(n - before.get(reason, 0))

    def _idle_advance(self, now: float) -> None:
        """Quiet partitions: stream time follows the wall clock, `idle_advance_s` behind it
        (capture times are the proxies' clocks, close to ours), once the partition has read
        all there is (as the legs stage's rule): a partition just assigned or restored has
        received nothing because nothing was fetched yet, and advancing it then would fire
        its timers (missing ACK, expiry) before its backlog is read."""
        idle = self.settings.consumer.idle_advance_s
        target = int((now - idle) * 1e6)
        for worker in self.workers.values():
            quiet = now - worker.last_wall >= idle and target > worker.engine.stream_time
            if quiet and self._caught_up(worker):
                worker.emit(worker.engine.advance_to(target), self.metrics, idle=True)


def run_service(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, serving metrics on `consumer.metrics_listen`."""
    import signal

    from consumers.runtime import GcSweepCollector, dump_stacks_on_sigusr1, tune_gc
    from hepwatch.config import parse_host_port
    from hepwatch.ops_http import start_ops_server

    tune_gc()
    dump_stacks_on_sigusr1()
    service = ConsumerService(settings)
    service.registry.register(GcSweepCollector())
    legs = None
    if settings.consumer.legs_stage:  # the C.12 second stage, in a thread of this process
        legs = start_legs_thread(settings, service.registry, on_error=service.stop)
    loop_thread: threading.Thread | None = None
    if settings.consumer.metrics_listen:
        host, port = parse_host_port(settings.consumer.metrics_listen)
        loop = asyncio.new_event_loop()

        def ready() -> list[str]:
            return [] if service.assigned_once.is_set() else ["no partition assigned yet"]

        _runner, bound = loop.run_until_complete(
            start_ops_server(host, port, service.registry, ready)
        )
        log.info("metrics on http://%s:%d/metrics", host, bound)
        loop_thread = threading.Thread(target=loop.run_forever, name="ops-http", daemon=True)
        loop_thread.start()

    def _signal(signum: int, _frame: object) -> None:
        log.info("signal %d: checkpointing and stopping", signum)
        service.stop()
        if legs is not None:
            legs.stop()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    try:
        service.run()
    finally:
        if legs is not None:
            legs.close()


__all__ = ["ConsumerService", "run_service"]
