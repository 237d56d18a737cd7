"""`hepwatch schema`: apply the ClickHouse migrations, show their state, print the cluster DDL."""

from __future__ import annotations

import click

from consumers.clickhouse.client import ClickHouseDsnError, Client, connect, describe_dsn
from consumers.clickhouse.migrations import MigrationError, migrate, migration_status, schema_sql
from hepwatch.config import Settings

_DSN_HELP = "ClickHouse DSN: chdb:///path or http(s)://host:port/db (default clickhouse.dsn)."


def _load(ctx: click.Context, overrides: dict) -> Settings:
    from hepwatch.cli import _settings  # the group's loader (cli.py registers this module)

    return _settings(ctx, overrides)


def _client(dsn: str) -> Client:
    try:
        return connect(dsn)
    except ClickHouseDsnError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def schema() -> None:
    """ClickHouse schema: migrations in schemas/migrations, versions in schema_migrations."""


@schema.command("apply")
@click.option("--clickhouse", "dsn", metavar="DSN", help=_DSN_HELP)
@click.option(
    "--cluster",
    metavar="NAME",
    help="Create the cluster variant ON CLUSTER NAME (Replicated + Distributed tables).",
)
@click.pass_context
def apply_cmd(ctx: click.Context, dsn: str | None, cluster: str | None) -> None:
    """Apply pending migrations and bring table TTLs in line with clickhouse.ttl."""
    settings = _load(ctx, {"clickhouse": {"dsn": dsn, "cluster": cluster}})
    cfg = settings.clickhouse
    client = _client(cfg.dsn)
    try:
        report = migrate(client, cfg)
        versions = [s.version for s in migration_status(client) if s.state == "applied"]
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    names = dict(_names())
    target = describe_dsn(cfg.dsn) + (f" (cluster {cfg.cluster})" if cfg.cluster else "")
    for version in report.applied:
        click.echo(f"applied {version:04d}_{names.get(version, '?')}")
    for table in report.ttl_changed:
        click.echo(f"TTL of {table} changed to the configured retention")
    if not report.applied and not report.ttl_changed:
        latest = f"{max(versions):04d}" if versions else "none"
        click.echo(f"{target}: schema up to date (latest version {latest})")
    else:
        click.echo(f"{target}: {len(report.applied)} migration(s) applied")


@schema.command("status")
@click.option("--clickhouse", "dsn", metavar="DSN", help=_DSN_HELP)
@click.pass_context
def status_cmd(ctx: click.Context, dsn: str | None) -> None:
    """List every migration: applied (with its time), pending, changed or missing."""
    settings = _load(ctx, {"clickhouse": {"dsn": dsn}})
    client = _client(settings.clickhouse.dsn)
    try:
        states = migration_status(client)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    for s in states:
        when = s.applied_at.strftime("%Y-%m-%d %H:%M:%S") if s.applied_at else ""
        click.echo(f"{s.version:04d}  {s.name:<28} {s.state:<8} {when}".rstrip())


@schema.command("cluster-sql")
@click.option("--cluster", metavar="NAME", help="Cluster name (default clickhouse.cluster).")
@click.option("--database", default="default", show_default=True, help="Database of the tables.")
@click.pass_context
def cluster_sql_cmd(ctx: click.Context, cluster: str | None, database: str) -> None:
    """Print the cluster variant of every migration (what `apply --cluster` sends)."""
    settings = _load(ctx, {"clickhouse": {"cluster": cluster}})
    cfg = settings.clickhouse
    if not cfg.cluster:
        raise click.ClickException("no cluster name: pass --cluster NAME or set clickhouse.cluster")
    try:
        migrations = schema_sql(cfg, database)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    for mig, statements in migrations:
        click.echo(f"-- {mig.filename}")
        for stmt in statements:
            click.echo(stmt + ";\n")


def _names() -> list[tuple[int, str]]:
    from consumers.clickhouse.migrations import load_migrations

    return [(m.version, m.name) for m in load_migrations()]
