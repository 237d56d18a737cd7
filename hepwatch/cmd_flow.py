"""`hepwatch flow CALL-ID`: the ladder of a stored call and its other legs, in the terminal
or as a standalone HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from hepwatch.cmd_sql import open_target, target_options


@click.command("flow")
@click.argument("call_id")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write the ladder as a standalone HTML page (inline SVG) to FILE.",
)
@click.option(
    "--legs/--no-legs",
    default=True,
    show_default=True,
    help="Include the other legs (X-CID, Session-ID, icid, HEP correlation id, C.12 pairs).",
)
@click.option(
    "--window",
    "window_minutes",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="Minutes around the call searched for its other legs.",
)
@target_options
def flow(
    call_id: str,
    html_path: Path | None,
    legs: bool,
    window_minutes: int,
    dsn: str | None,
    server: str | None,
    user: str | None,
    password: str | None,
) -> None:
    """Draw the ladder of CALL-ID: every leg, message and captured copy, anomalies marked."""
    from consumers.history.flow import CallNotFound, load_call
    from consumers.history.flow_render import html_page, terminal_lines
    from consumers.history.query import QueryError

    client = open_target(dsn, server, user, password)
    try:
        call = load_call(client, call_id, legs=legs, window_minutes=window_minutes)
    except CallNotFound:
        click.echo(f"Error: no call with Call-ID {call_id!r} in the history", err=True)
        raise SystemExit(1) from None
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    for line in terminal_lines(call):
        click.echo(line)
    if html_path is not None:
        try:
            html_path.write_text(html_page(call), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"{html_path}: {exc.strerror or exc}") from exc
        click.echo(f"HTML written to {html_path}")
