"""ClickHouse query benchmark: 491 and 405 responses per minute over the last 24 hours,
read from the per-minute counts (`sip_minute_counts`, kept by a materialized view) and,
for comparison, from the raw `sip_messages`.

    .venv/bin/python bench/clickhouse/minute_query.py [--rows 10000000] [--runs 50]
        [--warmup 5] [--dir PATH] [--keep]

A fresh chDB directory gets the project's migrations; then `--rows` SIP messages spread over
the 24 hours before now are generated inside the engine (INSERT ... SELECT FROM numbers(),
so the materialized view fills `sip_minute_counts` exactly as the consumers' inserts do):
half requests, half responses; 4 capture nodes; 600 peers, each with one of 12 user agents;
methods and statuses in the proportions of a proxy's day (INVITE, ACK, BYE, OPTIONS,
REGISTER, ... and 100/180/183/200/401/407/4xx/5xx), with 491 and 405 at 1% of responses
each (0.5% of all messages). Each query is timed through clickhouse-connect (what `hepwatch
sql`, `alerts` and the HTTP endpoint use), `--warmup` untimed runs then `--runs` timed ones;
it prints median and p95, then the same after `OPTIMIZE ... FINAL` (all parts merged, the
state a day-old partition reaches by background merges). Both queries must return the same
rows; the benchmark stops if they do not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from hepwatch.config import ClickHouseConfig

MINUTE_COUNTS_QUERY = """
SELECT minute, status, sum(messages) AS responses
FROM sip_minute_counts
WHERE status IN (491, 405) AND minute >= {cutoff}
GROUP BY minute, status
ORDER BY minute, status
"""

RAW_QUERY = """
SELECT toStartOfMinute(event_time) AS minute, status, count() AS responses
FROM sip_messages
WHERE status IN (491, 405) AND event_time >= {cutoff}
GROUP BY minute, status
ORDER BY minute, status
"""

# (value, per-mille share). Requests are half the messages, responses the other half.
REQUEST_METHODS = [
    ("INVITE", 220),
    ("ACK", 200),
    ("BYE", 150),
    ("OPTIONS", 150),
    ("REGISTER", 120),
    ("UPDATE", 40),
    ("PRACK", 40),
    ("CANCEL", 20),
    ("INFO", 20),
    ("SUBSCRIBE", 20),
    ("NOTIFY", 20),
]
RESPONSE_STATUSES = [
    (100, 150),
    (180, 150),
    (183, 80),
    (200, 425),
    (401, 40),
    (407, 30),
    (404, 20),
    (486, 20),
    (487, 20),
    (408, 10),
    (480, 10),
    (488, 10),
    (491, 10),
    (405, 10),
    (500, 5),
    (503, 10),
]
USER_AGENTS = [
    "Yealink SIP-T46U 66.86.0.15",
    "Polycom/6.4.6 VVX 411",
    "Cisco-SIPGateway/IOS-16.12",
    "Asterisk PBX 20.5.0",
    "FreeSWITCH-mod_sofia/1.10.11",
    "Grandstream GXP2170 1.0.11.3",
    "Linphone/5.2.0 (belle-sip/5.2.0)",
    "MicroSIP/3.21.3",
    "Z 5.6.1 rv2.10.19",
    "AudioCodes-Sip-Gateway-Mediant 800/v.7.40A",
    "Ribbon SBC SWe 11.1",
    "Oracle SBC SCZ9.1.0",
]
NODES = ["proxy-1", "proxy-2", "proxy-3", "proxy-4"]
PEERS = 600
DAY_US = 86_400_000_000


def _pick(choices: list[tuple[object, int]], draw: str) -> str:
    """multiIf over cumulative per-mille thresholds of `draw` (0..999)."""
    assert sum(share for _, share in choices) == 1000
    parts, upto = [], 0
    for value, share in choices[:-1]:
        upto += share
        literal = f"'{value}'" if isinstance(value, str) else str(value)
        parts.append(f"{draw} < {upto}, {literal}")
    last = choices[-1][0]
    parts.append(f"'{last}'" if isinstance(last, str) else str(last))
    return "multiIf(" + ", ".join(parts) + ")"


def _array(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def generate_sql(rows: int, end_us: int) -> str:
    step = DAY_US // rows  # µs between messages: the day, evenly filled, with jitter
    status = _pick(RESPONSE_STATUSES, "r_status")
    request_method = _pick(REQUEST_METHODS, "r_method")
    # The CSeq method of a response: what a proxy sees answered.
    response_method = f"""multiIf(
            status = 491, if(r_method % 2 = 0, 'INVITE', 'UPDATE'),
            status = 405, if(r_method % 5 = 0, 'SUBSCRIBE', 'UPDATE'),
            status IN (401, 407), if(r_method % 3 = 0, 'INVITE', 'REGISTER'),
            status IN (180, 183, 486, 487, 480, 488, 408, 404), 'INVITE',
            status = 200, {_array(["INVITE", "BYE", "OPTIONS", "REGISTER", "ACK"])}[
                1 + r_method % 4],
            'INVITE')"""
    return f"""
INSERT INTO sip_messages (id, event_time, node_name, capture_id, call_id, is_request,
    method, status, reason_phrase, cseq, from_tag, to_tag, direction, dialog_state, origin,
    retransmission, transport, src_ip, src_port, dst_ip, dst_port, user_agent, raw,
    src_partition, src_offset)
