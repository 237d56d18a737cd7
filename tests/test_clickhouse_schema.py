"""ClickHouse schema: DSNs, the migration runner, TTL from config, the CLI, the cluster variant.

Runs on the real embedded engine (chDB) in a fresh directory per test; chDB allows one
directory per process, so every test closes its client.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumers.clickhouse.client import ClickHouseDsnError, Client, connect
from consumers.clickhouse.cluster import ClusterSqlError, cluster_statements
from consumers.clickhouse.migrations import (
    MigrationError,
    apply_migrations,
    load_migrations,
    migrate,
    migration_status,
    migrations_dir,
    render,
    schema_sql,
    split_statements,
)
from hepwatch.cli import cli
from hepwatch.config import ClickHouseConfig, TtlConfig

CORE = {"sip_messages", "session_changes", "dialogs", "anomalies", "sip_minute_counts"}


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Client]:
    client = connect(f"chdb://{tmp_path}/ch")
    yield client
    client.close()


@pytest.fixture
def mig_dir(tmp_path: Path) -> Path:
    """A copy of the project's migrations the test may change."""
    d = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), d)
    return d


def tables(client: Client) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {r[0] for r in rows.result_rows}


def create_sql(client: Client, table: str) -> str:
    return str(client.command(f"SHOW CREATE TABLE {table}")).replace("\\n", "\n")


# -- DSN -------------------------------------------------------------------------------------


def test_chdb_dsn_creates_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    client = connect(f"chdb://{target}")
    try:
        assert client.command("SELECT 41 + 1") == 42
        assert target.is_dir() and any(target.iterdir())
    finally:
        client.close()


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("localhost:8123", "expected chdb:///path"),
        ("mysql://db:3306/x", "unknown scheme 'mysql'"),
        ("chdb://", "needs a directory"),
        ("http:///nohost", "no host"),
        ("http://h:8123/a/b", "one name only"),
        ("http://h:notaport/db", "port"),
    ],
)
def test_bad_dsn_is_a_clear_error(dsn: str, message: str) -> None:
    with pytest.raises(ClickHouseDsnError, match=message):
        connect(dsn)


def test_chdb_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ClickHouseDsnError, match="chDB directory"):
        connect(f"chdb://{f}")


# -- statements and placeholders -----------------------------------------------------------


def test_split_statements_strips_comments_and_splits_at_line_end() -> None:
    sql = (
        "-- header; not a statement\n"
        "CREATE TABLE a (x String DEFAULT 'a -- b; c') -- trailing; comment\n"
        "ENGINE = Memory;\n"
        "\n"
        "SELECT 1; SELECT 2;\n"
        "-- only a comment;\n"
    )
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT 'a -- b; c')\nENGINE = Memory",
        "SELECT 1; SELECT 2",
    ]


def test_render_fills_ttl_and_rejects_unknown_or_overflowing_placeholders() -> None:
    ttl = TtlConfig(messages_days=7)
    assert render("INTERVAL {ttl_messages_days} DAY", ttl) == "INTERVAL 7 DAY"
    with pytest.raises(MigrationError, match="unknown placeholder"):
        render("{ttl_nothing_days}", ttl)
    with pytest.raises(MigrationError, match="2106"):
        render("{ttl_messages_days}", TtlConfig(messages_days=40_000))
    # other braces (cluster macros) are left alone
    assert render("'{shard}/{replica}'", ttl) == "'{shard}/{replica}'"


def test_migration_files_are_found_from_any_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEPWATCH_MIGRATIONS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    found = load_migrations()
    assert [m.version for m in found][:2] == [1, 2]
    assert found[0].filename == "0001_core_tables.sql"
    assert [m.version for m in found] == sorted(m.version for m in found)


