"""The Kafka side both consumer stages share: one worker per assigned partition, restored
from its checkpoint, flushed-checkpointed-committed in that order, paused while the sink
is down.

`consume` (`consumers.service.ConsumerService`: HEP records into per-partition engines) and
the C.12 second stage (`consumers.legs.stage.LegStage`: leg facts into per-partition
correlators) differ only in what a partition's state is and what a record does to it. This
base class holds the rest, so both follow one rule set:

- assignment restores each partition (`_restore`, the subclass's) and seeks to its
  checkpoint's offset; a partition assigned while the sink is paused stays paused;
- revocation checkpoints the leaving partitions, or, while the sink is down, drops what is
  buffered (nothing of theirs is committed; the next owner replays from the checkpoint) and
  puts the partitions kept here back to their checkpoints, as the dropped buffer held theirs
  too (`_drop_unstored`);
- a checkpoint flushes the output first (None when the sink is unavailable: pause), then
  saves each partition's state with its next offset and output length, then commits those
  offsets; `_may_checkpoint` can defer it (the first stage waits for its leg facts to be in
  Kafka);
- the loop consumes in batches, hands them to `_take_batch`, lets quiet partitions advance
  (`_advance`) and flushes when the output says so, checkpoints every
  `checkpoint_interval_s`, and on stop makes one last attempt, checkpoints and closes.

Workers need `topic`, `partition`, `next_offset`, `last_wall` and `key` (the partition's key
in the outputs).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import sys
import threading
import time
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from consumers.checkpoint import Checkpoint, CheckpointStore
from consumers.outputs import Outputs, SinkUnavailable
from consumers.partition_progress import caught_up, report_lag
from consumers.sink_pause import SinkPause
from hepwatch.config import Settings


class Worker(Protocol):
    topic: str
    partition: int
    next_offset: int | None
    last_wall: float

    @property
    def key(self) -> int: ...


W = TypeVar("W", bound=Worker)

CLOSE_TIMEOUT_S = 10.0
# Past the close bound, how long before the process is ended regardless (see _close_watchdog).
CLOSE_WATCHDOG_GRACE_S = 15.0
_closing = 0  # consumers of this process inside _close (the consume and legs stages close together)
_closing_lock = threading.Lock()


@contextlib.contextmanager
def _close_watchdog() -> Any:
    """Bound a close even when Python itself cannot go on. A close seen in CI kept both of a
    process's stages inside `join(CLOSE_TIMEOUT_S)` for 30 s: the interpreter lock never
    came back from librdkafka's close during a rebalance, so no Python-level timeout could
    fire. faulthandler's timer is a C thread that needs no lock: past the bound plus a
    grace it writes every thread's stack to stderr and ends the process with status 1.
    Everything was checkpointed and committed before the close; what is lost is only the
    clean leave of the group (the group notices after its session timeout)."""
    global _closing
    out = sys.__stderr__
    with _closing_lock:
        _closing += 1
        if _closing == 1 and out is not None:
            faulthandler.dump_traceback_later(
                CLOSE_TIMEOUT_S + CLOSE_WATCHDOG_GRACE_S, exit=True, file=out
            )
    try:
        yield
    finally:
        with _closing_lock:
            _closing -= 1
            if _closing == 0:
                faulthandler.cancel_dump_traceback_later()


class PartitionedConsumer(Generic[W]):
    """Subclasses set `topic`, `group`, `output`, `store`, `pause` and the two metrics, and
    implement `_restore`, `_state`, `_take_batch` and `_advance`."""

    log: logging.Logger
    label = ""  # how log lines name the stage ("" or "legs: ")
    topic: str
    group: str
    output: Outputs
    store: CheckpointStore
    pause: SinkPause
    checkpoints: Counter
    lag: Gauge

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: dict[int, W] = {}
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._last_checkpoint = time.monotonic()
        self.assigned_once = threading.Event()

    # -- what a subclass provides ----------------------------------------------------------

    def _restore(self, topic: str, partition: int) -> W:
        raise NotImplementedError

    def _state(self, worker: W) -> Any:
        """What the checkpoint keeps of a partition (an Engine, a LegPartition)."""
        raise NotImplementedError

    def _take_batch(self, messages: list[Any], now: float) -> None:
        raise NotImplementedError

    def _advance(self, now: float) -> None:
        """Quiet partitions follow the wall clock (each stage by its own rule)."""

    def _may_checkpoint(self) -> bool:
        return True

    def _report_live(self) -> None:
        """Set the stage's gauge of what it holds, after a checkpoint."""

    def _connected(self) -> bool:
        """Whether the output must be flushed once before subscribing (connect, migrate)."""
        return False

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _conf(self, extra: dict[str, Any], logger: str) -> dict[str, Any]:
        c = self.settings.consumer
        return {
            "bootstrap.servers": self.settings.kafka.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": c.session_timeout_ms,
            "heartbeat.interval.ms": max(500, c.session_timeout_ms // 5),
            "max.poll.interval.ms": max(60000, c.session_timeout_ms * 2),
            "logger": logging.getLogger(logger),
            **extra,
        }

    def _loop(self, conf: dict[str, Any], started: str) -> None:
        consumer = Consumer(conf)
        self._consumer = consumer
        if self._connected():
            self._flush()  # connect and migrate now; paused from the start when unavailable
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.log.info("%s", started)
        interval = self.settings.consumer.checkpoint_interval_s
        try:
            while not self._stop.is_set():
                if self.pause.due():
                    self._retry()
                batch = consumer.consume(num_messages=1000, timeout=0.2)
                now = time.time()
                good = []
                for msg in batch:
                    err = msg.error()
                    if err is None:
                        good.append(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        self.log.warning("%sconsume error: %s", self.label, err)
                if good:
                    self._take_batch(good, now)
                if not self.pause.active:
                    self._advance(now)
                    if self.output.due():
                        self._flush()
                if time.monotonic() - self._last_checkpoint >= interval:
                    self.checkpoint_all()
                    report_lag(self._consumer, self.workers.values(), self.lag)
        finally:
            if self.pause.active:
                self.pause.retry_at = 0.0
                self._retry()  # one last try; when it fails the input is replayed later
            self.checkpoint_all()
            if self.pause.active:
                self.log.warning(
                    "%sstopping while the sink is unavailable: partitions %s keep their last "
                    "checkpoint; what came after it is replayed by the next consumer",
                    self.label,
                    sorted(self.workers),
                )
            for worker in self.workers.values():
                self.output.close_partition(worker.key)
            self.workers.clear()
            self.output.close()
            self._close(consumer)
            self.log.info("%sstopped", self.label)

    def _close(self, consumer: Consumer) -> None:
        """Leave the group, waiting `CLOSE_TIMEOUT_S` at most. Everything is checkpointed and
        committed by now, so a close that does not return (librdkafka can wait on a group
        request in flight during a rebalance) only delays the group noticing that this
        member left, by its session timeout; it must not keep the process from stopping."""
        closer = threading.Thread(target=consumer.close, name="kafka-close", daemon=True)
        with _close_watchdog():
            closer.start()
            closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            self.log.warning(
                "%sKafka consumer did not close within %.0f s; stopping without it (the "
                "group reassigns this member's partitions after its session timeout)",
                self.label,
                CLOSE_TIMEOUT_S,
            )

    # -- partitions ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            worker = self._restore(tp.topic, tp.partition)
            self.workers[tp.partition] = worker
            if worker.next_offset is not None:
                tp.offset = worker.next_offset
        consumer.assign(partitions)
        if self.pause.active:
            consumer.pause(partitions)
        self.log.info(
            "%sassigned partitions %s", self.label, sorted(tp.partition for tp in partitions)
        )
        self.assigned_once.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [w for tp in partitions if (w := self.workers.pop(tp.partition, None))]
        if revoked:
            if not self.pause.active:
                self._checkpoint(revoked)
            if self.pause.active:
                self._drop_unstored(revoked)
            for worker in revoked:
                self.output.close_partition(worker.key)
                with contextlib.suppress(KeyError):  # KeyError: no lag measured yet
                    self.lag.remove(str(worker.partition))
        self.log.info(
            "%srevoked partitions %s", self.label, sorted(tp.partition for tp in partitions)
        )

    def _drop_unstored(self, revoked: list[W]) -> None:
        self.log.warning(
            "%spartitions %s revoked while the sink is unavailable: not committed, what they "
            "produced since the last checkpoint will be made again by the next owner",
            self.label,
            sorted(w.partition for w in revoked),
        )
        self.output.discard()
        for partition, worker in list(self.workers.items()):
            self.output.close_partition(worker.key)
            fresh = self._restore(worker.topic, partition)
            if fresh.next_offset is None:  # no checkpoint: start where Kafka would
                fresh.next_offset = self._start_offset(worker.topic, partition)
            self.workers[partition] = fresh  # seeked to fresh.next_offset on resume

    def _start_offset(self, topic: str, partition: int) -> int:
        """Where a partition without a checkpoint starts: its committed offset, else the
        low watermark (auto.offset.reset is earliest), 0 when Kafka cannot say."""
        consumer = self._consumer
        if consumer is None:
            return 0
        try:
            tp = consumer.committed([TopicPartition(topic, partition)], timeout=10)[0]
            if tp.offset >= 0:
                return tp.offset
            low, _ = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            return max(0, low)
        except KafkaException as exc:
            self.log.warning(
                "%spartition %d: start offset unknown (%s), assuming 0",
                self.label,
                partition,
                exc,
            )
            return 0

    # -- checkpoints -----------------------------------------------------------------------

    def _checkpoint(self, workers: list[W]) -> None:
        """Flush the output, write the checkpoints, commit the offsets: in that order."""
        positions = self._flush()
        if positions is None:
            return
        workers = [w for w in workers if w.next_offset is not None]
        if not workers or not self._may_checkpoint():
            return
        offsets = []
        for w in workers:
            assert w.next_offset is not None
            ckpt = Checkpoint(w.next_offset, positions.get(w.key, 0), self._state(w))
            self.store.save(w.topic, w.partition, ckpt)
            offsets.append(TopicPartition(w.topic, w.partition, w.next_offset))
            self.checkpoints.inc()
        if self._consumer is not None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # The checkpoint is the truth; a failed commit only means replay on restart.
                self.log.warning(
                    "%soffset commit for partitions %s failed: %s",
                    self.label,
                    sorted(w.partition for w in workers),
                    exc,
                )

    def checkpoint_all(self) -> None:
        self._last_checkpoint = time.monotonic()
        if self.pause.active:
            return
        self._checkpoint(list(self.workers.values()))
        if not self.pause.active:
            self._report_live()

    # -- sink availability -----------------------------------------------------------------

    def _flush(self) -> dict[int, int] | None:
        """Store what was written: output lengths by key; None (paused) when unavailable."""
        try:
            return self.output.flush()
        except SinkUnavailable as exc:
            self.pause.failed(exc, self._consumer)
            return None

    def _retry(self) -> None:
        if self._flush() is not None:
            self.pause.recovered(self._consumer, self.workers.values())

    def _caught_up(self, worker: W) -> bool:
        return caught_up(self._consumer, worker)


__all__ = ["PartitionedConsumer", "Worker"]
