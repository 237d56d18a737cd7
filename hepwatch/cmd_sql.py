"""`hepwatch sql`: one query, or a saved one, against ClickHouse or the running instance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from consumers.history.query import DEFAULT_SERVER, FORMATS, QueryError

F = TypeVar("F", bound=Callable[..., Any])


def target_options(func: F) -> F:
    """--clickhouse / --server / --user / --password, shared with `hepwatch flow`."""
    options = [
        click.option(
            "--clickhouse",
            "dsn",
            metavar="DSN",
            help="chdb:///PATH (the embedded engine's data directory) or http(s)://HOST:PORT/DB.",
        ),
        click.option(
            "--server",
            metavar="URL",
            help=f"A ClickHouse HTTP endpoint, e.g. the query endpoint of `hepwatch run` "
            f"(default {DEFAULT_SERVER}).",
        ),
        click.option("--user", envvar="HEPWATCH_SQL_USER", help="User (env HEPWATCH_SQL_USER)."),
        click.option(
            "--password",
            envvar="HEPWATCH_SQL_PASSWORD",
            help="Password (env HEPWATCH_SQL_PASSWORD).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_target(dsn: str | None, server: str | None, user: str | None, password: str | None):
    """The client for the chosen target (a DSN wins over --server; default: the server)."""
    from consumers.history.query import connect

    if dsn and server:
        raise click.UsageError("give --clickhouse or --server, not both")
    # The driver logs a warning for a failure that the error message below reports anyway.
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)
    try:
        return connect(dsn or server or DEFAULT_SERVER, user=user, password=password)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("sql")
@click.argument("query", required=False)
@click.option("--saved", "saved_name", metavar="NAME", help="Run a saved query (see --list).")
@click.option("--list", "list_saved", is_flag=True, help="List the saved queries and exit.")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind a {NAME:Type} placeholder (repeatable); bound by the server, never spliced.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table (vertical when too wide), vertical, csv, or json (an array of objects).",
)
@click.option(
    "--queries-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Saved-query directory (default schemas/queries, or $HEPWATCH_QUERIES_DIR).",
)
@target_options
def sql(
    query: str | None,
    saved_name: str | None,
    list_saved: bool,
    params: tuple[str, ...],
    fmt: str,
    queries_dir: Path | None,
    dsn: str | None,
    server: str | None,
    user: str | None,
    password: str | None,
) -> None:
    """Run QUERY (or --saved NAME) and print the result.

    Parameters are ClickHouse placeholders: `hepwatch sql "SELECT count() FROM anomalies
    WHERE anomaly = {name:String}" --param name=glare_491`.
    """
    from consumers.history import saved
    from consumers.history.query import bind, format_result, parse_params, run

    try:
        if list_saved:
            for line in saved.listing(saved.catalogue(queries_dir)):
                click.echo(line)
            return
        if (query is None) == (saved_name is None):
            raise click.UsageError("give a QUERY or --saved NAME (one of them)")
        defaults: dict[str, str | None] | None = None
        if saved_name is not None:
            entry = saved.find(saved_name, queries_dir)
            query, defaults = entry.sql, entry.defaults()
        assert query is not None
        values = bind(query, parse_params(params), defaults)
        client = open_target(dsn, server, user, password)
        try:
            result = run(client, query, values)
        finally:
            client.close()
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_result(result, fmt))
