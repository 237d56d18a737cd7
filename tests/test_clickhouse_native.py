"""The sink's C Native encoder on the real embedded engine: the same rows as the list path.

Every record kind (engine-produced calls with glare, refused UPDATEs, IPv4 and IPv6 legs,
plus hand-made edge values: None in Nullable columns, empty and absent lists, non-ASCII
text, addresses that are not addresses, extreme integers) is written once through the
driver's list path and once through the Native encoder; every column of every table is
read back and must be equal. Also: both paths give a block the same deduplication token,
bad values fail the flush naming the column with the rows kept, and a table type the
encoder does not know falls back to the list path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_clickhouse_sink import call

from consumers.clickhouse import native
from consumers.clickhouse.client import Client, connect
from consumers.clickhouse.migrations import apply_migrations
from consumers.clickhouse.rows import TABLES
from consumers.clickhouse.sink import ClickHouseSink, SinkFlushError
from consumers.records import DialogRecord, MessageRecord, ObservationRow, Record, field_names
from hepwatch.config import ClickHouseConfig, TtlConfig

pytestmark = pytest.mark.skipif(not native.HAVE_NATIVE, reason="C extension not built")

CFG = ClickHouseConfig(ttl=TtlConfig(**dict.fromkeys(TtlConfig.model_fields, 5000)))


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path}/ch")
    apply_migrations(client, CFG)
    client.command("SYSTEM STOP MERGES")
    yield client
    client.close()


def edge_records(base: list[Record]) -> list[Record]:
    """Copies of real records with the values most likely to be encoded differently."""
    msg = next(r for r in base if isinstance(r, MessageRecord))
    dialog = next(r for r in base if isinstance(r, DialogRecord))
    obs = ObservationRow(2**53, "::ffff:10.9.8.7", 65535, "fe80::1%eth0", 0, "unknown", "é", 0)
    return [
        msg.replace(
            id="edge-1", allow=[], supported=None, require=["100rel", "timer"],
            session_expires=2**32 - 1, min_se=0, refresher=None, user_agent="Zoë/1.0 ☎",
            status=65535, cseq=0, capture_id=2**32 - 1, src_ip="not-an-ip", dst_ip="",
            malformed=["bad Via", ""], observations=[], raw=b"\x00\xff" * 300,
            correlation_id="x" * 200, reason_phrase="",
        ),
        msg.replace(
            id="edge-2", allow=None, supported=[], session_expires=None, min_se=None,
            refresher="uas", observations=[obs, obs], raw=b"", src_ip="[2001:db8::9]",
            dst_ip="255.255.255.255", event_time_us=msg.event_time_us + 1,
        ),
        dialog.replace(
            id="edge-3", early_time_us=None, confirmed_time_us=None, record_routed=None,
            caller_ip="::", callee_ip="bogus",
        ),
        dialog.replace(id="edge-4", record_routed=False, reinvites=2**32 - 1),
    ]  # fmt: skip


def records() -> list[Record]:
    out: list[Record] = []
    for i in range(4):
        out += call(f"n{i}@test", node_v6=i % 2 == 0)
    return out + edge_records(out)


def read_back(client: Client) -> dict[str, list[tuple[Any, ...]]]:
    return {
        spec.table: client.query(f"SELECT * FROM {spec.table} ORDER BY id").result_rows
        for spec in TABLES.values()
    }


def truncate(client: Client) -> None:
    for spec in TABLES.values():
        client.command(f"TRUNCATE TABLE {spec.table}")
    client.command("TRUNCATE TABLE sip_minute_counts")


def write(client: Client, recs: list[Record], *, native_path: bool) -> ClickHouseSink:
    sink = ClickHouseSink(client, CFG, native=native_path, chunk_rows=7)
    half = len(recs) // 2
    sink.position(2, 10)
    sink.write(recs[:half])
    sink.position(3, 11)
    sink.write(recs[half:])
    sink.flush()
    return sink


def test_native_path_writes_exactly_the_rows_of_the_list_path(ch: Client) -> None:
    recs = records()
    kinds = {r.kind for r in recs}
    assert {"message", "session_change", "dialog", "anomaly"} <= kinds

    old = write(ch, recs, native_path=False)
    before = read_back(ch)
    minutes_before = ch.query("SELECT * FROM sip_minute_counts ORDER BY ALL").result_rows
    truncate(ch)
    new = write(ch, recs, native_path=True)
    after = read_back(ch)
    minutes_after = ch.query("SELECT * FROM sip_minute_counts ORDER BY ALL").result_rows

    assert new.rows_written == old.rows_written
    for spec in TABLES.values():
        assert len(after[spec.table]) == old.rows_written[spec.table] > 0, spec.table
        for row_old, row_new in zip(before[spec.table], after[spec.table], strict=True):
            assert row_new == row_old, spec.table
    assert minutes_after == minutes_before
    assert new.addresses.invalid == old.addresses.invalid == 2  # "not-an-ip", "bogus"
    edge = ch.query(
        "SELECT raw, allow, has_allow, has_supported, session_expires, obs_time, user_agent "
        "FROM sip_messages WHERE id = 'edge-1'",
        column_formats={"raw": "bytes"},
    ).result_rows[0]
    assert edge[0] == b"\x00\xff" * 300 and edge[1] == [] and edge[2] is True
    assert edge[3] is False and edge[4] == 2**32 - 1 and edge[5] == []
    assert edge[6] == "Zoë/1.0 ☎"


def test_both_paths_give_a_block_the_same_token(ch: Client) -> None:
    """A block written by one path and re-sent by the other is dropped as a repeat."""
    recs = records()
    write(ch, recs, native_path=False)
    first = read_back(ch)
    write(ch, recs, native_path=True)  # same rows, same positions: same tokens
    assert read_back(ch) == first
    assert ch.command("SELECT sum(messages) FROM sip_minute_counts") == len(first["sip_messages"])


def test_text_that_is_not_unicode_keeps_its_original_bytes(ch: Client) -> None:
    msg = next(r for r in call("s@test", node_v6=False) if isinstance(r, MessageRecord))
    # header values are decoded with surrogateescape: b"\xff" arrives as "\udcff"
    odd = msg.replace(user_agent=b"UA \xff\xfe".decode("utf-8", "surrogateescape"))
    sink = ClickHouseSink(ch, CFG, native=True)
    sink.write([odd])
    sink.flush()
    got = ch.query(
        "SELECT user_agent FROM sip_messages", column_formats={"user_agent": "bytes"}
    ).result_rows
    assert got == [(b"UA \xff\xfe",)]


@pytest.mark.parametrize(
    ("field", "value", "column"),
    [("status", 70000, "status"), ("cseq", -1, "cseq"), ("capture_id", "7", "capture_id"),
     ("call_id", None, "call_id"), ("allow", "INVITE", "allow")],
)  # fmt: skip
def test_a_bad_value_fails_the_flush_naming_the_column_and_keeps_the_rows(
    ch: Client, field: str, value: Any, column: str
) -> None:
    msg = next(r for r in call("b@test", node_v6=False) if isinstance(r, MessageRecord))
    # The compiled record refuses a value of the wrong type; a record-shaped object stands in
    # for a record from elsewhere (an interpreted build, a future producer) that has one.
    values = {name: getattr(msg, name) for name in field_names(msg)}
    bad = SimpleNamespace(**{**values, field: value}, kind=msg.kind)
    sink = ClickHouseSink(ch, CFG, native=True)
    sink.write([msg, bad])
    with pytest.raises(SinkFlushError, match=f"column {column} row 1"):
        sink.flush()
    assert sink.buffered_rows == 2 and sink.flush_failures == 1
    assert int(ch.command("SELECT count() FROM sip_messages")) == 0


def test_an_unknown_column_type_falls_back_to_the_list_path(ch: Client) -> None:
    ch.command("ALTER TABLE dialogs MODIFY COLUMN reinvites Decimal(9, 0)")
    recs = [r for r in call("d@test", node_v6=True) if r.kind in ("dialog", "message")]
    sink = ClickHouseSink(ch, CFG, native=True)
    sink.write(recs)
    sink.flush()
    assert sink._encoders["dialogs"] is None and sink._encoders["sip_messages"] is not None
    dialogs = [r for r in recs if isinstance(r, DialogRecord)]
    got = ch.query("SELECT id, reinvites FROM dialogs ORDER BY id").result_rows
    assert [(i, int(n)) for i, n in got] == sorted((d.id, d.reinvites) for d in dialogs)


def test_element_codes_follow_the_described_types() -> None:
    n = native._native
    assert native.element_code("LowCardinality(String)") == (n.CODE_STR, "String")
    assert native.element_code("Enum8('info' = 1, 'low' = 2)") == (n.CODE_STR, "String")
    assert native.element_code("IPv6") == (n.CODE_IP, "FixedString(16)")
    assert native.element_code("DateTime64(6, 'UTC')")[0] == n.CODE_I64
    assert native.element_code("Map(LowCardinality(String), String)") == (
        n.CODE_MAP,
        "Map(String, String)",
    )
    for unknown in ("DateTime64(3, 'UTC')", "Decimal(9, 0)", "UUID", "Map(String, UInt8)"):
        with pytest.raises(native.NativeUnsupported):
            native.element_code(unknown)
