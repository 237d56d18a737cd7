"""Every end-to-end scenario through the whole pipeline: Kamailio -> collect -> Kafka -> consume.

The same scenarios as `test_scenarios_analyze.py`, but live: the project's Kamailio mirrors
HEP to a real `hepwatch collect`, which publishes to a real Kafka-protocol broker (tansu);
a real `hepwatch consume` (with its C.12 legs stage in its thread) follows the topic with
realistic timers (T1 = 500 ms, so a missing ACK is only claimed after 64*T1 = 32 s) and
writes JSON lines. One broker, one collector, one consumer and one Kamailio serve every
scenario; the scenarios run one after the other (each has its own Call-IDs), then the test
waits until every call has ended in the consumer's output (ended calls linger 64*T1; quiet
partitions follow the wall clock after `idle_advance_s`). Each scenario must then yield
exactly its `.anomalies`, by name and count, and every call exactly one dialog record per
dialog; no record is written twice and none belongs to a call no scenario made.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from collector_proc import CollectorProcess
from consumer_proc import ConsumerProc
from e2e.harness import (
    LOOPBACK,
    KamailioProxy,
    ScenarioError,
    expected_anomalies,
    run_scenario,
    scenario_names,
    skip_reason,
)
from kafka_broker import TansuBroker

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

T1_MS = 500
IDLE_ADVANCE_S = 2.0  # headroom for the collector -> Kafka -> consumer latency on a busy box
LINGER_S = 64 * T1_MS / 1000  # an ended call is reported this long after its last message
LEGS_SETTLE_S = 6.0  # the legs stage decides a request window + lateness after it


@dataclass
class Pipeline:
    out: Path
    call_ids: dict[str, list[str]] = field(default_factory=dict)  # scenario -> its Call-IDs
    errors: dict[str, str] = field(default_factory=dict)  # scenario -> why it did not run
    rows: list[dict] = field(default_factory=list)
    waited: str = ""  # what the output was still missing when the wait gave up

    def scenario_of(self) -> dict[str, str]:
        return {cid: name for name, cids in self.call_ids.items() for cid in cids}


def _records(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("*.jsonl")) if out.exists() else ():
        for line in path.read_text().splitlines():
            rows.append(json.loads(line))
    return rows


def _missing(rows: list[dict], call_ids: set[str]) -> set[str]:
    ended = {r["call_id"] for r in rows if r["kind"] == "dialog"}
    return call_ids - ended


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("kafka-e2e")
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    broker = TansuBroker()
    broker.start()
    collector = consumer = proxy = None
    try:
        broker.create_topic(topic, partitions=4)
        collector = CollectorProcess(tmp, broker.bootstrap, topic, listeners=("udp",))
        collector.start()
        consumer = ConsumerProc(
            broker,
            topic,
            f"g-{topic}",
            tmp,
            env={
                "HEPWATCH_CONSUMER__T1_MS": str(T1_MS),
                "HEPWATCH_CONSUMER__IDLE_ADVANCE_S": str(IDLE_ADVANCE_S),
            },
        ).start()
        proxy = KamailioProxy(LOOPBACK, collector.udp_port, workdir=tmp / "kamailio")
        proxy.start()
        p = Pipeline(out=tmp / "out")
        for name in scenario_names():
            try:
                result = run_scenario(name, proxy, run_dir=tmp / "runs" / name)
            except ScenarioError as exc:
                p.errors[name] = str(exc)
                continue
            p.call_ids[name] = result.call_ids
        wanted = {cid for cids in p.call_ids.values() for cid in cids}
        deadline = time.monotonic() + LINGER_S + 10 * IDLE_ADVANCE_S + 60
        while time.monotonic() < deadline and _missing(_records(p.out), wanted):
            time.sleep(1.0)
        missing = _missing(_records(p.out), wanted)
        if missing:
            p.waited = f"no dialog record for {sorted(missing)}"
        time.sleep(LEGS_SETTLE_S)
        consumer.stop()
        p.rows = _records(p.out)
        yield p
    finally:
        if proxy is not None:
            proxy.close()
        if consumer is not None and consumer.proc is not None and consumer.proc.poll() is None:
            consumer.kill()
        if collector is not None:
            collector.kill()
        broker.stop()


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_yields_exactly_its_anomalies(name: str, pipeline: Pipeline) -> None:
    assert name not in pipeline.errors, pipeline.errors.get(name)
    call_ids = set(pipeline.call_ids[name])
    assert call_ids, f"{name}: SIPp logged no Call-ID"
    rows = [r for r in pipeline.rows if r["call_id"] in call_ids]
    anomalies = [r for r in rows if r["kind"] == "anomaly"]
    details = [
        (a["anomaly"], a["severity"], a["method"], a["cseq"], a["status"], a["fields"])
        for a in anomalies
    ]
    assert Counter(a["anomaly"] for a in anomalies) == expected_anomalies(name), details
    dialogs = [r for r in rows if r["kind"] == "dialog"]
    assert {d["call_id"] for d in dialogs} == call_ids, pipeline.waited
    assert len({(d["call_id"], d["callee_tag"]) for d in dialogs}) == len(dialogs)


def test_nothing_written_twice_or_for_an_unknown_call(pipeline: Pipeline) -> None:
    ids = Counter((r["kind"], r["id"]) for r in pipeline.rows)
    assert [k for k, n in ids.items() if n > 1] == []
    known = pipeline.scenario_of()
    strays = sorted({r["call_id"] for r in pipeline.rows} - known.keys())
    assert strays == []
    kinds = Counter(r["kind"] for r in pipeline.rows)
    assert kinds["message"] > 0 and kinds["dialog"] >= len(known)
