"""`hepwatch consume` on a real broker: crash and restart, rebalance between two consumers.

Calls are produced as the collector would (HEPv3 value, Call-ID key, capture-time
timestamp, hep.node header), half before and half after the disruption, so every call
spans it. The consumers write JSON lines per partition; the checks count what came out:
every call ends with exactly one dialog record (its BYE seen, so its state survived the
disruption), and no message, dialog or anomaly record is written twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from consumer_proc import ConsumerProc
from hepbuild import hep3
from kafka_broker import TansuBroker
from sipflow import T0, Flow

pytestmark = pytest.mark.integration


def _calls(n: int, prefix: str) -> tuple[list[Flow], list[Flow]]:
    """Each call's first half (setup) and second half (BYE) as separate flows."""
    firsts, seconds = [], []
    shift = int(time.time() * 1e6) - int(T0 * 1e6)  # capture times near the wall clock
    for i in range(n):
        f = Flow(f"{prefix}-{i}@test")
        f.at(i * 0.01)
        f.setup()
        cut = len(f.obs)
        f.wait(1.0)
        f.bye("A" if i % 2 else "B")
        f.obs = [o.replace(ts_us=o.ts_us + shift) for o in f.obs]
        first = Flow(f.call_id)
        first.obs = f.obs[:cut]
        second = Flow(f.call_id)
        second.obs = f.obs[cut:]
        firsts.append(first)
        seconds.append(second)
    return firsts, seconds


def _produce(broker: TansuBroker, topic: str, flows: list[Flow]) -> int:
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    n = 0
    for flow in flows:
        for o in flow.obs:
            value = hep3(
                o.payload,
                src=o.src_ip,
                dst=o.dst_ip,
                sport=o.src_port,
                dport=o.dst_port,
                ts=(o.ts_us // 1_000_000, o.ts_us % 1_000_000),
            )
            p.produce(
                topic,
                value=value,
                key=flow.call_id.encode(),
                timestamp=o.ts_us // 1000,
                headers=[("hep.node", b"p1")],
            )
            n += 1
    assert p.flush(15) == 0
    return n


def _records(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rows.append(json.loads(line))
    return rows


def _wait(out: Path, pred, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = _records(out) if out.exists() else []
        if pred(rows):
            return rows
        time.sleep(0.3)
    return rows


def _check(rows: list[dict], n_calls: int) -> None:
    ids = Counter((r["kind"], r["id"]) for r in rows)
    doubled = [k for k, c in ids.items() if c > 1]
    assert not doubled, f"records written twice: {doubled[:5]}"
    dialogs = [r for r in rows if r["kind"] == "dialog"]
    assert len(dialogs) == n_calls
    assert {d["end_reason"] for d in dialogs} == {"bye"}
    assert all(d["state"] == "terminated" for d in dialogs)
    msgs = [r for r in rows if r["kind"] == "message"]
    assert len(msgs) == n_calls * 7  # INVITE 100 180 200 ACK BYE 200


def _done(n: int):
    def done(rows: list[dict]) -> bool:
        kinds = Counter(r["kind"] for r in rows)
        return kinds["dialog"] >= n and kinds["message"] >= 7 * n

    return done


def test_call_spanning_a_consumer_crash_is_tracked_to_its_end(broker, tmp_path):
    topic = f"consume-crash-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    firsts, seconds = _calls(20, "crash")
    _produce(broker, topic, firsts)
    c = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    rows = _wait(tmp_path / "out", lambda rows: sum(r["kind"] == "message" for r in rows) >= 100)
    time.sleep(1.5)  # let a checkpoint happen, then keep going past it
    c.kill()  # a crash: no final checkpoint, records after the last one are replayed
    assert rows, "the consumer wrote nothing before the crash"
    _produce(broker, topic, seconds)
    c2 = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    rows = _wait(tmp_path / "out", _done(20))
    c2.stop()
    _check(_records(tmp_path / "out"), 20)


def test_rebalance_between_two_consumers_loses_and_doubles_nothing(broker, tmp_path):
    topic = f"consume-rebal-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=4)
    firsts, seconds = _calls(24, "rebal")
    _produce(broker, topic, firsts)
    a = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    _wait(tmp_path / "out", lambda rows: sum(r["kind"] == "message" for r in rows) >= 120)
    b = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    time.sleep(8)  # the group rebalances: partitions move from a to b with their state
    _produce(broker, topic, seconds)
    _wait(tmp_path / "out", _done(24))
    a.stop()
    b.stop()
    _check(_records(tmp_path / "out"), 24)
