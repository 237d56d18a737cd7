"""`hepwatch collect`: the collector service wired from its parts.

Builds the spool, the Kafka publisher, the accept path, one listener per `--listen` URL
and the operations endpoint, then runs until SIGTERM or SIGINT. Shutdown stops the
listeners first (the datagrams and stream bytes already read are still accepted), then
closes the publisher, which delivers or spools everything accepted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from collector.auth import AuthPolicy
from collector.ingest import Ingest, ListenerStats
from collector.listeners.start import start_listeners
from collector.listeners.stream import StreamListener
from collector.listeners.udp import UdpListener
from collector.metrics import CollectorMetrics
from collector.publisher import Publisher, producer_config
from collector.spool import Spool
from hepwatch.config import Settings, parse_host_port
from hepwatch.ops_http import start_ops_server

log = logging.getLogger("hepwatch.collect")


@dataclass
class CollectorService:
    settings: Settings
    udp: list[UdpListener] = field(default_factory=list)
    streams: list[StreamListener] = field(default_factory=list)
    publisher: Publisher | None = None
    metrics_port: int | None = None
    _ops_runner: web.AppRunner | None = None
    _stop: asyncio.Event | None = None

    def listener_stats(self) -> list[ListenerStats]:
        return [lst.stats for lst in self.udp] + [lst.stats for lst in self.streams]

    def not_ready(self) -> list[str]:
        problems = []
        if not self.udp and not self.streams:
            problems.append("no listener is bound")
        pub = self.publisher
        if pub is None:
            problems.append("publisher not started")
        elif pub.spooling and pub.spool.disk_bytes >= pub.spool.max_bytes:
            problems.append("Kafka unreachable and the spool is full")
        return problems

    async def start(self) -> None:
        s = self.settings
        spool = Spool(s.spool.dir, max_bytes=s.spool.max_bytes, segment_bytes=s.spool.segment_bytes)
        k = s.kafka
        self.publisher = Publisher(
            producer_config(
                k.bootstrap,
                compression=k.compression,
                linger_ms=k.linger_ms,
                message_timeout_ms=k.message_timeout_ms,
                queue_max_messages=k.queue_max_messages,
                extra=k.extra,
            ),
            k.topic,
            spool,
        )
        c = s.collector
        ingest = Ingest(
            self.publisher.publish,
            publish_many=self.publisher.publish_many,
            node_name=c.node_name,
            auth=AuthPolicy(s.auth.keys, s.auth.allow_cidrs),
            max_packet_bytes=c.max_packet_bytes,
            reject_log_per_minute=c.reject_log_per_minute,
        )
        self.udp, self.streams = await start_listeners(c.listen_addresses(), ingest, c)
        if s.metrics.listen:
            registry = CollectorRegistry()
            registry.register(
                CollectorMetrics(
                    self.listener_stats,
                    self.publisher,
                    lambda: {u.name: u.kernel_drops() or 0 for u in self.udp},
                )
            )
            host, port = parse_host_port(s.metrics.listen)
            self._ops_runner, self.metrics_port = await start_ops_server(
                host, port, registry, self.not_ready
            )
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)
        log.info("collecting into Kafka %s topic %s (spool %s)", k.bootstrap, k.topic, s.spool.dir)

    async def stop(self) -> None:
        for u in self.udp:
            u.stop()
        for st in self.streams:
            await st.stop()
        if self.publisher is not None:
            await asyncio.to_thread(self.publisher.close)
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()

    async def run_until_signalled(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.start()
        try:
            await self._stop.wait()
            log.info("shutting down: flushing what was accepted")
        finally:
            await self.stop()
