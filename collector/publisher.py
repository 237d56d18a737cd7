"""The Kafka publisher: every accepted packet reaches the topic, or the disk spool, never neither.

Records go straight to librdkafka (idempotent, acks=all, compressed, batched) while the
broker acknowledges them. The publisher switches to spooling when the broker is down
(librdkafka reports all brokers down), when librdkafka's bounded queue is full, or when a
delivery fails; from then on every new record is appended to the spool behind the older
ones, so nothing overtakes what is waiting. A drain thread replays the spool in order and
acknowledges spool positions only after Kafka acknowledged the records; when the spool is
empty the publisher goes back to producing directly. Records that were inside librdkafka
when the broker went away come back through their delivery reports and are spooled too.

On shutdown everything accepted is flushed to Kafka or, if the broker cannot take it in
time, purged from librdkafka into the spool, so a restart delivers it. The one loss is a
full spool refusing a record; the spool counts and logs every refusal.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from collector.spool import Spool, SpoolRecord

log = logging.getLogger("hepwatch.publisher")

Headers = list[tuple[str, bytes]]

# Delivery latency buckets (seconds): the receive-to-acknowledge histogram.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass
class PublisherStats:
    produced: int = 0  # handed to librdkafka directly
    drain_sent: int = 0  # spool records handed to librdkafka
    delivery_failures: int = 0  # delivery reports with an error (direct ones are spooled)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1


def producer_config(
    bootstrap: str,
    *,
    compression: str = "lz4",
    linger_ms: int = 10,
    message_timeout_ms: int = 10000,
    queue_max_messages: int = 500000,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings for the collector's producer (DESIGN: idempotent, acks=all)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.num.messages": 10000,
        "batch.size": 1000000,
        "message.timeout.ms": message_timeout_ms,
        "queue.buffering.max.messages": queue_max_messages,
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
        # Success reports would cost a Python callback per record on the hot path; the
        # acknowledged count is derived instead (handed over - in flight - failed).
        "delivery.report.only.error": True,
    }
    config.update(extra or {})
    return config


class Publisher:
    """Publishes records to one topic, with the spool as the fallback when Kafka cannot take them.

    `publish` is called from the listener threads and the event loop; it never blocks on
    the broker. A background thread serves librdkafka's callbacks and drains the spool.
    """

    # The drain loop sends at most this many spool records before waiting for their acks.
    DRAIN_BATCH = 5000
    # Seconds between the publisher thread's polls of librdkafka (callbacks, spool drain).
    POLL_INTERVAL = 0.02

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        spool: Spool,
        *,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self.topic = topic
        self.spool = spool
        self.stats = PublisherStats()
        self._lock = threading.Lock()
        self._spooling = len(spool) > 0  # a spool left by an earlier run drains first
        self._broker_down = False
        self._stop = threading.Event()
        self._closed = False
        self._purge_requested = False
        # (records handed over when sampled, monotonic ns) for the latency histogram.
        self._latency_marks: collections.deque[tuple[int, int]] = collections.deque()
        self._config = dict(config)
        self._config["error_cb"] = self._on_error
        self._config["on_delivery"] = self._on_delivery
        self._factory = producer_factory
        self._fatal = False
        self._producer = producer_factory(self._config)
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()
        if self._spooling:
            log.info("spool holds %d records from an earlier run: draining first", len(spool))

    # -- the accept path ------------------------------------------------------------------

    def publish(self, key: bytes | None, value: bytes, timestamp_ms: int, headers: Headers) -> None:
        if self._spooling:
            with self._lock:
                if self._spooling:
                    self.spool.append(SpoolRecord(key, value, timestamp_ms, headers))
                    return
        try:
            self._producer.produce(self.topic, value, key, timestamp=timestamp_ms, headers=headers)
        except BufferError:
            # librdkafka's bounded queue is full: the broker is slow or gone.
            with self._lock:
                if not self._spooling:
                    log.warning("producer queue full: spooling to disk until Kafka catches up")
                self._spooling = True
                self.spool.append(SpoolRecord(key, value, timestamp_ms, headers))
            return
        self.stats.produced += 1
        if self.stats.produced & 255 == 0:
            self._latency_marks.append(
                (self.stats.produced + self.stats.drain_sent, time.monotonic_ns())
            )
            self._serve_reports()

    def publish_many(
        self,
        records: Sequence[tuple[bytes, bytes | None, int, int]],
        keys: Sequence[bytes],
        headers: Sequence[Headers],
    ) -> None:
        """`publish(key or keys[source], value, timestamp_ms, headers[source])` for each
        (value, key, timestamp_ms, source) record, in order, with the per-record work hoisted."""
        start = time.monotonic_ns()
        produce = self._producer.produce
        topic = self.topic
        done = 0
        try:
            for value, key, ts_ms, src in records:
                if self._spooling:
                    break
                produce(topic, value, key or keys[src], timestamp=ts_ms, headers=headers[src])
                done += 1
        except BufferError:
            pass  # the queue is full: publish() below spools the rest
        stats = self.stats
        if done:
            stats.produced += done
            if (stats.produced >> 8) != ((stats.produced - done) >> 8):  # sample 1 in 256
                self._latency_marks.append((stats.produced + stats.drain_sent, start))
        for value, key, ts_ms, src in records[done:]:
            self.publish(key or keys[src], value, ts_ms, headers[src])
        self._serve_reports()

    def _serve_reports(self) -> None:
        """Serve queued delivery reports on the calling (publishing) thread.

        confluent-kafka takes the GIL once per delivered record to release its per-record
        state, even when only failures reach Python. On the publisher thread every one of
        those is a GIL hand-off against the busy receive thread; here it is uncontended.
        """
        try:
            self._producer.poll(0)
        except KafkaException as exc:
            log.error("Kafka producer failed: %s", exc)
            self._fatal = True

    # -- librdkafka callbacks (run inside poll/flush: publisher or publishing thread) -------

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        """Delivery reports arrive for failures only (delivery.report.only.error)."""
        if err is None:
            return
        self.stats.delivery_failures += 1
        with self._lock:
            if not self._spooling:
                log.warning("delivery failed (%s): spooling to disk", err.str())
            self._spooling = True
            self.spool.append(
                SpoolRecord(msg.key(), msg.value(), msg.timestamp()[1], list(msg.headers() or ()))
            )

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            if not self._broker_down:
                log.warning("all Kafka brokers are down: spooling to disk")
            self._broker_down = True
            with self._lock:
                self._spooling = True
            self._purge_requested = True
        elif err.fatal():
            # For example UNKNOWN_PRODUCER_ID after a broker lost its state: the idempotent
            # producer cannot go on. The publisher thread replaces it (see _replace_producer).
            log.error("fatal Kafka producer error: %s", err.str())
            self._fatal = True
            with self._lock:
                self._spooling = True
        else:
            log.debug("Kafka: %s", err.str())

    # -- the publisher thread: callbacks and spool drain -----------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.wait(self.POLL_INTERVAL):
            try:
                # poll(timeout) would return at every delivery event (one per produce request,
                # hundreds a second), and every return takes the GIL from the receive path.
                self._producer.poll(0)
            except KafkaException as exc:
                log.error("Kafka producer failed: %s", exc)
                self._fatal = True
            self._observe_latency()
            if self._fatal:
                self._replace_producer()
                continue
            if self._purge_requested:
                # Records still queued (not yet sent) come back as purge reports and are spooled.
                self._purge_requested = False
                self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            if len(self.spool) == 0:
                if self._spooling and not self._broker_down and len(self._producer) == 0:
                    self._maybe_leave_spooling()
                continue
            if self._drain_once():
                backoff = 0.5
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    @property
    def acknowledged(self) -> int:
        """Records the broker acknowledged: handed over, minus in flight, minus failed."""
        st = self.stats
        return max(0, st.produced + st.drain_sent - len(self._producer) - st.delivery_failures)

    def _observe_latency(self) -> None:
        """Receive-to-acknowledge latency of sampled records.

        A sampled record counts as acknowledged once the acknowledged count reaches the
        number of records handed over before it; librdkafka acknowledges each partition in
        order, so this follows the real figure closely. Checked every 256 records on the
        publish path, and by the publisher thread when traffic stops.
        """
        marks = self._latency_marks
        if not marks:
            return
        acked = self.acknowledged
        now = time.monotonic_ns()
        # Two threads may pop here (publish path and publisher thread): tolerate the race.
        with contextlib.suppress(IndexError):
            while marks and marks[0][0] <= acked:
                self.stats.observe_latency((now - marks.popleft()[1]) / 1e9)

    def _replace_producer(self) -> None:
        """Swap a producer that hit a fatal error for a new one; spool what the old one held."""
        with self._lock:
            self._spooling = True  # from here on, new records wait in the spool
            old, self._producer = self._producer, self._factory(self._config)
            self._fatal = False
        # Everything the old producer still holds comes back as failed delivery reports,
        # which append it to the spool; delivery reports after a fatal error never succeed.
        for _ in range(3):
            old.purge(in_queue=True, in_flight=True, blocking=True)
            with contextlib.suppress(KafkaException):
                old.poll(0.1)
            if len(old) == 0:
                break
        if len(old):
            log.error("%d records could not be recovered from the failed producer", len(old))
        self._broker_down = True  # probe with one record before draining at full speed
        log.warning(
            "Kafka producer replaced after a fatal error; %d records in the spool", len(self.spool)
        )

    def _maybe_leave_spooling(self) -> None:
        with self._lock:
            if len(self.spool) == 0 and self._spooling:
                self._spooling = False
                log.info("spool drained: producing directly")

    def _drain_once(self) -> bool:
        """Send one batch from the spool and wait for it; True if all of it was acknowledged."""
        # While the broker looks down, probe with one record instead of a whole batch.
        batch = self.spool.read_batch(1 if self._broker_down else self.DRAIN_BATCH)
        if not batch:
            return True
        failed = [0]

        def on_drained(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failed[0] += 1
                self.stats.delivery_failures += 1

        sent = 0
        for _pos, rec in batch:
            try:
                self._producer.produce(
                    self.topic,
                    rec.value,
                    rec.key,
                    timestamp=rec.timestamp_ms,
                    headers=rec.headers,
                    on_delivery=on_drained,
                )
                sent += 1
                self.stats.drain_sent += 1
            except BufferError:
                break
            except KafkaException as exc:
                log.error("cannot replay spooled record: %s", exc)
                break
        # While spooling nothing else is produced, so an empty queue means every record of
        # the batch was either acknowledged or reported failed.
        while len(self._producer) and not self._fatal:
            try:
                self._producer.poll(0.005)
            except KafkaException as exc:
                log.error("Kafka producer failed while draining: %s", exc)
                self._fatal = True
        if sent and not failed[0] and not self._fatal and len(self._producer) == 0:
            self.spool.ack(batch[sent - 1][0])
            if self._broker_down:
                log.info(
                    "Kafka accepts records again: draining the spool (%d left)", len(self.spool)
                )
            self._broker_down = False
            return True
        # Something failed: replay from the last acknowledged position, in order.
        self._broker_down = True
        self.spool.rewind()
        return False

    # -- lifecycle and state ------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        return self._spooling

    @property
    def in_flight(self) -> int:
        return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver or spool everything accepted, then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        # Let the drain thread finish what it can while the broker answers.
        while time.monotonic() < deadline and (len(self._producer) or len(self.spool)):
            if self._broker_down and len(self._producer) == 0:
                break
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic() + 35))
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if remaining:
            log.warning(
                "%d records not acknowledged at shutdown: moving them to the spool", remaining
            )
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.poll(0)
            self._producer.flush(0)
        self.spool.close()
        log.info(
            "publisher closed: %d acknowledged, %d in the spool",
            self.acknowledged,
            len(self.spool),
        )
