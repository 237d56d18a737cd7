"""`hepwatch sql` through the click command against the real embedded engine (chDB): the
three output formats, parameters bound by the server and never spliced into the text,
saved queries, and clear errors."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from clickhouse_connect.driver.client import Client
from history_db import insert_rows, now_us, open_db, reset

from consumers.history.query import (
    QueryError,
    QueryResult,
    bind,
    format_table,
    parse_params,
    placeholders,
)
from hepwatch.cli import cli

MIN = 60_000_000


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Client]]:
    # chDB serves one data directory per process: the module's clients are closed at its end
    path = tmp_path_factory.mktemp("chdb")
    client = open_db(path)
    yield path, client
    client.close()


@pytest.fixture
def db_path(db: tuple[Path, Client]) -> Path:
    return db[0]


@pytest.fixture
def ch(db: tuple[Path, Client]) -> Client:
    reset(db[1])
    return db[1]


def hepwatch_sql(db_path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["sql", "--clickhouse", f"chdb://{db_path}", *args])


T = (1_790_000_000 * 1_000_000) // MIN * MIN  # fixed, so the expected text is exact


def seed(ch: Client) -> None:
    rows = []
    for i, (name, ip, sev) in enumerate(
        [("glare_491", "10.0.0.3", "info"), ("missing_ack", "2001:db8::7", "high")]
    ):
        rows.append(
            {
                "id": f"a{i}",
                "event_time": T + i * 1_500_000,
                "detected_at": T,
                "anomaly": name,
                "family": "C.1" if i == 0 else "C.7",
                "severity": sev,
                "node_name": "p1",
                "call_id": f"call-{i}@x",
                "src_ip": ip,
                "evidence": ["r1", "r2"] if i == 0 else [],
                "fields": {"k": "v"} if i == 0 else {},
                "src_partition": -1,
                "src_offset": -1,
            }
        )
    insert_rows(ch, "anomalies", rows)


QUERY = (
    "SELECT anomaly, severity, event_time, src_ip, evidence, fields, status "
    "FROM anomalies ORDER BY event_time"
)


def test_json_format(ch: Client, db_path: Path):
    seed(ch)
    res = hepwatch_sql(db_path, QUERY, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [
        {"anomaly": "glare_491", "severity": "info", "event_time": "2026-09-21T14:13:00",
         "src_ip": "10.0.0.3", "evidence": ["r1", "r2"], "fields": {"k": "v"}, "status": 0},
        {"anomaly": "missing_ack", "severity": "high",
         "event_time": "2026-09-21T14:13:01.500000", "src_ip": "2001:db8::7", "evidence": [],
         "fields": {}, "status": 0},
    ]  # fmt: skip


def test_csv_format(ch: Client, db_path: Path):
    seed(ch)
    res = hepwatch_sql(db_path, QUERY, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert list(csv.reader(io.StringIO(res.stdout))) == [
        ["anomaly", "severity", "event_time", "src_ip", "evidence", "fields", "status"],
        ["glare_491", "info", "2026-09-21 14:13:00", "10.0.0.3", '["r1","r2"]', '{"k":"v"}', "0"],
        ["missing_ack", "high", "2026-09-21 14:13:01.500000", "2001:db8::7", "[]", "{}", "0"],
    ]


def test_table_format(ch: Client, db_path: Path):
    seed(ch)
    res = hepwatch_sql(db_path, "SELECT anomaly, status, src_ip FROM anomalies ORDER BY anomaly")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "anomaly      status  src_ip",
        "-----------  ------  -----------",
        "glare_491         0  10.0.0.3",
        "missing_ack       0  2001:db8::7",
        "(2 rows)",
    ]


def test_table_too_wide_turns_vertical():
    result = QueryResult(["call_id", "raw"], ["String", "String"], [("c1", "INVITE x\r\nVia: y")])
    assert format_table(result, width=200).splitlines()[2] == "c1       INVITE x\\r\\nVia: y"
    assert format_table(result, width=10).splitlines() == [
        "Row 1:",
        "------",
        "call_id: c1",
        "    raw: INVITE x",
        "         Via: y",
        "",
        "(1 row)",
    ]


def test_empty_result_keeps_its_header(ch: Client, db_path: Path):
    res = hepwatch_sql(db_path, "SELECT call_id, status FROM anomalies", "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "call_id,status"
    res = hepwatch_sql(db_path, "SELECT call_id FROM anomalies", "--format", "json")
    assert res.stdout.strip() == "[]"


NASTY = "it's \"quoted\" \\ back'); DROP TABLE anomalies; --"


def test_parameter_with_quotes_is_bound_not_interpolated(ch: Client, db_path: Path):
    seed(ch)
    res = hepwatch_sql(
        db_path, "SELECT {v:String} AS v, length({v:String}) AS n", "--param", f"v={NASTY}",
        "--format", "json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"v": NASTY, "n": len(NASTY.encode())}]
    # the same value as a filter matches nothing and destroys nothing
    res = hepwatch_sql(
        db_path, "SELECT count() AS n FROM anomalies WHERE anomaly != {v:String}",
        "--param", "v=x' OR '1'='1", "--format", "csv",
    )  # fmt: skip
    assert res.stdout.splitlines() == ["n", "2"]
    assert ch.query("SELECT count() FROM anomalies").result_rows == [(2,)]


def test_server_parses_typed_parameters(ch: Client, db_path: Path):
    seed(ch)
    res = hepwatch_sql(
        db_path, "SELECT anomaly FROM anomalies WHERE event_time > {after:DateTime64(6)} "
        "AND src_ip = {ip:IPv6}", "--param", "after=2020-01-01 00:00:00",
        "--param", "ip=::ffff:10.0.0.3", "--format", "csv",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["anomaly", "glare_491"]
    res = hepwatch_sql(db_path, "SELECT {n:UInt8} AS n", "--param", "n=1; SELECT 2")
    assert res.exit_code == 1
    assert "Code:" in res.stderr


def test_only_placeholders_take_parameters():
    """A value never reaches clickhouse-connect's client-side %(name)s formatting."""
    with pytest.raises(QueryError, match=r"unknown parameter v \(the query takes no parameters"):
        bind("SELECT %(v)s", {"v": "1"})
    with pytest.raises(QueryError, match="unknown parameter w"):
        bind("SELECT {v:String}", {"v": "1", "w": "2"})
    with pytest.raises(QueryError, match=r"missing parameter v \(String\)"):
        bind("SELECT {v:String}", {})
    with pytest.raises(QueryError, match="declared as String and as UInt8"):
        placeholders("SELECT {v:String}, {v:UInt8}")
    assert placeholders("SELECT '{x:y}' -- {c:String}\n, {v:String}") == {
        "x": "y",
        "v": "String",
    }
    assert parse_params(["a=b=c", "e="]) == {"a": "b=c", "e": ""}
    for bad in (["novalue"], ["1x=2"], ["a=1", "a=2"]):
        with pytest.raises(QueryError):
            parse_params(bad)


