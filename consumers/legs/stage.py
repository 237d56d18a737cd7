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
- `LegStage` (second stage, on `consumers.partitioned.PartitionedConsumer` as consume is):
  consumer group `<consumer.group>.legs`; each assigned partition gets a `LegPartition`
  restored from its checkpoint (state, next offset, output length, as `consumers.checkpoint`
  does for the first stage), its anomalies go to the same kind of
  output as the first stage's records (`consumers.outputs.outputs_for`): `jsonl:DIR`, one
  file per legs partition beside theirs; `clickhouse:DSN`, the `anomalies` table, rows
  stamped with `src_partition` = `legs_src_partition(p)` = LEGS_SRC_PARTITION_BASE (100000)
  + the legs partition, a number no HEP topic partition reaches (Kafka allows far fewer per
  topic), so the sink's per-partition replay dedup (`resume`, called when a partition is
  restored) never mixes the two stages; `src_offset` is the partition's next offset when
  the row was made, so every row made after a checkpoint at N is stamped >= N. Outputs are
  flushed before each checkpoint (and when the sink says a flush is due); when ClickHouse
  is unavailable the stage pauses its partitions and retries, as consume does.
  Within `hepwatch consume` the stage has its own client; on a chDB directory the two
  clients share one process and `consumers.outputs` serialises their calls.
  Stream time follows the first stage's stream marks: `LegPublisher.publish_marks` sends,
  after the facts, how far each HEP partition's engine has processed, to every legs
  partition, and `LegPartition` decides by the lowest mark, so a HEP partition that lags
  (its consumer crashed and the group has not moved it yet) holds decisions back instead
  of making a relay look absent. A HEP partition whose mark stops rising for
  `legs_stall_s` is no longer waited for (logged, `hepwatch_legs_stalled_sources`). Only
  when no mark moves at all does a partition quiet for `idle_advance_s` follow the wall
  clock `idle_advance_s` behind (once it has read everything available).
- `hepwatch consume` runs the stage in a thread of its own (`LegStageThread`) unless
  `consumer.legs_stage` is false (`--no-legs-stage`); `hepwatch legs` runs it alone
  (`run_legs_service`), which needs a ClickHouse server (`clickhouse:http(s)://...`) or
  `jsonl:DIR`: a chDB directory can be open in one process only, consume's.

