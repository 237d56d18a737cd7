"""Alerts on the real embedded ClickHouse (chDB): counts and baselines from
sip_minute_counts (filled by its materialized view from sip_messages written through the
project's sink), evidence, persisted state across a restart, and delivery to a real local
HTTP receiver in Alertmanager's format."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alert_receiver import AlertReceiver
from clickhouse_connect.driver.client import Client
from history_db import insert_records, open_db

from consumers.alerts.evaluate import FIRING, PENDING, RESOLVED, GroupCount, group_key
from consumers.alerts.notify import AlertmanagerNotifier, LogNotifier, WebhookNotifier
from consumers.alerts.rules import Rule, parse_rules
from consumers.alerts.service import AlertEvaluator, DataClock
from consumers.alerts.store import AlertStore
from consumers.records import AnomalyRecord, MessageRecord, Record
from hepwatch.config import AlertsConfig

_ids = itertools.count(1)
A, B, C = "10.0.0.1", "10.0.0.2", "2001:db8::3"
# Evaluation time: two hours ago, 30 s into a minute; the current 5-minute window ends at E.
NOW = (int(time.time()) // 60 - 120) * 60 + 30.0
E = NOW - 30 + 60


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = open_db(tmp_path_factory.mktemp("chdb"))
    yield client
    client.close()


@pytest.fixture
def ch(db: Client) -> Client:
    for table in (
        "sip_messages",
        "sip_minute_counts",
        "anomalies",
        "alert_state",
        "alert_history",
    ):
        db.command(f"TRUNCATE TABLE {table}")
    return db


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    r = AlertReceiver().start()
    yield r
    r.stop()


def message(
    t: float,
    peer: str,
    status: int = 491,
    method: str = "INVITE",
    call_id: str | None = None,
    node: str = "sbc1",
    ua: str = "",
    retransmission: bool = False,
) -> MessageRecord:
    n = next(_ids)
    return MessageRecord(
        id=f"m{n}",
        event_time_us=int(t * 1_000_000),
        node=node,
        capture_id=1,
        call_id=call_id or f"call-{n}@test",
        is_request=status == 0,
        method=method,
        status=status,
        reason_phrase="Request Pending" if status == 491 else "",
        cseq=2,
        from_tag="f",
        to_tag="t",
        direction="callee_to_caller",
        dialog_state="confirmed",
        origin="endpoint",
        retransmission=retransmission,
        transport="udp",
        src_ip=peer,
        src_port=5060,
        dst_ip="192.0.2.10",
        dst_port=5060,
        user_agent=ua or f"UA-{peer}",
        allow=None,
        supported=None,
        require=None,
        session_expires=None,
        refresher=None,
        min_se=None,
        has_sdp=False,
        sdp_role="",
        malformed=[],
        correlation_id="",
        x_cid="",
    )


def anomaly(t: float, call_id: str, name: str = "glare_491") -> AnomalyRecord:
    return AnomalyRecord(
        id=f"a{next(_ids)}",
        anomaly=name,
        severity="medium",
        confidence=1.0,
        event_time_us=int(t * 1_000_000),
        detected_at_us=int(t * 1_000_000),
        node="sbc1",
        capture_id=1,
        call_id=call_id,
        caller_tag="f",
        callee_tag="t",
        dialog_state="confirmed",
        direction="callee_to_caller",
        method="INVITE",
        cseq=2,
        status=491,
        reason="",
        src_ip=A,
        src_port=5060,
        dst_ip="192.0.2.10",
        dst_port=5060,
        transport="udp",
        ua_sender="",
        ua_peer="",
        hep_correlation_id="",
        x_cid="",
        session_id_pair="",
        icid="",
        call_id_owner="unknown",
        family="C.1",
    )


def glare_rule(**kw: Any) -> Rule:
    fields: dict[str, Any] = {
        "name": "glare",
        "kind": "spike",
        "match": {"status": 491, "method": ["INVITE", "UPDATE"]},
        "window": "5m",
        "baseline_period": "1h",
        "factor": 3,
        "min_count": 5,
        "group_by": ["peer"],
        "for": "1m",
    }
    fields.update(kw)
    (rule,) = parse_rules({"rules": [fields]})
    return rule


def history_traffic(e: float = E) -> list[Record]:
    """Two 491s per 5-minute window over the past hour from peers A and B (baseline 2),
    then a burst from A in the last three minutes: 20 491s on 10 calls, 5 retransmissions
    (not counted), a 405 and a 491 to BYE (other rows); B sends 4. `e` ends the window."""
    E = e
    recs: list[Record] = []
    start = E - 300
    for w in range(12):
        t0 = start - 3600 + w * 300
        for peer in (A, B):
            recs.append(message(t0 + 10, peer, method="INVITE"))
            recs.append(message(t0 + 70, peer, method="UPDATE"))
    for i in range(20):
        call = f"burst-{i % 10}@test"
        recs.append(
            message(E - 180 + i * 6, A, call_id=call, method="UPDATE" if i % 2 else "INVITE")
        )
    for i in range(5):
        recs.append(message(E - 170 + i, A, call_id="burst-0@test", retransmission=True))
    recs.append(message(E - 100, A, status=405, method="UPDATE"))
    recs.append(message(E - 100, A, status=491, method="BYE"))
    for i in range(4):
        recs.append(message(E - 150 + i, B))
    recs.append(anomaly(E - 170, "burst-0@test"))
    recs.append(anomaly(E - 160, "burst-1@test"))
    recs.append(anomaly(E - 150, "other@test", "update_rejected"))
    return recs


def test_counts_and_median_baseline_from_minute_counts(ch: Client) -> None:
    insert_records(ch, history_traffic())
    store = AlertStore(ch)
    got = store.counts(glare_rule(), NOW)
    assert got == {
        group_key({"peer": A}): GroupCount({"peer": A}, 20.0, 2.0),
        group_key({"peer": B}): GroupCount({"peer": B}, 4.0, None),  # below min_count
    }
    # Retransmissions count when asked to; the baseline windows are unchanged.
    with_rtx = glare_rule(
        match={"status": 491, "method": ["INVITE", "UPDATE"], "retransmissions": True}
    )
    assert store.counts(with_rtx, NOW)[group_key({"peer": A})] == GroupCount({"peer": A}, 25.0, 2.0)
    # mean over 12 windows of 2 with, p90 likewise; no grouping sums A and B.
    total = glare_rule(group_by=[], baseline="mean")
    assert store.counts(total, NOW) == {"{}": GroupCount({}, 24.0, 4.0)}
    # A threshold rule on every 491 (BYE included) by node.
    thr = parse_rules(
        {
            "rules": [
                {
                    "name": "t",
                    "kind": "threshold",
                    "match": {"status": 491},
                    "threshold": 5,
                    "group_by": ["node_name", "user_agent"],
                }
            ]
        }
    )[0]
    got = store.counts(thr, NOW)
    assert got[group_key({"node_name": "sbc1", "user_agent": f"UA-{A}"})].value == 21
    assert got[group_key({"node_name": "sbc1", "user_agent": f"UA-{B}"})].value == 4


def test_evidence_names_the_calls_peers_agents_and_anomalies(ch: Client) -> None:
    insert_records(ch, history_traffic())
    ev = AlertStore(ch).evidence(glare_rule(), {"peer": A}, E - 300, E, top=3)
    assert ev["call_ids"] == [["burst-0@test", 2], ["burst-1@test", 2], ["burst-2@test", 2]]
    assert ev["peers"] == [[A, 20]]
    assert ev["user_agents"] == [[f"UA-{A}", 20]]
    assert ev["anomalies"] == [["glare_491", 2]]
    assert AlertStore(ch).evidence(glare_rule(), {"peer": C}, E - 300, E)["call_ids"] == []


def evaluator(ch: Client, receiver: AlertReceiver, rule: Rule) -> AlertEvaluator:
    return AlertEvaluator(
        ch,
        AlertsConfig(interval_s=15),
        rules=[rule],
        notifiers=[
            AlertmanagerNotifier(receiver.url, resend_s=60),
            WebhookNotifier(receiver.url + "/hook"),
            LogNotifier(),
        ],
        resend_s=60,
    )


def moves(transitions: list[Any]) -> list[tuple[str, str, str]]:
    return [(t.labels.get("peer", ""), t.from_state, t.to_state) for t in transitions]


def test_spike_from_one_peer_fires_for_that_peer_then_resolves(
    ch: Client, receiver: AlertReceiver
) -> None:
    insert_records(ch, history_traffic())
    ev = evaluator(ch, receiver, glare_rule())
    assert moves(ev.evaluate_once(NOW)) == [(A, "inactive", PENDING)]
    assert receiver.alertmanager == [] and receiver.webhook == []
    assert moves(ev.evaluate_once(NOW + 60)) == [(A, PENDING, FIRING)]

    (batch,) = receiver.alertmanager
    (alert,) = batch
    assert alert["labels"] == {"alertname": "glare", "severity": "warning", "peer": A}
    ann = alert["annotations"]
    assert ann["value"] == "20" and ann["baseline"] == "2" and ann["threshold"] == "6"
    assert ann["top_peers"] == f"{A} (20)"
    assert ann["top_call_ids"].startswith("burst-0@test (2), burst-1@test (2)")
    assert ann["top_anomalies"] == "glare_491 (2)"
    assert alert["startsAt"].endswith("Z")
    assert "sip_messages" in alert["generatorURL"]
    (hook,) = receiver.webhook
    assert hook["alerts"][0]["status"] == "firing"
    assert hook["alerts"][0]["evidence"]["peers"] == [[A, 20]]

    # Re-sent to Alertmanager after its resend interval, never to the webhook.
    assert ev.evaluate_once(NOW + 90) == []
    assert len(receiver.alertmanager) == 1
    assert ev.evaluate_once(NOW + 120) == []
    assert len(receiver.alertmanager) == 2 and len(receiver.webhook) == 1

    # The burst leaves the window: resolved, sent once with endsAt.
    assert moves(ev.evaluate_once(NOW + 300)) == [(A, FIRING, RESOLVED)]
    resolved = receiver.alertmanager[-1][0]
    assert resolved["endsAt"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(NOW + 300)))
    assert receiver.webhook[-1]["alerts"][0]["status"] == "resolved"
    n_am, n_hook = len(receiver.alertmanager), len(receiver.webhook)
    assert ev.evaluate_once(NOW + 360) == []
    assert (len(receiver.alertmanager), len(receiver.webhook)) == (n_am, n_hook)

    history = ch.query(
        "SELECT from_state, to_state, labels['peer'], evidence FROM alert_history ORDER BY time"
    ).result_rows
    assert [(h[0], h[1], h[2]) for h in history] == [
        ("inactive", PENDING, A),
        (PENDING, FIRING, A),
        (FIRING, RESOLVED, A),
    ]
    assert json.loads(history[1][3])["peers"] == [[A, 20]]


def test_restart_keeps_pending_since_and_does_not_renotify(
    ch: Client, receiver: AlertReceiver
) -> None:
    insert_records(ch, history_traffic())
    first = evaluator(ch, receiver, glare_rule())
    assert moves(first.evaluate_once(NOW)) == [(A, "inactive", PENDING)]
    # Restart: a new evaluator on the same database. The pending alert kept its since-time,
    # so a minute after it began it fires (a forgetful restart would start pending again).
    second = evaluator(ch, receiver, glare_rule())
    assert moves(second.evaluate_once(NOW + 60)) == [(A, PENDING, FIRING)]
    assert len(receiver.alertmanager) == 1 and len(receiver.webhook) == 1
    # Restart while firing: nothing is sent again before Alertmanager's resend interval.
    third = evaluator(ch, receiver, glare_rule())
    assert third.evaluate_once(NOW + 70) == []
    assert [s.state for s in third.alerts()] == [FIRING]
    assert len(receiver.alertmanager) == 1 and len(receiver.webhook) == 1
    assert third.evaluate_once(NOW + 120) == []
    assert len(receiver.alertmanager) == 2 and len(receiver.webhook) == 1


def test_failed_delivery_is_retried_without_duplicates(ch: Client, receiver: AlertReceiver) -> None:
    insert_records(ch, history_traffic())
    ev = evaluator(ch, receiver, glare_rule(**{"for": 0}))
    receiver.fail_next(1, 503)  # Alertmanager refuses once
    assert moves(ev.evaluate_once(NOW)) == [(A, "inactive", FIRING)]
    assert receiver.alertmanager == [] and len(receiver.webhook) == 1
    assert ev.stats["notify_failed_alertmanager"] == 1
    # Next cycle (after a restart even): Alertmanager gets it, the webhook no duplicate.
    ev = evaluator(ch, receiver, glare_rule(**{"for": 0}))
    assert ev.evaluate_once(NOW + 15) == []
    assert len(receiver.alertmanager) == 1 and len(receiver.webhook) == 1


def test_preview_shows_values_and_states(ch: Client, receiver: AlertReceiver) -> None:
    insert_records(ch, history_traffic())
    ev = evaluator(ch, receiver, glare_rule())
    ev.evaluate_once(NOW)
    views = {tuple(v.labels.items()): v for v in ev.preview(NOW + 30)["glare"]}
    a = views[(("peer", A),)]
    assert (a.value, a.baseline, a.limit, a.holds, a.state) == (20, 2, 6, True, PENDING)
    b = views[(("peer", B),)]
    assert (b.value, b.limit, b.holds, b.state) == (4, 5, False, "inactive")
    assert receiver.alertmanager == []  # preview sends nothing


SEED = """
import sys, time
sys.path.insert(0, {tests!r})
from history_db import insert_records, open_db
from test_alerts_clickhouse import history_traffic
client = open_db({db!r})
insert_records(client, history_traffic((int(time.time()) // 60 + 1) * 60))
client.close()
"""

RULES = """
rules:
  - name: glare
    kind: spike
    match: {status: 491, method: [INVITE, UPDATE]}
    window: 5m
    baseline_period: 1h
    min_count: 5
    group_by: [peer]
"""


def test_service_and_check_commands(tmp_path: Path, receiver: AlertReceiver) -> None:
    """`hepwatch alerts` as a process over its own chDB directory: the spike reaches the
    receiver; SIGTERM stops it; `hepwatch alerts check` then shows the alert firing."""
    db = tmp_path / "db"
    tests = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", SEED.format(tests=tests, db=str(db))], check=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPWATCH_")}
    base = [sys.executable, "-m", "hepwatch.cli", "alerts", "--clickhouse", f"chdb://{db}"]
    base += ["--rules", str(rules)]
    notify = ["--alertmanager", receiver.url, "--webhook", receiver.url + "/hook"]
    service = subprocess.Popen(
        [*base, *notify, "--interval", "0.5"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not receiver.webhook and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.2)
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, err
    assert "alerts: 1 rules against chdb://" in err
    assert "alert FIRING glare" in err  # the log notifier
    (hook,) = receiver.webhook
    assert [a["group"] for a in hook["alerts"]] == [{"peer": A}]
    assert receiver.alertmanager[0][0]["labels"]["peer"] == A
    assert receiver.refused == []

    check = subprocess.run(
        [*base, "check", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    out = json.loads(check.stdout)
    (rule,) = out["rules"]
    groups = {g["labels"]["peer"]: g for g in rule["groups"]}
    assert groups[A]["state"] == FIRING and groups[A]["holds"] is True
    assert groups[A]["value"] == 20 and groups[A]["baseline"] == 2
    assert groups[B]["state"] == "inactive" and groups[B]["holds"] is False
    assert [(h["from"], h["to"]) for h in out["history"]] == [("inactive", FIRING)]
    text = subprocess.run(
        [*base, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert f"peer={A}: 20 (limit 6 baseline 2) HOLDS; firing since" in text


def test_check_reports_bad_rules(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    kind: spike\n    match: {}\n    window: 90s\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPWATCH_")}
    cmd = [sys.executable, "-m", "hepwatch.cli", "alerts", "--rules", str(bad)]
    result = subprocess.run(
        [*cmd, "--clickhouse", f"chdb://{tmp_path}/db", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"{bad}: rule 'x': window: " in result.stderr


def test_data_clock_follows_a_replayed_capture(ch: Client, receiver: AlertReceiver) -> None:
    """Data from two hours ago: the data clock starts at its newest minute and moves on
    with the wall clock, so the burst fires and later resolves."""
    insert_records(ch, history_traffic())
    store = AlertStore(ch)
    wall = [5000.0]
    clock = DataClock(store, wall=lambda: wall[0])
    newest = E - 120  # the minute of the last burst message (E - 66)
    assert clock() == pytest.approx(newest + 59.999)
    ev = evaluator(ch, receiver, glare_rule())
    assert ev.clock is time.time  # config.clock "wall"
    assert isinstance(AlertEvaluator(ch, AlertsConfig(clock="data"), []).clock, DataClock)
    ev.clock = clock
    assert moves(ev.evaluate_once()) == [(A, "inactive", PENDING)]
    wall[0] += 60
    assert clock() == pytest.approx(newest + 119.999)
    assert moves(ev.evaluate_once()) == [(A, PENDING, FIRING)]
    wall[0] += 300
    assert moves(ev.evaluate_once()) == [(A, FIRING, RESOLVED)]
    # Newer data moves it to that data's time.
    insert_records(ch, [message(E + 3600, B)])
    assert clock() == pytest.approx(E + 3600 + 59.999)
