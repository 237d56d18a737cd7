"""`hepwatch run` end to end: HEP messages/s from the socket to rows in chDB.

    .venv/bin/python bench/run/throughput.py [--calls 20000] [--transport tcp|udp]
        [--rate PPS]

Starts `hepwatch run` (a subprocess with a fresh data directory), builds `--calls`
proxy-mirrored calls (13 HEP packets each: INVITE, 100, 180, 200, ACK, BYE and 200, in and
out of the proxy; one new call per millisecond of capture time, ending 10 s before now)
before timing, sends them over one TCP connection (default) or UDP (paced at `--rate`
packets/s when given, since a UDP blast beyond the kernel buffer loses datagrams), and
times until every logical message is a row of `sip_messages`, read through the query
endpoint. Prints the end-to-end figure (HEP packets/s and rows/s), the ingest figure (until
the analysis thread has taken every packet off the queue), queue back-pressure and losses.

The tail is the stream-time rule, not a cost: once input stops, the last messages' dedup
windows close when the idle advance moves stream time on (`consumer.idle_advance_s`, 0.2 s
here); the figure includes it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from hepbuild import hep3
from run_proc import RunProc
from sipflow import Flow

from consumers.engine import Engine

TEMPLATE_CID = "CALLID-TEMPLATE@bench"


def build(calls: int, end_us: int) -> tuple[list[bytes], int]:
    """The HEP packets of `calls` calls in capture-time order, and the logical messages."""
    f = Flow(TEMPLATE_CID)
    f.setup()
    f.wait(1.0)
    f.bye()
    messages_per_call = sum(1 for r in f.engine_records(Engine()) if r.kind == "message")
    t0 = f.obs[0].ts_us
    template = [(o.ts_us - t0, o) for o in f.obs]
    span = template[-1][0] + (calls - 1) * 1000
    start = end_us - span
    packets: list[tuple[int, bytes]] = []
    for i in range(calls):
        cid = f"bench-{i:08d}@bench".encode()
        base = start + i * 1000
        for dt, o in template:
            ts = base + dt
            payload = o.payload.replace(TEMPLATE_CID.encode(), cid)
            pkt = hep3(
                payload,
                src=o.src_ip,
                dst=o.dst_ip,
                sport=o.src_port,
                dport=o.dst_port,
                ts=divmod(ts, 1_000_000),
            )
            packets.append((ts, pkt))
    packets.sort(key=lambda p: p[0])
    return [p for _, p in packets], calls * messages_per_call


def send_tcp(run: RunProc, packets: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", run.tcp_port)) as sock:
        for i in range(0, len(packets), 1000):
            sock.sendall(b"".join(packets[i : i + 1000]))


def send_udp(run: RunProc, packets: list[bytes], rate: float | None) -> None:
    addr = ("127.0.0.1", run.udp_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.perf_counter()
        for i, pkt in enumerate(packets):
            sock.sendto(pkt, addr)
            if rate and i % 100 == 0:
                ahead = i / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    ap.add_argument("--rate", type=float, help="UDP packets/s (default: as fast as possible)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    packets, messages = build(args.calls, int((time.time() - 10) * 1e6))
    with tempfile.TemporaryDirectory(prefix="hepwatch-bench-run-") as tmp:
        run = RunProc(
            Path(tmp) / "data",
            env={
                "HEPWATCH_CONSUMER__IDLE_ADVANCE_S": "0.2",
                "HEPWATCH_ALERTS__INTERVAL_S": "3600",
                "HEPWATCH_LOG__LEVEL": "WARNING",
            },
            fast=False,
        )
        run.start()
        try:
            t0 = time.perf_counter()
            if args.transport == "tcp":
                send_tcp(run, packets)
            else:
                send_udp(run, packets, args.rate)
            sent_s = time.perf_counter() - t0
            taken_s = None
            stored = 0
            deadline = t0 + args.timeout
            while time.perf_counter() < deadline:
                if taken_s is None and run.metric("hepwatch_run_processed_records_total") >= len(
                    packets
                ):
                    taken_s = time.perf_counter() - t0
                stored = int(run.scalar("SELECT count() FROM sip_messages") or 0)
                if stored >= messages:
                    break
                time.sleep(0.05)
            total_s = time.perf_counter() - t0
            time.sleep(1.0)  # rows beyond the expected ones would be a split or a duplicate
            stored = int(run.scalar("SELECT count() FROM sip_messages") or 0)
            ids = int(run.scalar("SELECT uniqExact(id) FROM sip_messages") or 0)
            received = run.metric("hepwatch_run_queued_records_total")
            waits = run.metric("hepwatch_run_queue_full_waits_total")
            drops = run.metric("hepwatch_collector_udp_kernel_drops")
        finally:
            run.stop()
    print(
        f"run end to end ({args.transport}): {len(packets):,} HEP packets ({args.calls:,} calls,"
        f" {messages:,} logical messages) sent in {sent_s:.2f} s; all {stored:,} rows in"
        f" sip_messages after {total_s:.2f} s = {len(packets) / total_s:,.0f} HEP messages/s,"
        f" {stored / total_s:,.0f} rows/s"
    )
    if taken_s is not None:
        print(f"  ingest: every packet through the engine after {taken_s:.2f} s ="
              f" {len(packets) / taken_s:,.0f} packets/s")  # fmt: skip
    print(
        f"  received {received:,.0f} of {len(packets):,}; queue-full waits {waits:.0f};"
        f" UDP kernel drops {drops:.0f}; load average {os.getloadavg()[0]:.2f}"
    )
    if stored != messages or ids != stored:
        print(f"  WRONG: {stored:,} rows ({ids:,} ids) for {messages:,} logical messages")
        sys.exit(1)


if __name__ == "__main__":
    main()