Limits: see `consumers.legs.codec` for which legs meet under the key. Decisions made by the
wall-clock fallback or after a partition stalled depend on when facts arrived, so a replay
after a crash may decide such a case differently (as the first stage's wall-clock timers).
A permanent delivery failure (not a broker outage, which is waited out) stops checkpoints of
the first stage and is logged and counted: a restart replays from the last good one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from consumers.checkpoint import CheckpointStore
from consumers.legs.codec import (
    LegCodecError,
    StreamMark,
    decode,
    encode,
    encode_mark,
    partition_key,
)
from consumers.legs.partition import LegPartition
from consumers.outputs import ClickHouseOutputs, Outputs, outputs_for
from consumers.partitioned import PartitionedConsumer
from consumers.records import AnomalyRecord, LegRecord, Record
from consumers.sink_pause import SinkPause
from hepwatch.config import Settings

log = logging.getLogger("hepwatch.legs")

LEGS_SRC_PARTITION_BASE = 100_000


def legs_src_partition(partition: int) -> int:
    """The `src_partition` of the rows a legs-topic partition produces (ClickHouse)."""
    return LEGS_SRC_PARTITION_BASE + partition


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
        self.marks_sent = Counter(
            p + "marks", "Stream marks produced to the legs topic", registry=registry
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
        self._mark_interval = settings.consumer.legs_mark_interval_s
        self._marked: dict[tuple[str, int], tuple[int, float]] = {}  # source -> (until, wall)
        self._layout: tuple[int, int] | None = None  # (HEP partitions, legs partitions)
        self._layout_at = float("-inf")

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

    def publish_marks(self, engines: Iterable[tuple[str, int, int]], wall_s: float) -> int:
        """A `StreamMark` for each (topic, partition, processed-until) whose engine moved on
        since its last mark, at most every `legs_mark_interval_s`, to every legs partition.
        Called after the facts of that processing were produced (see `codec`). Returns the
        number of messages produced (none while the topics' layout is unknown)."""
        due = [
            (topic, p, until)
            for topic, p, until in engines
            if until > (last := self._marked.get((topic, p), (-1, float("-inf"))))[0]
            and wall_s - last[1] >= self._mark_interval
        ]
        if not due:
            return 0
        layout = self._topic_layout(wall_s)
        if layout is None:
            return 0
        hep_partitions, legs_partitions = layout
        n = 0
        for topic, p, until in due:
            if p >= hep_partitions:
                self._layout_at = float("-inf")  # the HEP topic grew: look again next time
                continue
            value = encode_mark(StreamMark(topic, p, hep_partitions, until))
            for legs_p in range(legs_partitions):
                while True:
                    try:
                        self._producer.produce(
                            self.topic, value=value, partition=legs_p, on_delivery=self._delivered
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.1)
                n += 1
            self._marked[(topic, p)] = (until, wall_s)
        self.marks_sent.inc(n)
        self._producer.poll(0)
        return n

    def _topic_layout(self, wall_s: float) -> tuple[int, int] | None:
        if self._layout is not None and wall_s - self._layout_at < 60.0:
            return self._layout
        try:
            md = self._producer.list_topics(timeout=5.0)
        except KafkaException as exc:
            log.warning("stream marks: broker metadata unavailable: %s", exc)
            return self._layout
        hep = md.topics.get(self.settings.kafka.topic)
        legs = md.topics.get(self.topic)
        if hep is None or legs is None or hep.error is not None or legs.error is not None:
            return self._layout
        if hep.partitions and legs.partitions:
            self._layout = (len(hep.partitions), len(legs.partitions))
            self._layout_at = wall_s
        return self._layout

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
        self.marks = Counter(p + "marks", "Stream marks of the first stage read", registry=registry)
        self.stalled = Gauge(
            p + "stalled_sources",
            "HEP partitions whose stream marks stopped: no longer waited for",
            registry=registry,
        )
        self.anomalies = Counter(
            p + "anomalies", "Cross-leg anomalies, by type", ["anomaly"], registry=registry
        )
        self.checkpoints = Counter(p + "checkpoints", "Checkpoints written", registry=registry)
        self.live_legs = Gauge(p + "live_legs", "Legs held by the correlators", registry=registry)
        self.lag = Gauge(
            p + "lag", "Records behind the high watermark", ["partition"], registry=registry
        )
        self.sink_failures = Counter(
            p + "sink_failures", "Failed attempts to store anomalies", registry=registry
        )
        self.sink_paused = Gauge(
            p + "sink_paused",
            "1 while fetching is paused: the sink cannot store",
            registry=registry,
        )


@dataclass
class LegWorker:
    topic: str
    partition: int
    state: LegPartition
    key: int  # the partition's key in the outputs (its src_partition in ClickHouse)
    next_offset: int | None = None
    last_wall: float = field(default_factory=time.time)


class LegStage(PartitionedConsumer[LegWorker]):
    log = log
    label = "legs: "

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        output: Outputs | None = None,
    ) -> None:
        super().__init__(settings)
        c = settings.consumer
        self.topic = legs_topic(settings)
        self.group = legs_group(settings)
        self.store = CheckpointStore(c.state_dir)
        scheme = c.sink.partition(":")[0]
        if output is None and scheme not in ("jsonl", "clickhouse"):
            raise ValueError(
                f"the legs stage cannot write to {c.sink!r} (jsonl:DIR or clickhouse:DSN)"
            )
        self.output = output or outputs_for(c.sink, settings.clickhouse)
        self.clickhouse = isinstance(self.output, ClickHouseOutputs)
        self.registry = registry or CollectorRegistry()
        self.metrics = LegStageMetrics(self.registry)
        self.checkpoints = self.metrics.checkpoints
        self.lag = self.metrics.lag
        # Paused: the sink failed; fetching stops until a retried flush succeeds.
        self.pause = SinkPause(
            settings.clickhouse.retry_backoff_s,
            self.metrics.sink_failures,
            self.metrics.sink_paused,
            log,
            prefix="legs: ",
        )

    def run(self) -> None:
        s = self.settings
        while not ensure_topic(s) and not self._stop.is_set():
            self._stop.wait(2.0)
        conf = self._conf(dict(s.kafka.extra), "hepwatch.legs.kafka")
        self._loop(conf, f"correlating legs from {self.topic} as group {self.group}")

    def _connected(self) -> bool:
        return self.clickhouse

    # -- partitions ------------------------------------------------------------------------

    def _restore(self, topic: str, partition: int) -> LegWorker:
        key = legs_src_partition(partition) if self.clickhouse else partition
        ckpt = self.store.load(topic, partition)
        state: object = ckpt.engine if ckpt is not None else None
        if ckpt is not None and not isinstance(state, LegPartition):
            log.error("%s/%d: checkpoint holds no leg state; starting empty", topic, partition)
            ckpt = None
        # Without a checkpoint, rows stored by an earlier run of this partition (a crash
        # before its first checkpoint) are all skipped when made again: resume from 0.
        self.output.open(topic, key, ckpt, 0)
        stall_s = self.settings.consumer.legs_stall_s
        if ckpt is None:
            return LegWorker(topic, partition, LegPartition(stall_s=stall_s), key)
        assert isinstance(state, LegPartition)
        state.stall_s = stall_s
        state.restored(time.time())
        log.info(
            "legs partition %d: resumed at offset %d with %d legs",
            partition,
            ckpt.next_offset,
            len(state),
        )
        return LegWorker(topic, partition, state, key, next_offset=ckpt.next_offset)

    def _state(self, worker: LegWorker) -> LegPartition:
        return worker.state

    def _report_live(self) -> None:
        self.metrics.live_legs.set(sum(len(w.state) for w in self.workers.values()))

    # -- records ---------------------------------------------------------------------------

    def _take_batch(self, messages: list[Any], now: float) -> None:
        for msg in messages:
            self._take(msg, now)

    def _advance(self, now: float) -> None:
        self._idle_advance(now)

    def _take(self, msg: Any, now: float) -> None:
        worker = self.workers.get(msg.partition())
        if worker is None:
            return  # revoked meanwhile
        offset = msg.offset()
        if worker.next_offset is not None and offset < worker.next_offset:
            return  # fetched again after a seek: processed already
        if self.pause.active:
            # Fetched before the pause took effect: read again after the resume's seek.
            if worker.next_offset is None:
                worker.next_offset = offset
            return
        self.metrics.consumed.inc()
        worker.next_offset = offset + 1
        try:
            rec = decode(msg.value())
            if isinstance(rec, StreamMark):
                self.metrics.marks.inc()
                self._emit(worker, worker.state.mark(rec, now))
                return
        except LegCodecError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning(
                "legs %d/%d: record refused (%s)",
                msg.partition(),
                offset,
                exc,
                exc_info=False,
            )
            return
        worker.last_wall = now
        repeats = worker.state.stats.repeats
        self._emit(worker, worker.state.feed(rec))
        if worker.state.stats.repeats != repeats:
            self.metrics.repeats.inc()

    def _emit(self, worker: LegWorker, anomalies: list[AnomalyRecord]) -> None:
        if not anomalies:
            return
        # Stamped with the next offset: every row made after a checkpoint at N is >= N.
        offset = worker.next_offset if worker.next_offset is not None else 0
        self.output.write(worker.key, offset, list(anomalies))
        for a in anomalies:
            self.metrics.anomalies.labels(a.anomaly).inc()

    def _idle_advance(self, now: float) -> None:
        """Stream time follows the first stage's marks (`LegPartition`); a source that stops
        is left out after `legs_stall_s`. Only when no source moves at all (the first stage
        is gone, or never sent marks) does a quiet partition follow the wall clock, once it
        has read all there is: a partition just assigned has received nothing yet because
        nothing was fetched, and advancing it then would decide requests before their other
        leg is read."""
        idle = self.settings.consumer.idle_advance_s
        target = int((now - idle) * 1e6)
        stalled = 0
        for worker in self.workers.values():
            state = worker.state
            before = set(state.stalled)
            self._emit(worker, state.tick(now))
            if set(state.stalled) != before:
                self._log_stalls(worker, before)
            stalled += len(state.stalled)
            if state.moving(now):
                continue
            quiet = now - worker.last_wall >= idle and target > state.now
            if quiet and self._caught_up(worker):
                self._emit(worker, state.advance_to(target))
        self.metrics.stalled.set(stalled)

    def _log_stalls(self, worker: LegWorker, before: set[tuple[str, int]]) -> None:
        now_stalled = set(worker.state.stalled)
        for topic, p in sorted(now_stalled - before):
            log.warning(
                "legs partition %d: no stream mark from %s/%d for %.0f s; no longer waiting "
                "for it (its leg facts, if any come, are late)",
                worker.partition,
                topic,
                p,
                worker.state.stall_s,
            )
        for topic, p in sorted(before - now_stalled):
            log.info("legs partition %d: %s/%d moves again", worker.partition, topic, p)


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

    from consumers.runtime import dump_stacks_on_sigusr1, tune_gc
    from hepwatch.config import parse_host_port
    from hepwatch.ops_http import start_ops_server

    scheme, _, target = settings.consumer.sink.partition(":")
    if scheme == "clickhouse" and target.partition("://")[0].lower() == "chdb":
        raise ValueError(
            f"hepwatch legs cannot write to {target}: a chDB directory can be open in one "
            "process only, and consume's is the one writing there. Let `hepwatch consume` "
            "run the legs stage in its own process (without --no-legs-stage), or point both "
            "at a ClickHouse server (clickhouse:http://host:8123/db)"
        )
    tune_gc()
    dump_stacks_on_sigusr1()
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
