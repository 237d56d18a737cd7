"""The read-only ClickHouse-HTTP endpoint of `hepwatch run`, served in-process over a chDB
holding rows the engine made of a real call flow: the clickhouse-connect HTTP client against
it, formats byte for byte as chDB makes them, bound parameters, settings and limits,
ClickHouse-style errors, read-only enforcement and authentication."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb
import clickhouse_connect
import pytest
from sipflow import T0, Flow

from consumers.clickhouse.client import connect
from consumers.clickhouse.migrations import apply_migrations
from consumers.clickhouse.sink import ClickHouseSink
from consumers.engine import Engine
from hepwatch.config import ClickHouseConfig, QueryHttpConfig
from hepwatch.query_http import ChdbQueries, QueryError, QueryHttpServer, inspect_query

USERS = {"reader": "s3cret"}


class Endpoint:
    def __init__(self, path: str, lock: threading.Lock, config: QueryHttpConfig) -> None:
        self.queries = ChdbQueries(path, lock, config)
        self.queries.load_server_info()
        self.server = QueryHttpServer(self.queries, config)
        self.loop = asyncio.new_event_loop()
        self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def http(
        self,
        query: str | None = None,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/",
        auth: bool = True,
    ) -> tuple[int, Any, bytes]:
        q = dict(params or {})
        if query is not None:
            q["query"] = query
        hdrs = dict(headers or {})
        if auth and self.queries.config.users and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Basic " + base64.b64encode(b"reader:s3cret").decode()
        url = f"http://127.0.0.1:{self.port}{path}" + ("?" + urllib.parse.urlencode(q) if q else "")
        req = urllib.request.Request(url, data=body, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, threading.Lock]]:
    """chDB with the schema and the rows of a few engine-analysed calls."""
    path = tmp_path_factory.mktemp("query-http") / "clickhouse"
    client = connect(f"chdb://{path}")
    cfg = ClickHouseConfig()
    apply_migrations(client, cfg)
    records = []
    shift = int((time.time() - 3600 - T0) * 1e6)  # an hour ago: inside every table's TTL
    for i in range(3):
        f = Flow(f"qh-{i}@test")
        f.setup()
        f.wait(1.0)
        f.bye()
        for o in f.obs:  # calls a second apart, evidence refs unique (message ids hash them)
            o.ts_us += shift + i * 1_000_000
            o.ref = f"{f.call_id}/{o.ref}"
        records += f.engine_records(Engine())
    sink = ClickHouseSink(client, cfg)
    sink.position(0, 7)
    sink.write(records)
    sink.close()
    yield str(Path(client.path)), threading.Lock()
    client.close()


@pytest.fixture(scope="module")
def endpoint(engine_dir: tuple[str, threading.Lock]) -> Iterator[Endpoint]:
    ep = Endpoint(*engine_dir, QueryHttpConfig(max_result_rows=5000, max_execution_time_s=1.0))
    yield ep
    ep.close()


@pytest.fixture(scope="module")
def secured(engine_dir: tuple[str, threading.Lock]) -> Iterator[Endpoint]:
    ep = Endpoint(*engine_dir, QueryHttpConfig(users=USERS))
    yield ep
    ep.close()


def direct(engine_dir: tuple[str, threading.Lock], sql: str, fmt: str) -> bytes:
    """What chDB itself outputs (the reference the endpoint must match byte for byte)."""
    path, lock = engine_dir
    with lock:
        conn = chdb.connect(path)
        try:
            return conn.query(sql, fmt).bytes()
        finally:
            conn.close()


# -- clickhouse-connect ---------------------------------------------------------------------


def test_clickhouse_connect_http_client(endpoint: Endpoint) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=endpoint.port, interface="http")
    try:
        assert client.server_version == endpoint.queries.version
        assert client.command("SELECT count() FROM sip_messages") == 3 * 7
        result = client.query(
            "SELECT call_id, method, status, event_time, src_ip, allow FROM sip_messages "
            "WHERE call_id = {cid:String} AND method = 'INVITE' AND status = 200",
            parameters={"cid": "qh-1@test"},
        )
        assert len(result.result_rows) == 1
        call_id, method, status, event_time, src_ip, allow = result.result_rows[0]
        assert (call_id, method, status) == ("qh-1@test", "INVITE", 200)
        assert abs(event_time.timestamp() - (time.time() - 3600)) < 60  # DateTime64 decoded
        assert ipaddress.ip_address(src_ip).ipv4_mapped == ipaddress.ip_address("10.0.0.3")
        assert "UPDATE" in allow
        by_method = dict(
            client.query(
                "SELECT method, count() FROM sip_messages WHERE status = 0 GROUP BY method"
            ).result_rows
        )
        assert by_method == {"INVITE": 3, "ACK": 3, "BYE": 3}
        with pytest.raises(Exception, match="Code: 60"):
            client.query("SELECT * FROM no_such_table")
        with pytest.raises(Exception, match="readonly"):
            client.command("DROP TABLE sip_messages")
        assert client.command("SELECT count() FROM dialogs") == 3
    finally:
        client.close()
    # The form-encoded variant (multipart: query and parameters as fields).
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint.port, interface="http", form_encode_query_params=True
    )
    try:
        rows = client.query(
            "SELECT count() FROM sip_messages WHERE call_id = {cid:String}",
            parameters={"cid": "qh-2@test"},
        ).result_rows
        assert rows == [(7,)]
    finally:
        client.close()


def test_clickhouse_connect_with_credentials(secured: Endpoint) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=secured.port, interface="http", username="reader", password="s3cret"
    )
    try:
        assert client.command("SELECT count() FROM anomalies") == 0
    finally:
        client.close()
    with pytest.raises(Exception, match=r"516|AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(
            host="127.0.0.1", port=secured.port, interface="http", username="reader", password="x"
        )


# -- formats --------------------------------------------------------------------------------

SAMPLE = (
    "SELECT call_id, method, status, cseq, event_time, src_ip, allow FROM sip_messages "
    "ORDER BY event_time, id"
)


@pytest.mark.parametrize(
    ("fmt", "ctype"),
    [
        ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
        ("CSVWithNames", "text/csv; charset=UTF-8; header=present"),
        ("JSONEachRow", "application/x-ndjson; charset=UTF-8"),
        ("RowBinaryWithNamesAndTypes", "application/octet-stream"),
        ("Native", "application/octet-stream"),
        ("TSVWithNamesAndTypes", "text/tab-separated-values; charset=UTF-8"),
    ],
)
def test_formats_are_chdbs_own_bytes(
    endpoint: Endpoint, engine_dir: tuple[str, threading.Lock], fmt: str, ctype: str
) -> None:
    expected = direct(engine_dir, SAMPLE, fmt)
    # As a FORMAT clause, and as default_format.
    status, headers, body = endpoint.http(f"{SAMPLE} FORMAT {fmt}")
    assert status == 200, body
    assert body == expected
    assert headers["Content-Type"] == ctype
    assert headers["X-ClickHouse-Format"] == fmt
    status, headers, body = endpoint.http(SAMPLE, params={"default_format": fmt})
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, expected, fmt)


def test_default_format_and_json(endpoint: Endpoint) -> None:
    status, headers, body = endpoint.http("SELECT 1 AS one, 'a\tb' AS s")
    assert (status, body) == (200, b"1\ta\\tb\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"] == endpoint.queries.timezone
    summary = json.loads(headers["X-ClickHouse-Summary"])
    assert summary["read_rows"] == "1"
    assert headers["X-ClickHouse-Query-Id"]
    status, headers, body = endpoint.http(
        "SELECT method, count() AS n FROM sip_messages GROUP BY method ORDER BY method FORMAT JSON"
    )
    doc = json.loads(body)
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    assert [c["name"] for c in doc["meta"]] == ["method", "n"]
    assert {r["method"]: int(r["n"]) for r in doc["data"]} == {"INVITE": 12, "ACK": 3, "BYE": 6}
    # A format name in a string or a column called `format` is not a FORMAT clause.
    status, headers, body = endpoint.http("SELECT 'x FORMAT JSON' AS format")
    assert (status, body, headers["X-ClickHouse-Format"]) == (
        200,
        b"x FORMAT JSON\n",
        "TabSeparated",
    )


def test_query_in_body_and_params(endpoint: Endpoint) -> None:
    status, _, body = endpoint.http(body=b"SELECT count() FROM sip_messages WHERE method = 'BYE'")
    assert (status, body) == (200, b"6\n")
    # The query parameter, a newline, then the body (ClickHouse's rule).
    status, _, body = endpoint.http("SELECT count() FROM sip_messages", body=b"WHERE status = 487")
    assert (status, body) == (200, b"0\n")
    status, _, body = endpoint.http(
        "SELECT {a:UInt32} + 1 AS x, {s:String} AS s FORMAT CSV",
        params={"param_a": "41", "param_s": "it's"},
    )
    assert (status, list(csv.reader(io.StringIO(body.decode())))) == (200, [["42", "it's"]])
    status, _, body = endpoint.http("SELECT count() FROM one", params={"database": "system"})
    assert (status, body) == (200, b"1\n")
    # Settings ride as parameters; transport-only parameters are ignored.
    status, _, body = endpoint.http(
        "SELECT getSetting('max_threads') AS t",
        params={"max_threads": "3", "session_id": "abc", "compress": "0", "wait_end_of_query": "1"},
    )
    assert (status, body) == (200, b"3\n")


def test_ping_and_empty_get(endpoint: Endpoint) -> None:
    assert endpoint.http(path="/ping")[::2] == (200, b"Ok.\n")
    assert endpoint.http()[::2] == (200, b"Ok.\n")
    assert endpoint.http(path="/replicas_status")[::2] == (200, b"Ok.\n")


# -- errors and limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "params", "status", "code"),
    [
        ("SELECT * FROM no_such_table", {}, 404, 60),
        ("SELECT 1 +", {}, 400, 62),
        ("SELEC 1", {}, 403, 164),  # not a statement that is served
        ("SELECT no_such_column FROM sip_messages", {}, 400, 47),
        ("SELECT {a:UInt8}", {}, 400, 456),
        ("SELECT 1", {"database": "no_such_db"}, 404, 81),
        ("SELECT 1", {"default_format": "NoSuchFormat"}, 404, 73),
        ("SELECT 1", {"no_such_setting": "1"}, 400, 115),
        ("SELECT number FROM system.numbers LIMIT 9000", {}, 500, 396),  # max_result_rows 5000
        ("SELECT sleepEachRow(0.5) FROM numbers(4)", {}, 500, 159),  # max_execution_time 1 s
    ],
)
def test_errors_are_clickhouse_style(
    endpoint: Endpoint, query: str, params: dict[str, str], status: int, code: int
) -> None:
    got, headers, body = endpoint.http(query, params=params)
    text = body.decode()
    assert got == status, text
    assert headers["X-ClickHouse-Exception-Code"] == str(code)
    assert text.startswith(f"Code: {code}. DB::Exception: "), text
    assert text.rstrip().endswith(f"(version {endpoint.queries.version})"), text


def test_limits_cannot_be_raised_by_the_client(endpoint: Endpoint) -> None:
    status, headers, _ = endpoint.http(
        "SELECT number FROM system.numbers LIMIT 9000", params={"max_result_rows": "100000"}
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "396")
    status, _, body = endpoint.http(
        "SELECT count() FROM (SELECT number FROM numbers(50))", params={"max_result_rows": "10"}
    )
    assert (status, body) == (200, b"50\n")


# -- read-only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO sip_messages (id) VALUES ('x')",
        "DROP TABLE sip_messages",
        "ALTER TABLE sip_messages DELETE WHERE 1",
        "TRUNCATE TABLE dialogs",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "SET readonly = 0",
        "SELECT 1; DROP TABLE sip_messages",
        "SELECT 1 /* ; */ ; SELECT 2",
        "SELECT 1 INTO OUTFILE '/tmp/hepwatch-must-not-exist.txt'",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
        "SELECT 1 SETTINGS readonly = 0",
        "WITH 1 AS x SELECT x INTO OUTFILE '/tmp/hepwatch-must-not-exist.txt'",
    ],
)
def test_read_only(endpoint: Endpoint, query: str) -> None:
    status, headers, body = endpoint.http(query)
    assert status == 403, body
    assert headers["X-ClickHouse-Exception-Code"] == "164"
    assert not Path("/tmp/hepwatch-must-not-exist.txt").exists()


def test_read_only_allows_reading_statements(endpoint: Endpoint) -> None:
    for query in (
        "SHOW TABLES",
        "DESCRIBE TABLE sip_messages",
        "DESC dialogs",
        "EXPLAIN SELECT 1",
        "EXISTS TABLE anomalies",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "  -- a comment\n SELECT 1;",
        "WITH 2 AS x SELECT x",
    ):
        status, _, body = endpoint.http(query)
        assert status == 200, (query, body)
    assert b"sip_messages" in endpoint.http("SHOW TABLES")[2]


def test_inspect_query() -> None:
    formats = {"json": "JSON", "csv": "CSV", "tabseparated": "TabSeparated"}
    assert inspect_query("SELECT 1", formats) is None
    assert inspect_query("SELECT 1 FORMAT json", formats) == "JSON"
    assert inspect_query("SELECT format('{}', 1) FROM t", formats) is None
    assert inspect_query("SELECT (SELECT 1 FORMAT CSV)", formats) is None  # not at depth 0
    assert inspect_query("select 'FORMAT JSON' -- FORMAT CSV\n", formats) is None
    for bad in ("", "  ", "-- nothing"):
        with pytest.raises(QueryError) as err:
            inspect_query(bad, formats)
        assert err.value.code == 62
    with pytest.raises(QueryError) as err:
        inspect_query("SELECT 1 ; ; SELECT 2", formats)
    assert err.value.code == 164
    assert inspect_query("SELECT ';' AS semi, `a;b` FROM t;;", formats) is None


# -- authentication -------------------------------------------------------------------------


def test_auth_required(secured: Endpoint) -> None:
    status, headers, body = secured.http("SELECT 1", auth=False)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "194"), body
    assert headers["WWW-Authenticate"].startswith("Basic")
    bad = "Basic " + base64.b64encode(b"reader:wrong").decode()
    status, headers, _ = secured.http("SELECT 1", headers={"Authorization": bad})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    status, _, _ = secured.http(
        "SELECT 1", auth=False, headers={"X-ClickHouse-User": "nobody", "X-ClickHouse-Key": "s"}
    )
    assert status == 403
    ok = [
        {"headers": {"X-ClickHouse-User": "reader", "X-ClickHouse-Key": "s3cret"}},
        {"params": {"user": "reader", "password": "s3cret"}},
        {},  # basic auth, added by Endpoint.http
    ]
    for kw in ok:
        status, _, body = secured.http("SELECT 7", auth=not kw, **kw)
        assert (status, body) == (200, b"7\n"), kw
    # /ping needs no credentials (load balancers and health checks use it).
    assert secured.http(path="/ping", auth=False)[0] == 200