SELECT
    hex(cityHash64(number)) AS id,
    fromUnixTimestamp64Micro(toInt64({end_us}) - toInt64(number) * {step}
        - toInt64(cityHash64(number, 3) % {step}), 'UTC') AS event_time,
    {_array(NODES)}[1 + node_n] AS node_name,
    toUInt32(2001 + node_n) AS capture_id,
    concat(hex(cityHash64(intDiv(number, 12))), '@bench.example') AS call_id,
    is_request,
    if(is_request, {request_method}, {response_method}) AS method,
    toUInt16(if(is_request, 0, {status})) AS status,
    '' AS reason_phrase,
    toUInt32(1 + r_method % 5) AS cseq,
    hex(cityHash64(intDiv(number, 12), 7)) AS from_tag,
    if(is_request AND method IN ('INVITE', 'OPTIONS', 'REGISTER') AND r_method % 3 = 0, '',
       hex(cityHash64(intDiv(number, 12), 8))) AS to_tag,
    if(cityHash64(number, 9) % 2 = 0, 'caller', 'callee') AS direction,
    if(is_request AND method = 'INVITE', 'early', 'confirmed') AS dialog_state,
    'relayed' AS origin,
    cityHash64(number, 10) % 100 = 0 AS retransmission,
    'udp' AS transport,
    CAST(toIPv4(toUInt32(169082880 + peer_n)) AS IPv6) AS src_ip,
    toUInt16(5060) AS src_port,
    CAST(toIPv4(toUInt32(167772161 + node_n)) AS IPv6) AS dst_ip,
    toUInt16(5060) AS dst_port,
    {_array(USER_AGENTS)}[1 + peer_n % {len(USER_AGENTS)}] AS user_agent,
    concat(method, ' sip:bench SIP/2.0') AS raw,
    toInt32(number % 12) AS src_partition,
    toInt64(intDiv(number, 12)) AS src_offset
FROM
(
    SELECT
        number,
        number % 2 = 0 AS is_request,
        cityHash64(number, 1) % 1000 AS r_method,
        cityHash64(number, 2) % 1000 AS r_status,
        cityHash64(number, 4) % {len(NODES)} AS node_n,
        cityHash64(number, 5) % {PEERS} AS peer_n
    FROM numbers({rows})
)
"""


def time_query(client: Client, sql: str, runs: int, warmup: int) -> tuple[float, float, list]:
    """(median ms, p95 ms, rows) over `runs` timed executions after `warmup` untimed ones."""
    rows: list = []
    for _ in range(warmup):
        rows = client.query(sql).result_rows
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        rows = client.query(sql).result_rows
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, rows


def table_stats(client: Client, table: str) -> tuple[int, int, int]:
    """(rows, active parts, bytes on disk) of a table."""
    (rows,) = client.query(f"SELECT count() FROM {table}").result_rows[0]
    parts, size = client.query(
        "SELECT count(), sum(bytes_on_disk) FROM system.parts "
        f"WHERE database = currentDatabase() AND table = '{table}' AND active"
    ).result_rows[0]
    return int(rows), int(parts), int(size or 0)


def report(client: Client, label: str, cutoff: str, runs: int, warmup: int) -> None:
    for table in ("sip_messages", "sip_minute_counts"):
        rows, parts, size = table_stats(client, table)
        print(f"  {table}: {rows:,} rows in {parts} parts, {size / 2**20:,.0f} MiB")
    mv_sql, raw_sql = (q.format(cutoff=cutoff) for q in (MINUTE_COUNTS_QUERY, RAW_QUERY))
    mv_med, mv_p95, mv_rows = time_query(client, mv_sql, runs, warmup)
    raw_med, raw_p95, raw_rows = time_query(client, raw_sql, runs, warmup)
    if [tuple(r) for r in mv_rows] != [tuple(r) for r in raw_rows]:
        sys.exit(f"{label}: minute counts and raw messages disagree: the view lost rows")
    responses = sum(r[2] for r in mv_rows)
    print(
        f"  491/405 per minute, last 24 h ({len(mv_rows)} rows, {responses:,} responses):\n"
        f"    sip_minute_counts: median {mv_med:.1f} ms, p95 {mv_p95:.1f} ms\n"
        f"    sip_messages (raw): median {raw_med:.1f} ms, p95 {raw_p95:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="chDB directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the chDB directory")
    args = parser.parse_args()

    path = args.dir or Path(tempfile.mkdtemp(prefix="hepwatch-bench-ch-"))
    if path.exists() and any(path.iterdir()):
        sys.exit(f"{path} is not empty: the benchmark needs a fresh directory")
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path.resolve()}")
        from consumers.clickhouse.migrations import apply_migrations

        apply_migrations(client, ClickHouseConfig(dsn=f"chdb://{path.resolve()}"))
        print(
            f"chDB at {path}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"generating {args.rows:,} messages"
        )
        end_us = time.time_ns() // 1000
        start = time.perf_counter()
        client.command(generate_sql(args.rows, end_us))
        took = time.perf_counter() - start
        print(
            f"  generated in {took:.1f} s ({args.rows / took:,.0f} rows/s, INSERT SELECT "
            "inside the engine with the view; not the sink's insert path)"
        )
        print("as inserted (background merges may still run):")
        # "The last 24 h" as of the generation, from a whole minute: both queries cover
        # the same minutes whenever they run, so their rows must be equal.
        cutoff = f"toDateTime({(end_us // 1_000_000 - 86_400) // 60 * 60}, 'UTC')"
        report(client, "as inserted", cutoff, args.runs, args.warmup)
        start = time.perf_counter()
        client.command("OPTIMIZE TABLE sip_minute_counts FINAL")
        client.command("OPTIMIZE TABLE sip_messages FINAL")
        print(f"after OPTIMIZE FINAL ({time.perf_counter() - start:.1f} s):")
        report(client, "merged", cutoff, args.runs, args.warmup)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
