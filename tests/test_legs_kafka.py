"""C.12 second stage on a real broker: `consume` publishes leg facts, `legs` correlates them.

An SBC call (A-leg and B-leg with their own Call-IDs, the B-leg carrying X-CID) is produced
as the collector would, the A-leg into HEP partition 0 and the B-leg into partition 1, so no
first-stage engine sees both legs. The A-leg's UPDATE is relayed as a re-INVITE on the B-leg:
the second stage must report `update_to_reinvite` exactly once, whether it runs in its own
process (`hepwatch legs` beside `consume --no-legs-stage`) or in consume's thread across
consumer crashes, with JSON-lines output or into chDB's `anomalies` table (where the second
stage's rows carry `src_partition` 100000 + legs partition); `hepwatch legs` refuses a chDB
directory, which only consume's process can open.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from consumer_proc import HEPWATCH, ConsumerProc
from hepbuild import hep3
from kafka_broker import TansuBroker, free_port
from sipflow import T0, Flow
from test_consume_clickhouse import chdb_query
from test_legs import C12, B2bua, _relay_update_as, _x_cid
from test_legs_marks import leg_streams, split_at, update_time

from consumers.legs.codec import StreamMark, encode, encode_mark, partition_key

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
        obs = [o.replace(ts_us=o.ts_us + shift) for o in flow.obs]
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


def test_legs_stage_waits_for_a_lagging_hep_partition(broker, tmp_path):
    """Facts and stream marks as two first-stage partitions send them, partition 1 stuck
    after the call's setup (its consumer died): `legs` must not decide the A-leg's UPDATE
    until partition 1's facts come, however long the legs topic stays quiet."""
    topic = f"legs-lag-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    broker.create_topic(f"{topic}.legs", partitions=1)
    a_items, b_items = leg_streams()
    b_setup, b_rest = split_at(b_items, update_time(a_items) - 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})

    def send(items) -> None:
        for item in items:
            if isinstance(item, StreamMark):
                p.produce(f"{topic}.legs", value=encode_mark(item), partition=0)
            else:
                p.produce(f"{topic}.legs", value=encode(item), key=partition_key(item).encode())
        assert p.flush(15) == 0

    send(b_setup + a_items)
    stage = ConsumerProc(broker, topic, "g-" + topic, tmp_path)
    stage.args[1] = "legs"
    stage.start()
    out = tmp_path / "out"
    try:
        _wait(out, lambda rows: bool(_c12(rows)), timeout=6)
        assert _c12(_records(out)) == [], "decided while partition 1 was behind"
        send(b_rest)
        rows = _wait(out, lambda rows: bool(_c12(rows)), timeout=30)
    finally:
        stage.stop()
    assert [a["anomaly"] for a in _c12(rows)] == ["update_to_reinvite"], stage.log()


# -- ClickHouse (chDB) -------------------------------------------------------------------------


def _metric(proc: ConsumerProc, name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return proc.metrics().get((name, want), 0.0)


def _wait_metric(proc: ConsumerProc, name: str, at_least: float, timeout: float = 60.0,
                 **labels: str) -> float:  # fmt: skip
    deadline = time.monotonic() + timeout
    value = _metric(proc, name, **labels)
    while value < at_least and time.monotonic() < deadline:
        assert proc.proc is not None and proc.proc.poll() is None, proc.log()[-3000:]
        time.sleep(0.3)
        value = _metric(proc, name, **labels)
    return value


def test_c12_into_clickhouse_once_across_consumer_crashes(broker, tmp_path):
    topic = f"legs-ch-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    firsts, rests = _sbc_call(topic)
    _produce(broker, topic, firsts)
    db = tmp_path / "chdb"
    env = {"HEPWATCH_CLICKHOUSE__FLUSH_INTERVAL_S": "0.2"}

    def consumer() -> ConsumerProc:
        return ConsumerProc(
            broker, topic, "g-" + topic, tmp_path, env=env, sink=f"clickhouse:chdb://{db}",
            metrics_port=free_port(),
        ).start()  # fmt: skip

    c1 = consumer()
    got = _wait_metric(c1, "hepwatch_consumer_output_records_total", 8, kind="message")
    assert got >= 8, c1.log()[-3000:]
    assert _wait_metric(c1, "hepwatch_legs_records_total", 1) >= 1, c1.log()[-3000:]
    time.sleep(1.5)  # both stages checkpoint the setup
    c1.kill()
    # The rest is captured now: c1 followed the wall clock while idle, so capture times
    # from before that would arrive behind its stream time (decided as they come, late).
    delta = int(time.time() * 1e6) - min(o.ts_us for f in rests for o in f.obs)
    for flow in rests:
        flow.obs = [o.replace(ts_us=o.ts_us + delta) for o in flow.obs]
    _produce(broker, topic, rests)
    c2 = consumer()
    got = _wait_metric(c2, "hepwatch_legs_anomalies_total", 1, anomaly="update_to_reinvite")
    assert got == 1, c2.log()[-3000:]
    time.sleep(0.3)  # stored by a flush, likely not yet checkpointed: the replay makes it again
    c2.kill()
    c3 = consumer()
    # Assigned (after the group dropped c2: up to the 6 s session timeout) and checkpointing.
    assert _wait_metric(c3, "hepwatch_consumer_checkpoints_total", 1) >= 1, c3.log()[-3000:]
    assert _wait_metric(c3, "hepwatch_legs_checkpoints_total", 1) >= 1, c3.log()[-3000:]
    time.sleep(5)  # every replayed fact is through both stages again, dialogs ended (3.2 s)
    log = c3.stop()
    assert "C.12 cross-leg stage not started" not in log

    rows, doubled, dialogs = chdb_query(
        db,
        [
            "SELECT anomaly, call_id, src_partition, fields['leg_a_call_id'], "
            "fields['leg_b_call_id'], fields['correlation_method'], fields['leg_a_method'], "
            "fields['leg_b_method'] FROM anomalies WHERE family = 'C.12'",
            "SELECT 'anomalies', id, count() FROM anomalies GROUP BY id HAVING count() > 1 "
            "UNION ALL SELECT 'dialogs', id, count() FROM dialogs GROUP BY id "
            "HAVING count() > 1 UNION ALL SELECT 'sip_messages', id, count() FROM sip_messages "
            "GROUP BY id HAVING count() > 1",
            "SELECT DISTINCT call_id FROM dialogs ORDER BY call_id",
        ],
    )
    assert not doubled, doubled
    (row,) = rows
    assert row[:2] == ["update_to_reinvite", f"b-{topic}@sbc"]
    assert int(row[2]) >= 100_000  # the legs partition's rows, apart from the HEP topic's
    assert row[3:] == [f"a-{topic}@test", f"b-{topic}@sbc", "x_cid", "UPDATE", "INVITE"]
    assert dialogs == [[f"a-{topic}@test"], [f"b-{topic}@sbc"]]


def test_legs_command_refuses_a_chdb_directory(broker, tmp_path):
    done = subprocess.run(
        [HEPWATCH, "legs", "--kafka", broker.bootstrap, "--topic", "t", "--group", "g",
         "--sink", f"clickhouse:chdb://{tmp_path / 'db'}", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "a chDB directory can be open in one process only" in done.stderr, done.stderr
    assert not (tmp_path / "db").exists()
