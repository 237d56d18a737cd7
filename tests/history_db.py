"""The real embedded ClickHouse (chDB) for the history tests: the project's migrations applied,
records written through the project's ClickHouse sink (or its row mapping until the sink is
in the tree), plain SQL for rows the tests want exact.

chDB opens one data directory per process, so a test module shares one directory
(`open_db`) and `reset()` empties the tables between tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from consumers.records import Record, field_names
from hepwatch.config import ClickHouseConfig

TABLES = ("sip_messages", "session_changes", "dialogs", "anomalies", "sip_minute_counts")


def open_db(path: Path) -> Client:
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    from consumers.clickhouse.migrations import apply_migrations

    apply_migrations(client, ClickHouseConfig(dsn=f"chdb://{path}"))
    return client


def reset(client: Client) -> None:
    for table in TABLES:
        client.command(f"TRUNCATE TABLE {table}")


def insert_records(client: Client, records: Iterable[Record]) -> None:
    """Store records as the consumers do (leg records are not stored)."""
    records = [r for r in records if r.kind != "leg"]
    try:
        from consumers.clickhouse.sink import ClickHouseSink
    except ImportError:
        ClickHouseSink = None
    if ClickHouseSink is not None:
        sink = ClickHouseSink(client, ClickHouseConfig())
        sink.write(records)
        sink.flush()
        return
    from consumers.clickhouse.rows import TABLES as SPECS
    from consumers.clickhouse.rows import AddressPacker, columns_of

    packer = AddressPacker()
    for kind, spec in SPECS.items():
        batch = [r for r in records if r.kind == kind]
        if not batch:
            continue
        cols = [*columns_of(spec, batch, packer), [-1] * len(batch), [-1] * len(batch)]
        client.insert(spec.table, cols, column_names=spec.all_columns, column_oriented=True)


def insert_rows(client: Client, table: str, rows: list[dict[str, Any]]) -> None:
    """Plain rows (column -> value); columns not given take their defaults."""
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for row in rows:
        names = tuple(sorted(row))
        groups.setdefault(names, []).append([row[n] for n in names])
    for names, values in groups.items():
        client.insert(table, values, column_names=list(names))


def now_us() -> int:
    return int(time.time() * 1_000_000)


def shifted(records: Iterable[Record], delta_us: int) -> list[Record]:
    """Records moved in time by delta_us (sipflow calls happen in 2023; retention is days)."""
    out: list[Record] = []
    for rec in records:
        changes: dict[str, Any] = {}
        for name in field_names(rec):
            value = getattr(rec, name)
            if name.endswith("_us") and isinstance(value, int) and value:
                changes[name] = value + delta_us
        if hasattr(rec, "observations"):
            changes["observations"] = [
                o.replace(ts_us=o.ts_us + delta_us) for o in rec.observations
            ]
        out.append(rec.replace(**changes))
    return out
