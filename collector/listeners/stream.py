"""TCP and TLS listeners on the event loop: HEPv3 stream framing, bounded connections.

Each connection feeds a `StreamFramer`; every complete packet goes through the shared
accept path. A stream that loses framing (bad magic or length) is closed, since HEP has
no resynchronisation marker (PROTOCOL.md A.7). Connections beyond `max_connections`,
from senders outside the allowlist, or idle for longer than `idle_timeout_s` are closed
and counted.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

from collector.hep.errors import RejectReason
from collector.ingest import Ingest, ListenerStats
from collector.listeners.framing import FramingError, StreamFramer

log = logging.getLogger("hepwatch.stream")


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _HepStreamProtocol(asyncio.Protocol):
    def __init__(self, listener: StreamListener) -> None:
        self._listener = listener
        self._framer = StreamFramer(listener.max_packet_bytes)
        self._transport: asyncio.Transport | None = None
        self._host = "?"
        self._port = 0
        self.last_activity = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self._host, self._port = peer[0], peer[1]
        listener = self._listener
        stats = listener.stats
        if len(listener.connections) >= listener.max_connections:
            stats.connections_refused += 1
            log.warning(
                "%s: connection limit %d reached, refusing %s",
                listener.name,
                listener.max_connections,
                self._host,
            )
            transport.abort()
            return
        if not listener.ingest.source_allowed(self._host):
            stats.connections_refused += 1
            stats.rejected[RejectReason.AUTH] += 1
            stats.sender(self._host)[1] += 1
            log.warning("%s: refusing %s (not in the allowlist)", listener.name, self._host)
            transport.abort()
            return
        listener.connections.add(self)
        stats.connections_open = len(listener.connections)
        stats.connections_total += 1

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        listener = self._listener
        try:
            packets = self._framer.feed(data)
        except FramingError as exc:
            listener.stats.framing_errors += 1
            listener.stats.rejected[exc.reason] += 1
            listener.stats.sender(self._host)[1] += 1
            log.warning("%s: closing %s:%d: %s", listener.name, self._host, self._port, exc)
            if self._transport is not None:
                self._transport.abort()
            return
        if packets:
            received_us = time.time_ns() // 1000
            accept = listener.ingest.accept
            stats = listener.stats
            host, port = self._host, self._port
            for packet in packets:
                accept(packet, host, port, received_us, stats)

    def connection_lost(self, exc: Exception | None) -> None:
        listener = self._listener
        if self in listener.connections:
            listener.connections.discard(self)
            listener.stats.connections_open = len(listener.connections)
            if not self._framer.at_packet_boundary():
                listener.stats.rejected[RejectReason.TRUNCATED] += 1
                log.warning(
                    "%s: %s:%d closed in the middle of a packet (%d bytes dropped)",
                    listener.name,
                    self._host,
                    self._port,
                    self._framer.buffered,
                )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class StreamListener:
    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        ingest: Ingest,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        idle_timeout_s: float = 300.0,
        max_packet_bytes: int = 65535,
        max_senders: int = 1000,
    ) -> None:
        if scheme == "tls" and ssl_context is None:
            raise ValueError(
                "a tls:// listener needs a certificate and key (collector.tls_cert/tls_key)"
            )
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ingest = ingest
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.max_packet_bytes = max_packet_bytes
        self.connections: set[_HepStreamProtocol] = set()
        self.name = f"{scheme}://{host}:{port}"
        self.stats = ListenerStats(scheme, self.name, max_senders=max_senders)
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _HepStreamProtocol(self),
            self.host,
            self.port,
            ssl=self.ssl_context,
            reuse_address=True,
            backlog=512,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self.name = f"{self.scheme}://{self.host}:{self.port}"
        self.stats.name = self.name
        self._reaper = asyncio.create_task(self._close_idle())
        log.info("listening on %s (max %d connections)", self.name, self.max_connections)

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s))
            cutoff = time.monotonic() - self.idle_timeout_s
            for conn in [c for c in self.connections if c.last_activity < cutoff]:
                log.info("%s: closing a connection idle for %.0f s", self.name, self.idle_timeout_s)
                conn.close()

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
