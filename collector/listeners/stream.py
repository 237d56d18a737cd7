"""TCP and TLS listeners on the event loop: HEPv3 stream framing, bounded connections.

Each connection reads into its own buffer (a buffered protocol: no bytes object per read).
With the C extension, `speedups.frame_batch` cuts every complete packet of a read and
turns it into a Kafka-ready record in one call (`Ingest.accept_batch`); without it, a
`StreamFramer` cuts the packets and each goes through `Ingest.accept`. A stream that loses
framing (bad magic or length) is closed, since HEP has no resynchronisation marker
(PROTOCOL.md A.7). Connections beyond `max_connections`, from senders outside the
allowlist, or idle for longer than `idle_timeout_s` are closed and counted.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import ssl
import time
from pathlib import Path

from collector.hep import speedups
from collector.hep.errors import RejectReason
from collector.ingest import Ingest, ListenerStats
from collector.listeners.framing import FramingError, StreamFramer

log = logging.getLogger("hepwatch.stream")

# Room each read is offered beyond a partial packet (asyncio reads at most what get_buffer
# offers); at 200k packets/s that is a few hundred packets per read.
READ_SIZE = 256 * 1024


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _HepStreamProtocol(asyncio.BufferedProtocol):
    def __init__(self, listener: StreamListener) -> None:
        self._listener = listener
        self._frame_batch = speedups.frame_batch
        self._framer = StreamFramer(listener.max_packet_bytes)
        # Bytes [0, _end) of _buf are received and not yet framed: at most one partial packet.
        # Anonymous memory, so an idle connection keeps only the pages it wrote resident.
        self._buf = mmap.mmap(-1, listener.max_packet_bytes + READ_SIZE)
        self._view = memoryview(self._buf)
        self._end = 0
        self._lost = False  # framing lost: the connection is being aborted
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

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_activity = time.monotonic()
        if self._lost:
            return
        if self._frame_batch is None:
            self._feed_framer(bytes(self._view[:nbytes]))
            return
        listener = self._listener
        ingest = listener.ingest
        end = self._end + nbytes
        received_us = time.time_ns() // 1000
        records, used, n_slow, fast_bytes, error = self._frame_batch(
            self._buf,
            0,
            end,
            listener.max_packet_bytes,
            ingest.max_packet_bytes,
            received_us,
            ingest.batch_fast_path,
        )
        if records:
            sources = [(self._host, self._port, len(records) - n_slow)]
            stats = listener.stats
            ingest.accept_batch(received_us, records, sources, n_slow, fast_bytes, 0, stats)
        if error:
            head = bytes(self._buf[used : used + 6])
            length = (head[4] << 8) | head[5]
            reason = speedups.FRAME_ERRORS[error]
            detail = {
                RejectReason.BAD_MAGIC: f"stream lost framing: {head[:4]!r}",
                RejectReason.BAD_LENGTH: f"total length {length} below 6",
                RejectReason.OVERSIZE: f"total length {length} over {listener.max_packet_bytes}",
            }[reason]
            self._end = 0
            self._framing_lost(FramingError(reason, detail))
            return
        rest = end - used
        if rest and used:
            self._buf[:rest] = self._buf[used:end]  # the partial packet moves to the front
        self._end = rest

    def _feed_framer(self, data: bytes) -> None:
        """The pure Python path: StreamFramer cuts, Ingest.accept takes each packet."""
        try:
            packets = self._framer.feed(data)
        except FramingError as exc:
            self._framing_lost(exc)
            return
        if packets:
            listener = self._listener
            received_us = time.time_ns() // 1000
            accept = listener.ingest.accept
            stats = listener.stats
            host, port = self._host, self._port
            for packet in packets:
                accept(packet, host, port, received_us, stats)

    def _framing_lost(self, exc: FramingError) -> None:
        self._lost = True
        listener = self._listener
        listener.stats.framing_errors += 1
        listener.stats.rejected[exc.reason] += 1
        listener.stats.sender(self._host)[1] += 1
        log.warning("%s: closing %s:%d: %s", listener.name, self._host, self._port, exc)
        if self._transport is not None:
            self._transport.abort()

    def _buffered(self) -> int:
        """Bytes of a partial packet held (0 once framing is lost: counted once, as that)."""
        if self._lost:
            return 0
        return self._end if self._frame_batch is not None else self._framer.buffered

    def connection_lost(self, exc: Exception | None) -> None:
        listener = self._listener
        if self in listener.connections:
            listener.connections.discard(self)
            listener.stats.connections_open = len(listener.connections)
            if self._buffered():
                listener.stats.rejected[RejectReason.TRUNCATED] += 1
                log.warning(
                    "%s: %s:%d closed in the middle of a packet (%d bytes dropped)",
                    listener.name,
                    self._host,
                    self._port,
                    self._buffered(),
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
