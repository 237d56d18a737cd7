"""Notifiers: the Alertmanager v2 API, a generic JSON webhook, and the log.

Each notifier takes a batch of `Notification`s and either delivers all of it or raises
`NotifyError`; the caller records delivery per notifier and retries what failed on its
next cycle. HTTP is plain blocking urllib with a timeout: the evaluator runs in its own
thread (or process), and a slow receiver must not hold more than one cycle.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, Protocol

from consumers.alerts.evaluate import Notification

log = logging.getLogger("hepwatch.alerts")


class NotifyError(Exception):
    """A batch that was not delivered (receiver down, refused, or timed out)."""


class Notifier(Protocol):
    name: str
    # Re-send firing alerts this often (seconds); None: each firing and resolution once.
    resend_s: float | None

    def send(self, notifications: list[Notification]) -> None: ...


def rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _top(items: list[list[Any]]) -> str:
    return ", ".join(f"{value} ({count})" for value, count in items)


def alertmanager_alert(n: Notification) -> dict[str, Any]:
    """One postableAlert of the Alertmanager v2 API; evidence goes into annotations
    (Alertmanager annotations are strings)."""
    annotations = dict(n.annotations)
    annotations["value"] = f"{n.value:g}"
    annotations["threshold"] = f"{n.limit:g}"
    if n.baseline is not None:
        annotations["baseline"] = f"{n.baseline:g}"
    for kind in ("call_ids", "peers", "user_agents", "anomalies"):
        if n.evidence.get(kind):
            annotations[f"top_{kind}"] = _top(n.evidence[kind])
    alert: dict[str, Any] = {
        "labels": n.labels,
        "annotations": annotations,
        "startsAt": rfc3339(n.starts_at),
    }
    if n.generator_url:
        alert["generatorURL"] = n.generator_url
    if n.ends_at is not None:
        alert["endsAt"] = rfc3339(n.ends_at)
    return alert


def webhook_alert(n: Notification) -> dict[str, Any]:
    return {
        "alertname": n.rule,
        "status": n.status,
        "labels": n.labels,
        "group": n.group,
        "annotations": n.annotations,
        "value": n.value,
        "baseline": n.baseline,
        "threshold": n.limit,
        "startsAt": rfc3339(n.starts_at),
        "endsAt": rfc3339(n.ends_at) if n.ends_at is not None else None,
        "generatorURL": n.generator_url,
        "evidence": n.evidence,
    }


def post_json(url: str, payload: Any, timeout_s: float) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise NotifyError(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"{url}: {reason}") from None


class AlertmanagerNotifier:
    """POST /api/v2/alerts; firing alerts are re-sent every `resend_s`, as Alertmanager
    expects (it resolves an alert itself at endsAt when no re-send arrives)."""

    name = "alertmanager"

    def __init__(self, url: str, resend_s: float = 60.0, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.resend_s: float | None = resend_s
        self.timeout_s = timeout_s

    def send(self, notifications: list[Notification]) -> None:
        post_json(self.url, [alertmanager_alert(n) for n in notifications], self.timeout_s)


class WebhookNotifier:
    """POST {"receiver": "hepwatch", "alerts": [...]} with each firing and resolution once."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.resend_s: float | None = None
        self.timeout_s = timeout_s

    def send(self, notifications: list[Notification]) -> None:
        payload = {"receiver": "hepwatch", "alerts": [webhook_alert(n) for n in notifications]}
        post_json(self.url, payload, self.timeout_s)


class LogNotifier:
    """One log line per firing (WARNING) and resolution (INFO), with the evidence."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log
        self.resend_s: float | None = None

    def send(self, notifications: list[Notification]) -> None:
        for n in notifications:
            evidence = "; ".join(
                f"{kind} {_top(items)}" for kind, items in n.evidence.items() if items
            )
            level = logging.WARNING if n.status == "firing" else logging.INFO
            self.logger.log(
                level,
                "alert %s %s: %s%s",
                n.status.upper(),
                n.rule,
                n.annotations.get("summary", ""),
                f" [{evidence}]" if evidence else "",
            )
