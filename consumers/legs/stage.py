"""The C.12 second keyed stage on Kafka: leg facts out of `consume`, correlated in `legs`.

DESIGN "Consumers": cross-leg checks run in a second keyed stage fed by per-leg summaries
keyed by the leg-correlation id. The legs of one B2BUA/SBC call have their own Call-IDs, so
the first stage (one engine per HEP-topic partition) cannot see them together:

    HEP topic --consume (Engine per partition)--> leg facts --> legs topic (keyed)
    legs topic --legs (LegPartition per partition: dedup + LegCorrelator)--> C.12 anomalies

- `LegPublisher` (first stage side): publishes each `LegRecord` the engines emit to the legs
  topic (default `<kafka.topic>.legs`), keyed by `codec.partition_key` so every leg of a
  call lands in one partition, with an idempotent producer (acks=all, retried without a
  deadline). `flush()` runs before the first stage saves a checkpoint: a checkpoint never
  covers input whose leg facts are not in Kafka, so none is lost; a crash replays them
  (the second stage drops the repeats by record id).
- `LegStage` (second stage): consumer group `<consumer.group>.legs`; each assigned partition
  gets a `LegPartition` restored from its checkpoint (state, next offset, output length, as
  `consumers.checkpoint` does for the first stage), its anomalies go to the same sink as the
  first stage's records (`jsonl:DIR`: one file per legs partition beside theirs). Stream
  time is the leg facts' detection time; a partition quiet for `idle_advance_s` follows the
  wall clock `idle_advance_s` behind, as the first stage does, so decisions still come.
- `hepwatch consume` runs the stage in a thread of its own (`LegStageThread`) unless
  `consumer.legs_stage` is false (`--no-legs-stage`); `hepwatch legs` runs it alone
  (`run_legs_service`).

Limits: see `consumers.legs.codec` for which legs meet under the key. The stage writes to
`jsonl:DIR` sinks only so far: with a ClickHouse sink consume logs a warning and does not
start it (`hepwatch legs` refuses), the leg facts wait in the legs topic. Decisions made when an
idle partition followed the wall clock depend on when facts arrived, so a replay after a
crash may decide a borderline case differently (as the first stage's wall-clock timers).
A permanent delivery failure (not a broker outage, which is waited out) stops checkpoints of
the first stage and is logged and counted: a restart replays from the last good one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from consumers.checkpoint import Checkpoint, CheckpointStore, PartitionOutput
from consumers.legs.codec import LegCodecError, decode, encode, partition_key
from consumers.legs.partition import LegPartition
from consumers.records import AnomalyRecord, LegRecord, Record
from hepwatch.config import Settings

log = logging.getLogger("hepwatch.legs")


def legs_topic(settings: Settings) -> str:
    return settings.consumer.legs_topic or f"{settings.kafka.topic}.legs"


def legs_group(settings: Settings) -> str:
    return f"{settings.consumer.group}.legs"


def _client_conf(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka.bootstrap, **dict(settings.kafka.extra)}


def ensure_topic(settings: Settings, timeout: float = 10.0) -> bool:
    """Create the legs topic when it does not exist: `consumer.legs_partitions` partitions,
    0 meaning as many as the HEP topic has. False when the broker could not be asked."""
    topic = legs_topic(settings)
    admin = AdminClient(_client_conf(settings))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        log.warning("legs topic %s: broker metadata unavailable: %s", topic, exc)
        return False
    have = md.topics.get(topic)
    if have is not None and have.error is None:
        return True
    n = settings.consumer.legs_partitions
    if n <= 0:
        hep = md.topics.get(settings.kafka.topic)
        n = len(hep.partitions) if hep is not None and hep.error is None else 1
    futures = admin.create_topics([NewTopic(topic, n, 1)], operation_timeout=timeout)
    try:
        futures[topic].result(timeout=timeout)
        log.info("created legs topic %s with %d partitions", topic, n)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            log.warning("legs topic %s: create failed: %s", topic, exc)
            return False
    return True


# -- first stage side ------------------------------------------------------------------------


class LegPublisher:
    """Leg facts of the first stage to the legs topic (see the module docstring)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.topic = legs_topic(settings)
        self._topic_ready = ensure_topic(settings)
        p = "hepwatch_consumer_legs_"
        self.published = Counter(p + "published", "Leg facts produced", registry=registry)
        self.failures = Counter(
            p + "delivery_failures", "Leg facts Kafka refused for good", registry=registry
        )
        self.failed: str | None = None  # the first permanent delivery failure
        conf: dict[str, Any] = {
            **_client_conf(settings),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": settings.kafka.compression,
            "message.timeout.ms": 0,  # retry while the broker is away: checkpoints wait
            "logger": logging.getLogger("hepwatch.legs.kafka"),
        }
        self._producer = Producer(conf)

    def publish(self, records: list[Record]) -> int:
        n = 0
        for rec in records:
            if not isinstance(rec, LegRecord):
                continue
            value = encode(rec)
            key = partition_key(rec).encode()
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        value=value,
                        key=key,
                        timestamp=rec.detected_at_us // 1000,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)  # queue full: wait for the broker
            n += 1
        if n:
            self.published.inc(n)
            self._producer.poll(0)
        return n

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failures.inc()
            if self.failed is None:
                self.failed = str(err)
            log.error("leg fact not delivered to %s: %s", self.topic, err)

    def flush(self, timeout: float = 10.0) -> bool:
        """True when every leg fact published so far is in Kafka: a checkpoint may follow."""
        if not self._topic_ready:
            self._topic_ready = ensure_topic(self.settings, timeout=min(timeout, 5.0))
        left = self._producer.flush(timeout)
        if left:
            log.warning("%d leg facts not yet in %s; checkpoint deferred", left, self.topic)
            return False
        if self.failed is not None:
            log.error(
                "a leg fact was refused by Kafka (%s); no checkpoint until a restart", self.failed
            )
            return False
        return True


