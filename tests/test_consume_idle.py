"""consume's idle rule on a real broker (tansu): a restored partition follows the wall clock
only once it has read everything available, so its timers cannot fire before its backlog.

The engine holds a call answered 2xx whose ACK waits in the partition (as after a restart
from a checkpoint taken between the two); its capture times are a minute old, far past the
missing-ACK timer (64*T1). Before the first fetch the idle advance must leave stream time
alone; after the backlog is read it moves on, and no missing ACK is reported.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from hepbuild import hep3
from kafka_broker import TansuBroker
from sipflow import Flow

from consumers.engine import Engine
from consumers.service import ConsumerService, PartitionWorker
from hepwatch.config import Settings

pytestmark = pytest.mark.integration


def _produce(broker: TansuBroker, topic: str, obs: list) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for o in obs:
        value = hep3(o.payload, src=o.src_ip, dst=o.dst_ip, sport=o.src_port, dport=o.dst_port,
                     ts=divmod(o.ts_us, 1_000_000))  # fmt: skip
        p.produce(topic, value=value, partition=0)
    assert p.flush(15) == 0


def test_restored_partition_waits_for_its_backlog(broker: TansuBroker, tmp_path: Path) -> None:
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=1)
    f = Flow("idle-1@test")
    f.setup()
    shift = int((time.time() - 60) * 1e6) - f.obs[0].ts_us
    for o in f.obs:
        o.ts_us += shift
    cut = next(i for i, o in enumerate(f.obs) if o.payload.startswith(b"ACK "))
    head, backlog = f.obs[:cut], f.obs[cut:]
    _produce(broker, topic, backlog)

    settings = Settings(
        kafka={"bootstrap": broker.bootstrap, "topic": topic},
        consumer={"group": "g-" + topic, "sink": f"jsonl:{tmp_path / 'out'}",
                  "state_dir": tmp_path / "state", "idle_advance_s": 0.5},
    )  # fmt: skip
    service = ConsumerService(settings)
    engine = Engine(service.engine_config())
    engine.feed_many(head)  # what the checkpoint holds: INVITE .. 200, no ACK yet
    before = engine.stream_time
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-" + topic,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        service._consumer = consumer
        service.output.open(topic, 0, None, 0)
        worker = PartitionWorker(topic, 0, engine, service.output, next_offset=0)
        worker.last_wall = time.time() - 10  # quiet for long enough
        service.workers[0] = worker
        consumer.assign([TopicPartition(topic, 0, 0)])

        service._idle_advance(time.time())  # nothing fetched yet
        assert engine.stream_time == before, "stream time moved before the backlog was read"

        deadline = time.monotonic() + 30
        while worker.next_offset < len(backlog):
            assert time.monotonic() < deadline, "backlog not fetched"
            msgs = consumer.consume(num_messages=100, timeout=0.5)
            obs = []
            for msg in msgs:
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(str(err))
                if err is None and (o := service._observation(msg, time.time())) is not None:
                    obs.append(o)
            if obs:
                service._feed(worker, obs)
        worker.last_wall = time.time() - 10
        consumer.consume(num_messages=1, timeout=1.0)  # a fetch answer: the watermark known
        service._idle_advance(time.time())
        assert engine.stream_time > time.time() * 1e6 - 5e6, "caught up: follows the wall clock"
        service.output.flush()
    finally:
        consumer.close()
        service.output.close()
    rows = [json.loads(line) for p in (tmp_path / "out").glob("*.jsonl")
            for line in p.read_text().splitlines()]  # fmt: skip
    anomalies = [r["anomaly"] for r in rows if r["kind"] == "anomaly"]
    assert "missing_ack" not in anomalies, anomalies
    assert any(r["kind"] == "message" and r["method"] == "ACK" for r in rows)
