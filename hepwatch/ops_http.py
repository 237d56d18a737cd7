"""The operations endpoint every hepwatch service serves: /metrics, /healthz and /readyz.

/healthz answers 200 while the event loop runs; /readyz answers 200 only when the
service's readiness check passes (for the collector: listeners bound and the publisher
able to take records) and 503 with the reasons otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

ReadyCheck = Callable[[], list[str]]  # returns the reasons it is NOT ready; empty = ready


async def start_ops_server(
    host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck
) -> tuple[web.AppRunner, int]:
    """Serve the endpoints; returns the runner (to clean up) and the bound port."""

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        problems = ready()
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp exposes no public accessor for the bound port
    bound = port
    if server is not None and getattr(server, "sockets", None):
        bound = server.sockets[0].getsockname()[1]
    return runner, bound
