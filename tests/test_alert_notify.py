"""Notifiers against a real local HTTP receiver: the Alertmanager v2 format, the webhook
payload, the log line, and failures reported (never swallowed)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from alert_receiver import AlertReceiver, alertmanager_problems

from consumers.alerts.evaluate import FIRING, RESOLVED, Notification
from consumers.alerts.notify import (
    AlertmanagerNotifier,
    LogNotifier,
    NotifyError,
    WebhookNotifier,
    alertmanager_alert,
    rfc3339,
)

T0 = 1_700_000_040.0


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    r = AlertReceiver().start()
    yield r
    r.stop()


def note(status: str = FIRING, **kw: object) -> Notification:
    n = Notification(
        rule="glare_491_spike",
        status=status,
        labels={"alertname": "glare_491_spike", "severity": "warning", "peer": "10.0.0.7"},
        group={"peer": "10.0.0.7"},
        annotations={"summary": "491 spike from 10.0.0.7"},
        starts_at=T0,
        ends_at=T0 + 240 if status == FIRING else T0 + 600,
        value=42.0,
        baseline=3.0,
        limit=10.0,
        key='{"peer":"10.0.0.7"}',
        generator_url="http://127.0.0.1:8123/?query=SELECT%201",
        evidence={
            "call_ids": [["c1@x", 5], ["c2@x", 3]],
            "peers": [["10.0.0.7", 8]],
            "user_agents": [["SBC/2.1", 8]],
            "anomalies": [["glare_491", 4]],
        },
    )
    for k, v in kw.items():
        setattr(n, k, v)
    return n


def test_rfc3339() -> None:
    assert rfc3339(T0) == "2023-11-14T22:14:00.000Z"
    assert rfc3339(T0 + 0.25) == "2023-11-14T22:14:00.250Z"


def test_alertmanager_alert_shape() -> None:
    alert = alertmanager_alert(note())
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["labels"]["alertname"] == "glare_491_spike"
    assert alert["startsAt"] == rfc3339(T0) and alert["endsAt"] == rfc3339(T0 + 240)
    ann = alert["annotations"]
    assert ann["summary"] == "491 spike from 10.0.0.7"
    assert ann["top_call_ids"] == "c1@x (5), c2@x (3)"
    assert ann["top_peers"] == "10.0.0.7 (8)"
    assert ann["top_user_agents"] == "SBC/2.1 (8)"
    assert ann["top_anomalies"] == "glare_491 (4)"
    assert (ann["value"], ann["baseline"], ann["threshold"]) == ("42", "3", "10")
    assert alertmanager_problems([alert]) == []
    assert "generatorURL" not in alertmanager_alert(note(generator_url=""))
    assert alertmanager_problems([{"labels": {}}]) == ["0: labels missing or empty"]


def test_alertmanager_receives_v2_alerts(receiver: AlertReceiver) -> None:
    am = AlertmanagerNotifier(receiver.url, resend_s=30)
    assert am.resend_s == 30
    am.send([note(), note(RESOLVED)])
    assert receiver.refused == []
    (body,) = receiver.alertmanager
    assert [a["labels"]["peer"] for a in body] == ["10.0.0.7", "10.0.0.7"]
    assert body[0]["endsAt"] == rfc3339(T0 + 240)  # firing: expires unless re-sent
    assert body[1]["endsAt"] == rfc3339(T0 + 600)  # resolved: when it ended
    assert body[0]["generatorURL"].startswith("http://127.0.0.1:8123/?query=")


def test_webhook_payload(receiver: AlertReceiver) -> None:
    WebhookNotifier(receiver.url + "/hook").send([note()])
    (payload,) = receiver.webhook
    assert payload["receiver"] == "hepwatch"
    (alert,) = payload["alerts"]
    assert alert["alertname"] == "glare_491_spike"
    assert alert["status"] == "firing"
    assert alert["group"] == {"peer": "10.0.0.7"}
    assert alert["labels"]["severity"] == "warning"
    assert (alert["value"], alert["baseline"], alert["threshold"]) == (42.0, 3.0, 10.0)
    assert alert["evidence"]["call_ids"] == [["c1@x", 5], ["c2@x", 3]]
    assert alert["startsAt"] == rfc3339(T0)


def test_http_failures_raise(receiver: AlertReceiver) -> None:
    receiver.fail_next(1, 500)
    with pytest.raises(NotifyError, match="HTTP 500 failing on purpose"):
        AlertmanagerNotifier(receiver.url).send([note()])
    with pytest.raises(NotifyError, match="HTTP 400"):
        AlertmanagerNotifier(receiver.url).send([note(labels={"bad-name": "x"})])
    assert receiver.refused == ["0: bad label 'bad-name'='x'"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(NotifyError, match="refused"):
        WebhookNotifier(f"http://127.0.0.1:{closed}/hook", timeout_s=2).send([note()])


def test_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hepwatch.alerts")
    LogNotifier().send([note(), note(RESOLVED, evidence={})])
    firing, resolved = caplog.records
    assert firing.levelno == logging.WARNING
    assert firing.getMessage() == (
        "alert FIRING glare_491_spike: 491 spike from 10.0.0.7 [call_ids c1@x (5), c2@x (3); "
        "peers 10.0.0.7 (8); user_agents SBC/2.1 (8); anomalies glare_491 (4)]"
    )
    assert resolved.levelno == logging.INFO
    assert resolved.getMessage() == "alert RESOLVED glare_491_spike: 491 spike from 10.0.0.7"
