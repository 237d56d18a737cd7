"""A real HTTP receiver for alert notifications: an aiohttp server on a thread of its own.

POST /api/v2/alerts checks the body as Alertmanager's v2 API does (a list of postable
alerts: labels required, label names valid, strings only, RFC 3339 times, a URI in
generatorURL) and answers 400 with the reason when it is wrong; POST /hook takes any JSON.
Every accepted body is kept in `alertmanager` or `webhook`. `fail_next(n, status)` makes
the next n requests fail with that status.
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ALERT_KEYS = {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


def alertmanager_problems(body: Any) -> list[str]:
    """What Alertmanager's v2 API would refuse in this body (empty: accepted)."""
    if not isinstance(body, list):
        return ["body is not a list of alerts"]
    problems = []
    for i, alert in enumerate(body):
        if not isinstance(alert, dict):
            problems.append(f"{i}: not an object")
            continue
        if extra := set(alert) - _ALERT_KEYS:
            problems.append(f"{i}: unknown fields {sorted(extra)}")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{i}: labels missing or empty")
            labels = {}
        for name, value in labels.items():
            if not _LABEL.match(name) or not isinstance(value, str):
                problems.append(f"{i}: bad label {name!r}={value!r}")
        for name, value in (alert.get("annotations") or {}).items():
            if not isinstance(value, str):
                problems.append(f"{i}: annotation {name!r} is not a string")
        for key in ("startsAt", "endsAt"):
            if key in alert:
                try:
                    stamp = datetime.fromisoformat(alert[key])
                except (TypeError, ValueError):
                    problems.append(f"{i}: {key} {alert[key]!r} is not RFC 3339")
                    continue
                if stamp.tzinfo is None:
                    problems.append(f"{i}: {key} has no time zone")
        if "generatorURL" in alert:
            url = alert["generatorURL"]
            if not isinstance(url, str) or not urlsplit(url).scheme:
                problems.append(f"{i}: generatorURL {url!r} is not a URI")
    return problems


class AlertReceiver:
    def __init__(self) -> None:
        self.alertmanager: list[list[dict[str, Any]]] = []
        self.webhook: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self._fail: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, status: int = 503) -> None:
        self._fail.extend([status] * n)

    def start(self) -> AlertReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self._alerts)
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _alerts(self, request: web.Request) -> web.Response:
        if self._fail:
            return web.Response(status=self._fail.pop(0), text="failing on purpose")
        body = await request.json()
        if problems := alertmanager_problems(body):
            self.refused.extend(problems)
            return web.json_response({"code": 400, "message": "; ".join(problems)}, status=400)
        self.alertmanager.append(body)
        return web.Response(status=200)

    async def _hook(self, request: web.Request) -> web.Response:
        if self._fail:
            return web.Response(status=self._fail.pop(0), text="failing on purpose")
        self.webhook.append(await request.json())
        return web.Response(status=200)
