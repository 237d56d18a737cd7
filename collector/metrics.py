"""Prometheus metrics of the collector, read from the plain counters at scrape time.

The hot path only increments ints on per-listener objects; this collector turns them into
metric families when Prometheus scrapes, so counting costs nothing per packet beyond an
addition. Names are prefixed `hepwatch_collector_`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from collector.hep.errors import RejectReason
from collector.ingest import ListenerStats
from collector.publisher import LATENCY_BUCKETS, Publisher

P = "hepwatch_collector_"


class CollectorMetrics(Collector):
    def __init__(
        self,
        listeners: Callable[[], Iterable[ListenerStats]],
        publisher: Publisher,
        kernel_drops: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self._listeners = listeners
        self._publisher = publisher
        self._kernel_drops = kernel_drops

    def collect(self) -> Iterator[Metric]:
        stats = list(self._listeners())
        received = CounterMetricFamily(
            P + "received_packets", "HEP packets received", labels=["listener", "transport"]
        )
        received_bytes = CounterMetricFamily(
            P + "received_bytes", "Bytes of HEP packets received", labels=["listener"]
        )
        accepted = CounterMetricFamily(
            P + "accepted_packets",
            "Packets accepted and handed to Kafka or the spool",
            labels=["listener"],
        )
        decoded = CounterMetricFamily(
            P + "decoded_packets", "Packets decoded, by original HEP version", labels=["version"]
        )
        rejected = CounterMetricFamily(
            P + "rejected_packets", "Packets rejected, by reason", labels=["reason"]
        )
        auth = CounterMetricFamily(
            P + "auth_failures",
            "Packets dropped for a missing or wrong key or source",
            labels=["sender"],
        )
        per_sender = CounterMetricFamily(
            P + "sender_packets",
            "Packets per sender address and outcome",
            labels=["sender", "outcome"],
        )
        connections = GaugeMetricFamily(
            P + "connections_open", "Open TCP/TLS connections", labels=["listener"]
        )
        refused = CounterMetricFamily(
            P + "connections_refused",
            "Connections refused (limit or allowlist)",
            labels=["listener"],
        )
        by_version = {1: 0, 2: 0, 3: 0}
        by_reason = dict.fromkeys(RejectReason, 0)
        senders: dict[str, list[int]] = {}
        for s in stats:
            received.add_metric([s.name, s.transport], s.received)
            received_bytes.add_metric([s.name], s.bytes_received)
            accepted.add_metric([s.name], s.accepted)
            for version, count in s.decoded_by_version.items():
                by_version[version] += count
            for reason, count in s.rejected.items():
                by_reason[reason] += count
            for host, (ok, bad) in s.per_sender.items():
                entry = senders.setdefault(host, [0, 0])
                entry[0] += ok
                entry[1] += bad
            if s.transport != "udp":
                connections.add_metric([s.name], s.connections_open)
                refused.add_metric([s.name], s.connections_refused)
        for version, count in by_version.items():
            decoded.add_metric([str(version)], count)
        for reason, count in by_reason.items():
            rejected.add_metric([reason.value], count)
        for host, (ok, bad) in senders.items():
            per_sender.add_metric([host, "accepted"], ok)
            per_sender.add_metric([host, "rejected"], bad)
        auth_total = by_reason[RejectReason.AUTH]
        auth.add_metric(["all"], auth_total)
        yield from (received, received_bytes, accepted, decoded, rejected, auth, per_sender)
        yield from (connections, refused)

        spool = self._publisher.spool
        pub = self._publisher.stats
        yield CounterMetricFamily(
            P + "produced", "Records handed to librdkafka", value=pub.produced
        )
        yield CounterMetricFamily(
            P + "acknowledged", "Records acknowledged by Kafka", value=self._publisher.acknowledged
        )
        yield CounterMetricFamily(
            P + "delivery_failures",
            "Delivery reports with an error (then spooled)",
            value=pub.delivery_failures,
        )
        yield CounterMetricFamily(
            P + "spooled", "Records written to the disk spool", value=spool.appended_records
        )
        yield CounterMetricFamily(
            P + "spool_overflow",
            "Records refused by a full spool (lost)",
            value=spool.overflow_records,
        )
        yield CounterMetricFamily(
            P + "spool_drained", "Spooled records delivered to Kafka", value=spool.acked_records
        )
        yield GaugeMetricFamily(
            P + "spool_depth_records", "Records waiting in the spool", value=spool.depth_records
        )
        yield GaugeMetricFamily(
            P + "spool_depth_bytes", "Bytes waiting in the spool", value=spool.depth_bytes
        )
        yield GaugeMetricFamily(
            P + "kafka_in_flight",
            "Records inside librdkafka, not yet acked",
            value=self._publisher.in_flight,
        )
        yield GaugeMetricFamily(
            P + "spooling",
            "1 while new records go to the spool",
            value=1 if self._publisher.spooling else 0,
        )
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, pub.latency_counts, strict=False):
            cumulative += count
            buckets.append((str(bound), cumulative))
        cumulative += pub.latency_counts[-1]
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily(
            P + "delivery_latency_seconds",
            "Receive-to-acknowledge latency (1 record in 256, to within 5 ms)",
            buckets=buckets,
            sum_value=pub.latency_sum,
        )
        if self._kernel_drops is not None:
            drops = GaugeMetricFamily(
                P + "udp_kernel_drops",
                "Datagrams the kernel dropped on a UDP socket",
                labels=["listener"],
            )
            for name, count in self._kernel_drops().items():
                drops.add_metric([name], count)
            yield drops
