"""Insert benchmark: records through ClickHouseSink into a fresh embedded chDB.

    .venv/bin/python bench/clickhouse/insert.py [--rows 200000] [--batch 50000]
        [--mode native,lists,driver] [--data messages,mix] [--dir DIR] [--repeat N]

Records are built before timing, shaped like proxy-mirrored traffic: calls of INVITE, 100,
180, 200, ACK, BYE, 200 (the proxy's 100 with one observation, the rest with an in- and an
out-copy), endpoints drawn from 5000 addresses (one in ten IPv6) behind three proxy
addresses, a handful of user agents, Allow/Supported lists, and a raw SIP text of about
600 bytes per message. The timed loop is what a consumer does: `sink.write(batch)` then
`sink.flush()` per batch of `--batch` rows, into `sip_messages` (and its per-minute view).

`--data mix` adds what the engine emits beside the messages of such calls: one dialog per
call, a session change for one call in five, an anomaly (with its fields map) for one call
in ten, each written with its call's messages in the same batches (19% more rows, four
tables per flush).

Printed per mode: rows/s for the conversion (records -> Native bytes in C, or -> Python
lists, addresses packed), for the INSERTs (driver serialisation if any + engine, view
included), in total (wall clock), and the process CPU time per row (engine threads
included). The process runs with the consumer's GC settings (`consumers.runtime.tune_gc`).
`native` is the sink as shipped (C encoder, raw_insert of one Native block); `lists` is
the fallback without the C extension (columns as lists, clickhouse-connect's Native
writer, IPv6 sent as FixedString(16) bytes); `driver` also hands address strings to
clickhouse-connect, which parses each one with `ipaddress.ip_address`.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consumers.clickhouse.client import connect
from consumers.clickhouse.migrations import apply_migrations
from consumers.clickhouse.native import HAVE_NATIVE
from consumers.clickhouse.sink import ClickHouseSink
from consumers.record_ids import record_id
from consumers.records import (
    AnomalyRecord,
    DialogRecord,
    MessageRecord,
    ObservationRow,
    Record,
    SessionChangeRecord,
)
from consumers.runtime import tune_gc
from hepwatch.config import ClickHouseConfig

T0_US = int(time.time() * 1_000_000) - 3_600_000_000  # an hour ago: inside every TTL
PROXIES = ["10.10.0.1", "10.10.0.2", "10.10.0.3"]
UAS = ["Yealink SIP-T46S 66.86.0.15", "PolycomVVX-VVX_450-UA/6.4.3", "Asterisk PBX 20.5.0",
       "FreeSWITCH-mod_sofia/1.10.11", "Cisco-SIPGateway/IOS-15.x", "Zoiper rv2.10.19.4",
       "Grandstream GXP2170 1.0.11.23", "MicroSIP/3.21.3"]  # fmt: skip
ALLOW = ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "PRACK", "INFO", "REFER"]
# method, status, reason, direction (from the caller), has SDP, copies
CALL = [
    ("INVITE", 0, "", "caller_to_callee", True, 2),
    ("INVITE", 100, "Trying", "callee_to_caller", False, 1),
    ("INVITE", 180, "Ringing", "callee_to_caller", False, 2),
    ("INVITE", 200, "OK", "callee_to_caller", True, 2),
    ("ACK", 0, "", "caller_to_callee", False, 2),
    ("BYE", 0, "", "caller_to_callee", False, 2),
    ("BYE", 200, "OK", "callee_to_caller", False, 2),
]


def endpoints(rng: random.Random, n: int = 5000) -> list[str]:
    out = []
    for i in range(n):
        if i % 10 == 0:
            out.append(f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}")
        else:
            out.append(f"172.{16 + i % 16}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return out


def raw_sip(method: str, status: int, reason: str, call_id: str, cseq: int, a: str, b: str,
            sdp: bool) -> bytes:  # fmt: skip
    start = f"SIP/2.0 {status} {reason}" if status else f"{method} sip:bob@{b}:5060 SIP/2.0"
    lines = [
        start,
        f"Via: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{call_id[:12]}{cseq}{status};rport",
        f'From: "Alice" <sip:alice@{a}>;tag=f{call_id[:8]}',
        f"To: <sip:bob@{b}>" + (f";tag=t{call_id[8:16]}" if status > 100 else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:alice@{a}:5060;transport=udp>",
        "Allow: " + ", ".join(ALLOW),
        "Supported: replaces, timer, 100rel",
        "User-Agent: " + UAS[len(call_id) % len(UAS)],
        "Max-Forwards: 70",
    ]
    body = ""
    if sdp:
        body = (f"v=0\r\no=- 1234 1 IN IP4 {a}\r\ns=-\r\nc=IN IP4 {a}\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
                "a=sendrecv\r\n")  # fmt: skip
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def build(rows: int, seed: int = 7) -> list[MessageRecord]:
    rng = random.Random(seed)
    pool = endpoints(rng)
    out: list[MessageRecord] = []
    i = 0
    while len(out) < rows:
        call_id = f"{rng.getrandbits(64):016x}{rng.getrandbits(64):016x}@pbx.example.net"
        a, b = rng.choice(pool), rng.choice(pool)
        proxy = PROXIES[i % 3]
        t = T0_US + i * 700  # ~1400 new calls per second of capture time
        ua_a, ua_b = UAS[i % len(UAS)], UAS[(i * 7 + 3) % len(UAS)]
        for step, (method, status, reason, direction, sdp, copies) in enumerate(CALL):
            t += 20_000 if step != 3 else 3_000_000
            sender, receiver = (a, b) if direction == "caller_to_callee" else (b, a)
            cseq = 2 if method == "BYE" else 1
            ref = f"7:{i}:{step}"
            obs = [ObservationRow(t, sender, 5060, proxy, 5060, "in", ref)]
            if copies == 2:
                obs.append(ObservationRow(t + 200, proxy, 5060, receiver, 5060, "out", ref + "o"))
            else:
                obs = [ObservationRow(t, proxy, 5060, receiver, 5060, "out", ref)]
            out.append(
                MessageRecord(
                    id=record_id(ref), event_time_us=t, node="kam-edge-1", capture_id=2001,
                    call_id=call_id, is_request=status == 0, method=method, status=status,
                    reason_phrase=reason, cseq=cseq, from_tag=f"f{call_id[:8]}",
                    to_tag=f"t{call_id[8:16]}" if step >= 2 else "", direction=direction,
                    dialog_state="early" if step < 3 else "confirmed",
                    origin="proxy" if copies == 1 else "endpoint", retransmission=False,
                    transport="udp", src_ip=obs[0].src_ip, src_port=5060,
                    dst_ip=obs[-1].dst_ip, dst_port=5060,
                    user_agent=ua_a if direction == "caller_to_callee" else ua_b,
                    allow=ALLOW if method == "INVITE" else None,
                    supported=["replaces", "timer", "100rel"] if method == "INVITE" else None,
                    require=None, session_expires=1800 if step in (0, 3) else None,
                    refresher="uac" if step == 3 else None, min_se=90 if step == 0 else None,
                    has_sdp=sdp, sdp_role=("offer" if step == 0 else "answer") if sdp else "",
                    malformed=[], correlation_id="", x_cid="", observations=obs,
                    raw=raw_sip(method, status, reason, call_id, cseq, sender, receiver, sdp),
                )
            )  # fmt: skip
        i += 1
    return out[:rows]


def others(messages: list[MessageRecord]) -> list[Record]:
    """Dialogs, session changes and anomalies for the calls of `messages`, each placed right
    after its call's last message (as the engine emits them)."""
    out: list[Record] = []
    for k in range(0, len(messages), len(CALL)):
        call = messages[k : k + len(CALL)]
        out += call
        if len(call) < len(CALL):
            break
        inv, ok, bye = call[0], call[3], call[-1]
        i = k // len(CALL)
        ua_a, ua_b = inv.user_agent, ok.user_agent
        out.append(DialogRecord(
            id=record_id("dialog", inv.call_id), node=inv.node, call_id=inv.call_id,
            caller_tag=inv.from_tag, callee_tag=ok.to_tag, state="confirmed",
            start_time_us=inv.event_time_us, early_time_us=call[2].event_time_us,
            confirmed_time_us=ok.event_time_us, end_time_us=bye.event_time_us,
            end_reason="bye", initial_status=200, call_id_owner="self", record_routed=True,
            caller_ua=ua_a, callee_ua=ua_b, caller_ip=inv.src_ip, callee_ip=ok.src_ip,
            reinvites=int(i % 5 == 0), updates=0, pracks=0, anomalies=int(i % 10 == 0), x_cid="",
            session_id_pair="", icid="", correlation_id="",
        ))  # fmt: skip
        if i % 5 == 0:
            out.append(SessionChangeRecord(
                id=record_id("sc", inv.call_id), event_time_us=ok.event_time_us + 1_000_000,
                node=inv.node, call_id=inv.call_id, caller_tag=inv.from_tag,
                callee_tag=ok.to_tag, method="INVITE", cseq=2, direction="caller_to_callee",
                dialog_state="confirmed", status=200 if i % 10 else 491,
                status_class="success" if i % 10 else "glare", time_to_final_ms=12.5,
                intent="hold", offer_in="request", sdp_version_before=1, sdp_version_after=2,
                had_reliable_1xx=False, retransmissions=0, ua_sender=ua_a, ua_peer=ua_b,
                evidence=[inv.id, ok.id], fields={"direction_before": "sendrecv"},
            ))  # fmt: skip
        if i % 10 == 0:
            out.append(AnomalyRecord(
                id=record_id("an", inv.call_id), anomaly="glare_491", severity="medium",
                confidence=0.9, event_time_us=ok.event_time_us + 1_000_000,
                detected_at_us=ok.event_time_us + 1_010_000, node=inv.node,
                capture_id=inv.capture_id, call_id=inv.call_id, caller_tag=inv.from_tag,
                callee_tag=ok.to_tag, dialog_state="confirmed", direction="callee_to_caller",
                method="INVITE", cseq=2, status=491, reason="Request Pending",
                src_ip=ok.src_ip, src_port=5060, dst_ip=inv.src_ip, dst_port=5060,
                transport="udp", ua_sender=ua_b, ua_peer=ua_a, hep_correlation_id="", x_cid="",
                session_id_pair="", icid="", call_id_owner="self", family="C.3",
                evidence=[inv.id, ok.id],
                fields={"crossing": "crossing_request", "t_retry": None, "glare_peer_cseq": 2},
            ))  # fmt: skip
    return out