def test_misnamed_or_duplicate_files_are_errors(mig_dir: Path) -> None:
    (mig_dir / "12_bad.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(mig_dir)
    (mig_dir / "12_bad.sql").unlink()
    (mig_dir / "0001_again.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="version 1 is also"):
        load_migrations(mig_dir)


# -- the runner ------------------------------------------------------------------------------


def test_apply_twice_is_a_no_op(ch: Client) -> None:
    on_disk = [m.version for m in load_migrations()]
    assert apply_migrations(ch, ClickHouseConfig()) == on_disk
    assert tables(ch) >= CORE
    assert "sip_minute_counts_mv" in tables(ch)
    first = ch.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [r[0] for r in first.result_rows] == on_disk
    assert [r[1] for r in first.result_rows] == [m.checksum for m in load_migrations()]

    assert apply_migrations(ch, ClickHouseConfig()) == []
    assert ch.command("SELECT count() FROM schema_migrations") == len(on_disk)
    states = migration_status(ch)
    assert [(s.version, s.state) for s in states] == [(v, "applied") for v in on_disk]


def test_a_new_migration_file_is_picked_up(ch: Client, mig_dir: Path) -> None:
    cfg = ClickHouseConfig()
    before = apply_migrations(ch, cfg, mig_dir)
    (mig_dir / "0999_extra.sql").write_text(
        "-- a later engineer's migration\n"
        "CREATE TABLE IF NOT EXISTS extra_things\n(\n    t DateTime\n)\n"
        "ENGINE = MergeTree ORDER BY t\nTTL t + INTERVAL {ttl_anomalies_days} DAY;\n"
        "ALTER TABLE extra_things ADD COLUMN IF NOT EXISTS y String;\n"
    )
    assert migration_status(ch, mig_dir)[-1].state == "pending"
    assert apply_migrations(ch, cfg, mig_dir) == [999]
    assert "extra_things" in tables(ch)
    assert "y String" in create_sql(ch, "extra_things").replace("`", "")
    assert apply_migrations(ch, cfg, mig_dir) == []
    assert len(before) + 1 == ch.command("SELECT count() FROM schema_migrations")


def test_a_changed_applied_file_is_an_error(ch: Client, mig_dir: Path) -> None:
    apply_migrations(ch, ClickHouseConfig(), mig_dir)
    path = mig_dir / "0002_minute_counts.sql"
    path.write_text(path.read_text() + "\n-- an edit after the fact\n")
    with pytest.raises(MigrationError, match=r"0002_minute_counts\.sql was changed after"):
        apply_migrations(ch, ClickHouseConfig(), mig_dir)
    states = {s.version: s.state for s in migration_status(ch, mig_dir)}
    assert states[2] == "changed" and states[1] == "applied"


def test_a_failing_statement_names_the_file_and_records_nothing(ch: Client, mig_dir: Path) -> None:
    apply_migrations(ch, ClickHouseConfig(), mig_dir)
    (mig_dir / "0998_broken.sql").write_text("CREATE TABLE IF NOT EXISTS b (x Nope) ENGINE=Log;\n")
    with pytest.raises(MigrationError, match=r"0998_broken.sql, statement 1 of 1 failed"):
        apply_migrations(ch, ClickHouseConfig(), mig_dir)
    assert ch.command("SELECT count() FROM schema_migrations WHERE version = 998") == 0


def test_ttl_follows_the_config(ch: Client) -> None:
    apply_migrations(ch, ClickHouseConfig())
    assert "toIntervalDay(14)" in create_sql(ch, "sip_messages")
    assert "toIntervalDay(400)" in create_sql(ch, "sip_minute_counts")

    cfg = ClickHouseConfig(ttl=TtlConfig(messages_days=3, minute_counts_days=30))
    report = migrate(ch, cfg)
    assert report.applied == []
    assert sorted(report.ttl_changed) == ["sip_messages", "sip_minute_counts"]
    assert "TTL toDateTime(event_time) + toIntervalDay(3)" in create_sql(ch, "sip_messages")
    assert "TTL minute + toIntervalDay(30)" in create_sql(ch, "sip_minute_counts")
    assert "toIntervalDay(90)" in create_sql(ch, "dialogs")  # untouched
    assert migrate(ch, cfg).ttl_changed == []


# -- command line ------------------------------------------------------------------------------


def test_schema_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEPWATCH_CONFIG", raising=False)
    dsn = f"chdb://{tmp_path}/cli"
    runner = CliRunner()
    first = runner.invoke(cli, ["schema", "apply", "--clickhouse", dsn])
    assert first.exit_code == 0, first.output
    assert "applied 0001_core_tables" in first.output
    assert "applied 0002_minute_counts" in first.output
    again = runner.invoke(cli, ["schema", "apply", "--clickhouse", dsn])
    assert again.exit_code == 0, again.output
    assert "schema up to date" in again.output and "applied 0001" not in again.output

    monkeypatch.setenv("HEPWATCH_CLICKHOUSE__DSN", dsn)  # the default comes from settings
    monkeypatch.setenv("HEPWATCH_CLICKHOUSE__TTL__DIALOGS_DAYS", "5")
    ttl = runner.invoke(cli, ["schema", "apply"])
    assert ttl.exit_code == 0, ttl.output
    assert "TTL of dialogs changed" in ttl.output

    status = runner.invoke(cli, ["schema", "status"])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert re.match(r"0001\s+core_tables\s+applied\s+\d{4}-\d\d-\d\d", lines[0])
    assert len(lines) == len(load_migrations())

    bad = runner.invoke(cli, ["schema", "status", "--clickhouse", "ftp://x"])
    assert bad.exit_code != 0 and "unknown scheme 'ftp'" in bad.output

    sql = runner.invoke(cli, ["schema", "cluster-sql", "--cluster", "hep", "--database", "db1"])
    assert sql.exit_code == 0, sql.output
    assert "ENGINE = Distributed('hep', 'db1', sip_messages_local, cityHash64(call_id))" in (
        sql.output
    )
    no_cluster = runner.invoke(cli, ["schema", "cluster-sql"])
    assert no_cluster.exit_code != 0 and "no cluster name" in no_cluster.output


# -- cluster variant ---------------------------------------------------------------------------


def test_every_cluster_statement_parses_in_clickhouse(ch: Client) -> None:
    cfg = ClickHouseConfig(cluster="hep_cluster")
    statements = [s for _m, stmts in schema_sql(cfg, "hepwatch") for s in stmts]
    assert statements
    for stmt in statements:
        # ClickHouse's own parser: formatQuery raises on a syntax error
        formatted = ch.command("SELECT formatQuerySingleLine({q:String})", parameters={"q": stmt})
        assert "ON CLUSTER hep_cluster" in str(formatted), stmt
    with pytest.raises(Exception, match=r"SYNTAX_ERROR|Syntax error"):
        ch.command("SELECT formatQuery({q:String})", parameters={"q": "CREATE TABLE ( x"})


def test_cluster_tables_are_replicated_local_plus_distributed() -> None:
    cfg = ClickHouseConfig(cluster="c1")
    by_file = {m.version: stmts for m, stmts in schema_sql(cfg, "hw")}
    text = "\n".join(s for stmts in by_file.values() for s in stmts)
    for table in ("sip_messages", "session_changes", "dialogs", "anomalies"):
        assert f"CREATE TABLE IF NOT EXISTS {table}_local ON CLUSTER c1\n(" in text, table
        assert (
            f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{{database}}/"
            f"{table}_local', '{{replica}}')" in text
        )
        assert (
            f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER c1 AS {table}_local\n"
            f"ENGINE = Distributed('c1', 'hw', {table}_local, cityHash64(call_id))" in text
        )
    assert "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/" in text
    mv = next(s for s in by_file[2] if "MATERIALIZED VIEW" in s)
    assert "TO sip_minute_counts_local" in mv and "FROM sip_messages_local" in mv
    assert "src_ip AS peer" in mv  # the body is kept
    # the rest of each CREATE (columns, index, order, TTL) is kept on the local table
    local = next(s for s in by_file[1] if s.startswith("CREATE TABLE IF NOT EXISTS sip_messages_"))
    assert "INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1" in local
    assert "ORDER BY (method, status, node_name, event_time, id)" in local
    assert "TTL toDateTime(event_time) + INTERVAL 14 DAY" in local


def test_cluster_alters_drops_and_unknown_statements() -> None:
    known = {"sip_messages"}
    col = cluster_statements(["ALTER TABLE sip_messages ADD COLUMN x UInt8"], "c", "d", known)
    assert col == [
        "ALTER TABLE sip_messages_local ON CLUSTER c ADD COLUMN x UInt8",
        "ALTER TABLE sip_messages ON CLUSTER c ADD COLUMN x UInt8",
    ]
    ttl = cluster_statements(
        ["ALTER TABLE sip_messages MODIFY TTL toDateTime(event_time) + INTERVAL 1 DAY"],
        "c",
        "d",
        known,
    )
    assert ttl == [
        "ALTER TABLE sip_messages_local ON CLUSTER c MODIFY TTL "
        "toDateTime(event_time) + INTERVAL 1 DAY"
    ]
    drop = cluster_statements(["DROP TABLE IF EXISTS sip_messages"], "c", "d", known)
    assert drop == [
        "DROP TABLE IF EXISTS sip_messages ON CLUSTER c",
        "DROP TABLE IF EXISTS sip_messages_local ON CLUSTER c",
    ]
    with pytest.raises(ClusterSqlError, match="no cluster form"):
        cluster_statements(["INSERT INTO sip_messages SELECT 1"], "c", "d", known)
    with pytest.raises(ClusterSqlError, match="MergeTree-family"):
        cluster_statements(["CREATE TABLE m (x UInt8) ENGINE = Memory"], "c", "d")
