"""Pause and retry for a Kafka consumer whose sink is unavailable.

Shared by the first stage (`consumers.service`) and the cross-leg stage
(`consumers.legs.stage`). On the first failed store every assigned partition is paused
(the consumer keeps polling, so it stays in its group and its lag shows); retries come at
`base_s`, doubling up to 16 times that; when a store succeeds fetching resumes from each
partition's first unprocessed offset, whatever the fetcher had queued when it paused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge


class PausedWorker(Protocol):
    topic: str
    partition: int
    next_offset: int | None
    last_wall: float


class SinkPause:
    def __init__(
        self,
        base_s: float,
        failures: Counter,
        paused: Gauge,
        log: logging.Logger,
        prefix: str = "",
    ) -> None:
        self.log = log
        self.base_s = base_s
        self.failures = failures
        self.paused_gauge = paused
        self.prefix = prefix  # "legs: " for the second stage's log lines
        self.active = False
        self.retry_at = 0.0
        self._delay = 0.0
        self._streak = 0
        self._since = 0.0

    def due(self) -> bool:
        return self.active and time.monotonic() >= self.retry_at

    def failed(self, exc: Exception, consumer: Consumer | None) -> None:
        """A store failed: pause fetching (first failure) and schedule the next attempt."""
        self.failures.inc()
        now = time.monotonic()
        if not self.active:
            self.active = True
            self._since = now
            self._streak = 1
            self._delay = self.base_s
            self.paused_gauge.set(1)
            self.log.error(
                "%ssink unavailable, fetching paused, retrying from %.1f s up to %.1f s apart: %s",
                self.prefix,
                self.base_s,
                self.base_s * 16,
                exc,
            )
            if consumer is not None:
                try:
                    consumer.pause(consumer.assignment())
                except KafkaException as kexc:
                    self.log.warning("%spausing the partitions failed: %s", self.prefix, kexc)
        else:
            self._streak += 1
            self._delay = min(self._delay * 2, self.base_s * 16)
            self.log.debug(
                "%ssink still unavailable (attempt %d): %s", self.prefix, self._streak, exc
            )
        self.retry_at = now + self._delay

    def recovered(self, consumer: Consumer | None, workers: Iterable[PausedWorker]) -> None:
        """A store succeeded: resume fetching from each partition's next offset."""
        self.active = False
        self.paused_gauge.set(0)
        self.log.info(
            "%ssink available again after %d failed attempts in %.1f s; fetching resumed",
            self.prefix,
            self._streak,
            time.monotonic() - self._since,
        )
        if consumer is None:
            return
        workers = list(workers)
        now = time.time()
        for worker in workers:
            worker.last_wall = now  # the backlog is not idleness
        try:
            consumer.resume(consumer.assignment())
            for worker in workers:
                if worker.next_offset is not None:
                    consumer.seek(
                        TopicPartition(worker.topic, worker.partition, worker.next_offset)
                    )
        except KafkaException as exc:
            self.log.warning("%sresuming the partitions failed: %s", self.prefix, exc)
