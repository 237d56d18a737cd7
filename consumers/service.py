"""`hepwatch consume`: the Kafka adapter around the per-partition analysis engines.

One consumer group; each assigned partition gets its own `Engine`, restored from its
checkpoint (state, next offset, output length; see `checkpoint.py`) when one exists, so a
restarted or reassigned consumer resumes the calls that started before. Offsets are
committed only after the output and the checkpoint are on disk (every
`checkpoint_interval_s`, on revocation and on shutdown): at-least-once input, and the
output truncation on restore makes the output exactly-once.

Stream time is event time; a partition that received nothing for `idle_advance_s` has its
stream time moved on by the wall clock, so timers (missing ACK, session expiry) still fire
on a quiet system. Metrics: consumed, lag, parse failures by reason, live dialogs,
anomalies by type, processing latency, checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from collector.hep import fast
from collector.hep.errors import HepError
from collector.hep.model import PROTO_SIP
from consumers.checkpoint import Checkpoint, CheckpointStore, PartitionOutput
from consumers.engine import Engine, EngineConfig
from consumers.legs.stage import LegPublisher, start_legs_thread
from consumers.observation import Observation, from_hep
from consumers.records import Record
from consumers.tracking.tracker import TrackerConfig
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


@dataclass
class PartitionWorker:
    topic: str
    partition: int
    engine: Engine
    output: PartitionOutput
    next_offset: int | None = None  # None: whatever Kafka says (committed or earliest)
    last_wall: float = field(default_factory=time.time)
    legs: LegPublisher | None = None  # leg facts to the C.12 second stage

    def emit(self, records: list[Record], metrics: ConsumerMetrics) -> None:
        if not records:
            return
        self.output.write(records)
        if self.legs is not None:
            self.legs.publish(records)
        for rec in records:
            metrics.records_out.labels(rec.kind).inc()
            if rec.kind == "anomaly":
                metrics.anomalies.labels(rec.anomaly).inc()  # type: ignore[union-attr]


class ConsumerService:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        c = settings.consumer
        self.store = CheckpointStore(c.state_dir)
        self.output_dir = Path(c.sink.partition(":")[2])
        self.registry = registry or CollectorRegistry()
        self.metrics = ConsumerMetrics(self.registry)
        self.workers: dict[int, PartitionWorker] = {}
        self.topic = settings.kafka.topic
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._last_checkpoint = time.monotonic()
        self.assigned_once = threading.Event()
        self.legs = LegPublisher(settings, self.registry)

    # -- lifecycle -------------------------------------------------------------------------

    def engine_config(self) -> EngineConfig:
        c = self.settings.consumer
        return EngineConfig(
            reorder_window_ms=c.reorder_window_ms,
            dedup_window_ms=c.dedup_window_ms,
            tracker=TrackerConfig(max_calls=c.max_calls_per_partition, t1_ms=c.t1_ms),
        )

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        conf: dict[str, Any] = {
            "bootstrap.servers": s.kafka.bootstrap,
            "group.id": s.consumer.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": s.consumer.session_timeout_ms,
            "heartbeat.interval.ms": max(500, s.consumer.session_timeout_ms // 5),
            "max.poll.interval.ms": max(60000, s.consumer.session_timeout_ms * 2),
            "logger": logging.getLogger("hepwatch.consume.kafka"),
            **{k: v for k, v in s.kafka.extra.items()},
        }
        consumer = Consumer(conf)
        self._consumer = consumer
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s", self.topic, s.consumer.group)
        try:
            while not self._stop.is_set():
                batch = consumer.consume(num_messages=1000, timeout=0.2)
                now = time.time()
                pending: dict[int, list[Observation]] = {}
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error: %s", err)
                        continue
                    obs = self._observation(msg, now)
                    if obs is not None:
                        pending.setdefault(msg.partition(), []).append(obs)
                for partition, observations in pending.items():
                    self._feed(self.workers[partition], observations)
                self._idle_advance(now)
                if time.monotonic() - self._last_checkpoint >= s.consumer.checkpoint_interval_s:
                    self.checkpoint_all()
                    self._update_lag()
        finally:
            self.checkpoint_all()
            for w in self.workers.values():
                w.output.close()
            self.workers.clear()
            consumer.close()
            log.info("consumer stopped")

    # -- partitions ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            worker = self._restore(tp.topic, tp.partition)
            worker.legs = self.legs
            self.workers[tp.partition] = worker
            if worker.next_offset is not None:
                tp.offset = worker.next_offset
        consumer.assign(partitions)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))
        self.assigned_once.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            worker = self.workers.pop(tp.partition, None)
            if worker is not None:
                self._checkpoint(worker)
                worker.output.close()
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _restore(self, topic: str, partition: int) -> PartitionWorker:
        output = PartitionOutput(self.output_dir, topic, partition)
        ckpt = self.store.load(topic, partition)
        if ckpt is None:
            output.truncate(0)
            return PartitionWorker(topic, partition, Engine(self.engine_config()), output)
        output.truncate(ckpt.output_bytes)
        log.info(
            "partition %d: resumed at offset %d with %d calls in flight",
            partition,
            ckpt.next_offset,
            len(ckpt.engine.tracker),
        )
        w = PartitionWorker(topic, partition, ckpt.engine, output, next_offset=ckpt.next_offset)
        return w

    def _checkpoint(self, worker: PartitionWorker) -> None:
        if worker.next_offset is None:
            return
        if not self.legs.flush():
            return  # a checkpoint must not cover leg facts that are not in Kafka yet
        size = worker.output.sync()
        self.store.save(
            worker.topic, worker.partition, Checkpoint(worker.next_offset, size, worker.engine)
        )
        if self._consumer is not None:
            tp = TopicPartition(worker.topic, worker.partition, worker.next_offset)
            try:
                self._consumer.commit(offsets=[tp], asynchronous=False)
            except KafkaException as exc:
                # The checkpoint is the truth; a failed commit only means replay on restart.
                log.warning("offset commit for partition %d failed: %s", worker.partition, exc)
        self.metrics.checkpoints.inc()

    def checkpoint_all(self) -> None:
        for worker in list(self.workers.values()):
            self._checkpoint(worker)
        self._last_checkpoint = time.monotonic()
        self.metrics.live_calls.set(sum(len(w.engine.tracker) for w in self.workers.values()))

    # -- records ---------------------------------------------------------------------------

    def _observation(self, msg: Any, now: float) -> Observation | None:
        """The SIP observation a record holds; counts and skips what is not one."""
        worker = self.workers.get(msg.partition())
        if worker is None:
            return None  # revoked meanwhile
        offset = msg.offset()
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
        (capture times are the proxies' clocks, close to ours)."""
        idle = self.settings.consumer.idle_advance_s
        target = int((now - idle) * 1e6)
        for worker in self.workers.values():
            if now - worker.last_wall >= idle and target > worker.engine.stream_time:
                worker.emit(worker.engine.advance_to(target), self.metrics)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for worker in self.workers.values():
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(worker.topic, worker.partition), timeout=1.0, cached=False
                )
            except KafkaException:
                continue
            position = worker.next_offset if worker.next_offset is not None else 0
            self.metrics.lag.labels(str(worker.partition)).set(max(0, high - position))


def run_service(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, serving metrics on `consumer.metrics_listen`."""
    import signal

    from consumers.runtime import tune_gc
    from hepwatch.config import parse_host_port
    from hepwatch.ops_http import start_ops_server

    tune_gc()
    service = ConsumerService(settings)
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
