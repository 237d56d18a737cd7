"""C.12 second stage on a real broker: `consume` publishes leg facts, `legs` correlates them.

An SBC call (A-leg and B-leg with their own Call-IDs, the B-leg carrying X-CID) is produced
as the collector would, the A-leg into HEP partition 0 and the B-leg into partition 1, so no
first-stage engine sees both legs. The A-leg's UPDATE is relayed as a re-INVITE on the B-leg:
the second stage must report `update_to_reinvite` exactly once, whether it runs in its own
process (`hepwatch legs` beside `consume --no-legs-stage`) or in consume's thread across
consumer crashes.
"""

from __future__ import annotations

import dataclasses
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
from test_legs import C12, B2bua, _relay_update_as, _x_cid

pytestmark = pytest.mark.integration


def _sbc_call(tag: str) -> tuple[list[Flow], list[Flow]]:
    """The call's setup (both legs) and its rest (UPDATE relayed as re-INVITE, BYEs)."""
    call = B2bua(a_call_id=f"a-{tag}@test", b_call_id=f"b-{tag}@sbc")
    call.setup(b_invite=_x_cid(call))
    cut = (len(call.a.obs), len(call.b.obs))
    _relay_update_as(call, "INVITE", t=3.0)
    call.end(5.0)
    shift = int(time.time() * 1e6) - int(T0 * 1e6)  # capture times near the wall clock
    firsts, rests = [], []
    for flow, n in zip((call.a, call.b), cut, strict=True):
        obs = [dataclasses.replace(o, ts_us=o.ts_us + shift) for o in flow.obs]
        first, rest = Flow(flow.call_id), Flow(flow.call_id)
        first.obs, rest.obs = obs[:n], obs[n:]
        firsts.append(first)
        rests.append(rest)
    return firsts, rests


def _produce(broker: TansuBroker, topic: str, flows: list[Flow]) -> None:
    """Leg i of the call goes to partition i, whatever its Call-ID hashes to."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for partition, flow in enumerate(flows):
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
                partition=partition,
                timestamp=o.ts_us // 1000,
                headers=[("hep.node", b"p1")],
            )
    assert p.flush(15) == 0


def _records(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("*.jsonl")) if out.exists() else ():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row["_file"] = path.name
            rows.append(row)
    return rows


def _c12(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "anomaly" and r["anomaly"] in C12]


def _wait(out: Path, pred, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = _records(out)
        if pred(rows):
            return rows
        time.sleep(0.3)
    return rows


def _dialogs(n: int):
    return lambda rows: sum(r["kind"] == "dialog" for r in rows) >= n


def _check_once(rows: list[dict], topic: str) -> None:
    ids = Counter((r["kind"], r["id"]) for r in rows)
    doubled = [k for k, c in ids.items() if c > 1]
    assert not doubled, f"records written twice: {doubled[:5]}"
    c12 = _c12(rows)
    assert Counter(a["anomaly"] for a in c12) == {"update_to_reinvite": 1}, c12
    (an,) = c12
    assert an["_file"].startswith(f"{topic}.legs-")  # written by the second stage
    f = an["fields"]
    assert (f["leg_a_call_id"], f["leg_b_call_id"]) == (f"a-{topic}@test", f"b-{topic}@sbc")
    assert f["correlation_method"] == "x_cid"
    assert (f["leg_a_method"], f["leg_b_method"]) == ("UPDATE", "INVITE")
    assert {d["call_id"] for d in rows if d["kind"] == "dialog"} == {
        f"a-{topic}@test",
        f"b-{topic}@sbc",
    }


def test_legs_command_beside_consume_without_its_stage(broker, tmp_path):
    topic = f"legs-split-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    firsts, rests = _sbc_call(topic)
    whole = []
    for head, tail in zip(firsts, rests, strict=True):
        flow = Flow(head.call_id)
        flow.obs = head.obs + tail.obs
        whole.append(flow)
    _produce(broker, topic, whole)
    first = ConsumerProc(broker, topic, "g-" + topic, tmp_path)
    first.args.append("--no-legs-stage")
    first.start()
    out = tmp_path / "out"
    rows = _wait(out, _dialogs(2))
    time.sleep(4)  # long past the correlator's decision time: nothing may decide it here
    rows = _records(out)
    assert _dialogs(2)(rows), "the first stage did not end both legs"
    assert _c12(rows) == [], "the first stage alone cannot see both legs"
    second = ConsumerProc(broker, topic, "g-" + topic, tmp_path)
    second.args[1] = "legs"
    second.start()
    rows = _wait(out, lambda rows: bool(_c12(rows)), timeout=30)
    time.sleep(3)
    second.stop()
    first.stop()
    _check_once(_records(out), topic)


def test_c12_once_across_consumer_crashes(broker, tmp_path):
    topic = f"legs-crash-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    firsts, rests = _sbc_call(topic)
    _produce(broker, topic, firsts)
    out = tmp_path / "out"
    c1 = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    _wait(out, lambda rows: sum(r["kind"] == "message" for r in rows) >= 8)
    time.sleep(1.5)  # a checkpoint happens; the setup facts are in the legs topic by then
    c1.kill()
    _produce(broker, topic, rests)
    c2 = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    rows = _wait(out, lambda rows: bool(_c12(rows)))
    assert _c12(rows), "no C.12 anomaly after the restart"
    c2.kill()  # right after the anomaly: both stages replay from their last checkpoints
    c3 = ConsumerProc(broker, topic, "g-" + topic, tmp_path).start()
    _wait(out, _dialogs(2))
    time.sleep(5)  # every replayed fact is through both stages again
    c3.stop()
    _check_once(_records(out), topic)