def run(mode: str, records: list[Record], batch: int, root: Path) -> dict[str, float]:
    path = root / f"chdb-{mode}"
    shutil.rmtree(path, ignore_errors=True)
    cfg = ClickHouseConfig(dsn=f"chdb://{path}", batch_rows=batch)
    client = connect(cfg.dsn)
    try:
        apply_migrations(client, cfg)
        sink = ClickHouseSink(client, cfg, pack_addresses=mode != "driver", native=mode == "native")
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        for lo in range(0, len(records), batch):
            sink.position(0, lo)
            sink.write(records[lo : lo + batch])
            sink.flush()
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu
        stored = {t: int(client.command(f"SELECT count() FROM {t}")) for t in sink.rows_written}
        minutes = int(client.command("SELECT sum(messages) FROM sip_minute_counts"))
    finally:
        client.close()
        shutil.rmtree(path, ignore_errors=True)
    if stored != sink.rows_written or sum(stored.values()) != len(records):
        raise SystemExit(f"{mode}: stored {stored}, wrote {len(records)} records")
    if minutes != stored["sip_messages"]:
        raise SystemExit(f"{mode}: the view counted {minutes} messages of {stored}")
    n = len(records)
    return {
        "convert": n / sink.convert_seconds,
        "insert": n / sink.insert_seconds,
        "total": n / total,
        "cpu_us": cpu / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="messages (the mix adds 19%%)")
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--mode", default="native,lists", help="native, lists, driver (comma list)")
    ap.add_argument("--data", default="messages,mix", help="messages, mix (comma list)")
    ap.add_argument("--dir", type=Path, help="where the chDB directories go (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    modes = args.mode.split(",")
    if "native" in modes and not HAVE_NATIVE:
        raise SystemExit("the C extension is not built: pip install -e . (or --mode lists)")

    t = time.perf_counter()
    messages = build(args.rows)
    datasets: dict[str, list[Record]] = {}
    for name in args.data.split(","):
        datasets[name] = list(messages) if name == "messages" else others(messages)
    raw = sum(len(r.raw) for r in messages) / len(messages)
    obs = sum(len(r.observations) for r in messages) / len(messages)
    print(f"built {len(messages)} MessageRecords in {time.perf_counter() - t:.1f} s "
          f"(raw {raw:.0f} bytes, {obs:.2f} observations per message)")  # fmt: skip
    tune_gc()  # as consume and run do
    root = args.dir or Path(tempfile.mkdtemp(prefix="hepwatch-insert-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; batch {args.batch}")
    print(f"{'data':<9} {'rows':>7} {'mode':<7} {'convert rows/s':>15} {'insert rows/s':>14} "
          f"{'total rows/s':>13} {'CPU µs/row':>11} {'load':>5}")  # fmt: skip
    try:
        for _ in range(args.repeat):
            for name, records in datasets.items():
                for mode in modes:
                    r = run(mode, records, args.batch, root)
                    print(f"{name:<9} {len(records):>7} {mode:<7} {r['convert']:>15,.0f} "
                          f"{r['insert']:>14,.0f} {r['total']:>13,.0f} {r['cpu_us']:>11.1f} "
                          f"{os.getloadavg()[0]:>5.2f}", flush=True)  # fmt: skip
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