# -- second stage ----------------------------------------------------------------------------


class LegStageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "hepwatch_legs_"
        self.consumed = Counter(p + "records", "Legs-topic records consumed", registry=registry)
        self.rejected = Counter(
            p + "rejected", "Legs-topic records refused, by reason", ["reason"], registry=registry
        )
        self.repeats = Counter(p + "repeats", "Leg facts seen before, dropped", registry=registry)
        self.anomalies = Counter(
            p + "anomalies", "Cross-leg anomalies, by type", ["anomaly"], registry=registry
        )
        self.checkpoints = Counter(p + "checkpoints", "Checkpoints written", registry=registry)
        self.live_legs = Gauge(p + "live_legs", "Legs held by the correlators", registry=registry)
        self.lag = Gauge(
            p + "lag", "Records behind the high watermark", ["partition"], registry=registry
        )


@dataclass
class LegWorker:
    topic: str
    partition: int
    state: LegPartition
    output: PartitionOutput
    next_offset: int | None = None
    last_wall: float = field(default_factory=time.time)


OutputFactory = Callable[[str, int], PartitionOutput]


class LegStage:
    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        output: OutputFactory | None = None,
    ) -> None:
        self.settings = settings
        c = settings.consumer
        self.topic = legs_topic(settings)
        self.group = legs_group(settings)
        self.store = CheckpointStore(c.state_dir)
        scheme, _, target = c.sink.partition(":")
        if output is None and scheme != "jsonl":
            raise ValueError(
                f"the legs stage writes to jsonl:DIR sinks only so far, not {scheme}: "
                "its leg facts stay in the legs topic"
            )
        out_dir = Path(target)
        self._output = output or (lambda topic, p: PartitionOutput(out_dir, topic, p))
        self.registry = registry or CollectorRegistry()
        self.metrics = LegStageMetrics(self.registry)
        self.workers: dict[int, LegWorker] = {}
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._last_checkpoint = time.monotonic()
        self.assigned_once = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        while not ensure_topic(s) and not self._stop.is_set():
            self._stop.wait(2.0)
        conf: dict[str, Any] = {
            **_client_conf(s),
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": s.consumer.session_timeout_ms,
            "heartbeat.interval.ms": max(500, s.consumer.session_timeout_ms // 5),
            "max.poll.interval.ms": max(60000, s.consumer.session_timeout_ms * 2),
            "logger": logging.getLogger("hepwatch.legs.kafka"),
        }
        consumer = Consumer(conf)
        self._consumer = consumer
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("correlating legs from %s as group %s", self.topic, self.group)
        try:
            while not self._stop.is_set():
                batch = consumer.consume(num_messages=1000, timeout=0.2)
                now = time.time()
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error: %s", err)
                        continue
                    self._take(msg, now)
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
            log.info("legs stage stopped")

    # -- partitions ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            worker = self._restore(tp.topic, tp.partition)
            self.workers[tp.partition] = worker
            if worker.next_offset is not None:
                tp.offset = worker.next_offset
        consumer.assign(partitions)
        log.info("legs: assigned partitions %s", sorted(tp.partition for tp in partitions))
        self.assigned_once.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            worker = self.workers.pop(tp.partition, None)
            if worker is not None:
                self._checkpoint(worker)
                worker.output.close()
        log.info("legs: revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _restore(self, topic: str, partition: int) -> LegWorker:
        output = self._output(topic, partition)
        ckpt = self.store.load(topic, partition)
        state: object = ckpt.engine if ckpt is not None else None
        if ckpt is None or not isinstance(state, LegPartition):
            if ckpt is not None:
                log.error("%s/%d: checkpoint holds no leg state; starting empty", topic, partition)
            output.truncate(0)
            return LegWorker(topic, partition, LegPartition(), output)
        output.truncate(ckpt.output_bytes)
        log.info(
            "legs partition %d: resumed at offset %d with %d legs",
            partition,
            ckpt.next_offset,
            len(state),
        )
        return LegWorker(topic, partition, state, output, next_offset=ckpt.next_offset)

    def _checkpoint(self, worker: LegWorker) -> None:
        if worker.next_offset is None:
            return
        size = worker.output.sync()
        # the store pickles whatever state it is given; here a LegPartition, not an Engine
        ckpt = Checkpoint(worker.next_offset, size, worker.state)  # type: ignore[arg-type]
        self.store.save(worker.topic, worker.partition, ckpt)
        if self._consumer is not None:
            tp = TopicPartition(worker.topic, worker.partition, worker.next_offset)
            try:
                self._consumer.commit(offsets=[tp], asynchronous=False)
            except KafkaException as exc:
                log.warning("legs: offset commit for partition %d failed: %s", tp.partition, exc)
        self.metrics.checkpoints.inc()

    def checkpoint_all(self) -> None:
        for worker in list(self.workers.values()):
            self._checkpoint(worker)
        self._last_checkpoint = time.monotonic()
        self.metrics.live_legs.set(sum(len(w.state) for w in self.workers.values()))

    # -- records ---------------------------------------------------------------------------

    def _take(self, msg: Any, now: float) -> None:
        worker = self.workers.get(msg.partition())
        if worker is None:
            return  # revoked meanwhile
        self.metrics.consumed.inc()
        worker.next_offset = msg.offset() + 1
        worker.last_wall = now
        try:
            rec = decode(msg.value())
        except LegCodecError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning(
                "legs %d/%d: record refused (%s)",
                msg.partition(),
                msg.offset(),
                exc,
                exc_info=False,
            )
            return
        repeats = worker.state.stats.repeats
        self._emit(worker, worker.state.feed(rec))
        if worker.state.stats.repeats != repeats:
            self.metrics.repeats.inc()

    def _emit(self, worker: LegWorker, anomalies: list[AnomalyRecord]) -> None:
        if not anomalies:
            return
        worker.output.write(list(anomalies))
        for a in anomalies:
            self.metrics.anomalies.labels(a.anomaly).inc()

    def _idle_advance(self, now: float) -> None:
        """A quiet partition follows the wall clock, once it has read all there is: a
        partition just assigned has received nothing yet because nothing was fetched, and
        advancing it then would decide requests before their other leg is read."""
        idle = self.settings.consumer.idle_advance_s
        target = int((now - idle) * 1e6)
        for worker in self.workers.values():
            quiet = now - worker.last_wall >= idle and target > worker.state.now
            if quiet and self._caught_up(worker):
                self._emit(worker, worker.state.advance_to(target))

    def _caught_up(self, worker: LegWorker) -> bool:
        consumer = self._consumer
        if consumer is None:
            return False
        tp = TopicPartition(worker.topic, worker.partition)
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return False
        if high < 0:
            return False  # no fetch answered yet
        position = worker.next_offset
        if position is None:
            position = max(0, consumer.position([tp])[0].offset)
        return position >= high

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


# -- running it -------------------------------------------------------------------------------


class LegStageThread:
    """The second stage inside `hepwatch consume`: its own consumer, in its own thread.

    `on_error` is called when the stage dies (the consume service stops then); `close()`
    stops the stage, waits for its final checkpoint and re-raises what killed it.
    """

    def __init__(self, stage: LegStage, on_error: Callable[[], None] | None = None) -> None:
        self.stage = stage
        self.error: BaseException | None = None
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="legs-stage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stage.run()
        except BaseException as exc:
            self.error = exc
            log.exception("legs stage failed")
            if self._on_error is not None:
                self._on_error()

    def stop(self) -> None:
        self.stage.stop()

    def close(self, timeout: float = 60.0) -> None:
        self.stage.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("legs stage did not stop in time")
        if self.error is not None:
            raise RuntimeError(f"legs stage failed: {self.error}") from self.error


def start_legs_thread(
    settings: Settings, registry: CollectorRegistry, on_error: Callable[[], None] | None = None
) -> LegStageThread | None:
    """The stage in a thread; None (and a warning) for a sink it cannot write yet."""
    try:
        stage = LegStage(settings, registry)
    except ValueError as exc:
        log.warning("C.12 cross-leg stage not started: %s", exc)
        return None
    return LegStageThread(stage, on_error)


def run_legs_service(settings: Settings) -> None:
    """`hepwatch legs`: the second stage alone, until SIGTERM/SIGINT."""
    import signal

    from consumers.runtime import tune_gc
    from hepwatch.config import parse_host_port
    from hepwatch.ops_http import start_ops_server

    tune_gc()
    stage = LegStage(settings)
    if settings.consumer.metrics_listen:
        host, port = parse_host_port(settings.consumer.metrics_listen)
        loop = asyncio.new_event_loop()

        def ready() -> list[str]:
            return [] if stage.assigned_once.is_set() else ["no partition assigned yet"]

        _runner, bound = loop.run_until_complete(
            start_ops_server(host, port, stage.registry, ready)
        )
        log.info("metrics on http://%s:%d/metrics", host, bound)
        threading.Thread(target=loop.run_forever, name="ops-http", daemon=True).start()

    def _signal(signum: int, _frame: object) -> None:
        log.info("signal %d: checkpointing and stopping", signum)
        stage.stop()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    stage.run()


__all__ = [
    "LegPublisher",
    "LegStage",
    "LegStageThread",
    "ensure_topic",
    "legs_group",
    "legs_topic",
    "run_legs_service",
    "start_legs_thread",
]