def test_bad_query_exits_non_zero_with_the_clickhouse_error(ch: Client, db_path: Path):
    res = hepwatch_sql(db_path, "SELEC 1")
    assert res.exit_code == 1
    assert "Syntax error" in res.stderr and "Code: 62" in res.stderr
    res = hepwatch_sql(db_path, "SELECT nope FROM anomalies")
    assert res.exit_code == 1 and "Unknown expression identifier" in res.stderr


def test_saved_query_list_and_run(ch: Client, db_path: Path):
    res = hepwatch_sql(db_path, "--list")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    i = lines.index("calls_by_anomaly")
    assert lines[i + 2 : i + 5] == [
        "    --param anomaly String (required)  the anomaly type, e.g. glare_491 (see "
        "anomalies_by_type)",
        "    --param window_hours UInt32 = 24  hours back from now",
        "    --param limit UInt32 = 50  rows shown",
    ]
    insert_rows(
        ch,
        "anomalies",
        [
            {"id": "x1", "event_time": now_us() - MIN, "anomaly": "glare_491", "family": "C.1",
             "severity": "info", "call_id": "abc@h", "node_name": "p1", "src_partition": -1,
             "src_offset": -1},
        ],
    )  # fmt: skip
    res = hepwatch_sql(
        db_path, "--saved", "calls_by_anomaly", "--param", "anomaly=glare_491", "--format", "json"
    )
    assert res.exit_code == 0, res.output
    assert [r["call_id"] for r in json.loads(res.stdout)] == ["abc@h"]
    res = hepwatch_sql(db_path, "--saved", "calls_by_anomaly")
    assert res.exit_code == 1 and "missing parameter anomaly (String)" in res.stderr
    res = hepwatch_sql(db_path, "--saved", "calls_by_anomaly", "--param", "nope=1")
    assert res.exit_code == 1 and "unknown parameter nope" in res.stderr
    res = hepwatch_sql(db_path, "--saved", "no_such_query")
    assert res.exit_code == 1 and "no saved query 'no_such_query'" in res.stderr


def test_usage_errors(db_path: Path):
    res = hepwatch_sql(db_path)
    assert res.exit_code == 2 and "give a QUERY or --saved NAME" in res.stderr
    res = hepwatch_sql(db_path, "SELECT 1", "--saved", "call_lookup")
    assert res.exit_code == 2
    res = CliRunner().invoke(cli, ["sql", "SELECT 1", "--clickhouse", "chdb:///x", "--server",
                                   "http://127.0.0.1:8123"])  # fmt: skip
    assert res.exit_code == 2 and "not both" in res.stderr


def test_unreachable_server_is_a_clear_error():
    res = CliRunner().invoke(cli, ["sql", "SELECT 1", "--server", "http://127.0.0.1:1"])
    assert res.exit_code == 1
    assert "http://127.0.0.1:1" in res.stderr and "refused" in res.stderr
    res = CliRunner().invoke(cli, ["sql", "SELECT 1", "--server", "ftp://h"])
    assert res.exit_code == 1 and "expected chdb:///PATH or http(s)://" in res.stderr
