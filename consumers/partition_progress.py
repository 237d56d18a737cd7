"""Where a consumer stands in its assigned Kafka partitions: caught up or not, and its lag.

Shared by the first stage (`consumers.service`) and the cross-leg stage
(`consumers.legs.stage`): both keep one worker per partition with `topic`, `partition` and
`next_offset` (None until the first record), and both must only let a quiet partition
follow the wall clock once it has read everything there is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Gauge


class PartitionPosition(Protocol):
    topic: str
    partition: int
    next_offset: int | None


def caught_up(consumer: Consumer | None, worker: PartitionPosition) -> bool:
    """True when the partition's position is at the high watermark of its last fetch
    (librdkafka's cached value: no broker round trip). False before any fetch answered."""
    if consumer is None:
        return False
    tp = TopicPartition(worker.topic, worker.partition)
    try:
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return False
        position = worker.next_offset
        if position is None:
            position = max(0, consumer.position([tp])[0].offset)
    except KafkaException:
        return False
    return position >= high


def report_lag(
    consumer: Consumer | None, workers: Iterable[PartitionPosition], gauge: Gauge
) -> None:
    """Set `gauge{partition}` to the records between each position and the high watermark."""
    if consumer is None:
        return
    for worker in workers:
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(worker.topic, worker.partition), timeout=1.0, cached=False
            )
        except KafkaException:
            continue
        position = worker.next_offset if worker.next_offset is not None else 0
        gauge.labels(str(worker.partition)).set(max(0, high - position))
