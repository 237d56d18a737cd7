"""Starting the configured HEP listeners: one UDP or TCP/TLS listener per address.

Shared by `hepwatch collect` (into Kafka) and `hepwatch run` (into the in-process queue):
both hand every packet to an `Ingest`; only where it publishes differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from ssl import SSLContext

from collector.ingest import Ingest
from collector.listeners.stream import StreamListener, server_tls_context
from collector.listeners.udp import UdpListener
from hepwatch.config import CollectorConfig, ListenAddress


async def start_listeners(
    addresses: Iterable[ListenAddress], ingest: Ingest, c: CollectorConfig
) -> tuple[list[UdpListener], list[StreamListener]]:
    """Bind and start a listener per address; tls:// needs `c.tls_cert` and `c.tls_key`."""
    udp: list[UdpListener] = []
    streams: list[StreamListener] = []
    tls: SSLContext | None = None
    for addr in addresses:
        if addr.scheme == "udp":
            lst = UdpListener(
                addr.host,
                addr.port,
                ingest,
                receive_buffer=c.udp_receive_buffer_bytes,
                max_senders=c.max_tracked_senders,
            )
            lst.start()
            udp.append(lst)
            continue
        if addr.scheme == "tls" and tls is None:
            if c.tls_cert is None or c.tls_key is None:
                raise ValueError("tls:// listeners need collector.tls_cert and collector.tls_key")
            tls = server_tls_context(c.tls_cert, c.tls_key, c.tls_client_ca)
        stream = StreamListener(
            addr.scheme,
            addr.host,
            addr.port,
            ingest,
            ssl_context=tls if addr.scheme == "tls" else None,
            max_connections=c.max_connections,
            idle_timeout_s=c.idle_timeout_s,
            max_packet_bytes=c.max_packet_bytes,
            max_senders=c.max_tracked_senders,
        )
        await stream.start()
        streams.append(stream)
    return udp, streams
