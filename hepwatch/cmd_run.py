"""`hepwatch run`: the click command around `hepwatch.run.RunService`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from consumers.clickhouse.client import ClickHouseDsnError


@click.command("run")
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="URL",
    help="HEP listener: udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT; repeatable "
    "(default udp and tcp on 0.0.0.0:9060).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="chDB data (clickhouse/) and engine checkpoints (state/) (default var/hepwatch).",
)
@click.option(
    "--query-http",
    metavar="HOST:PORT",
    help="Serve the read-only ClickHouse HTTP query endpoint here (default 127.0.0.1:8123; "
    "'' turns it off).",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve /metrics, /healthz and /readyz here (default 127.0.0.1:9096; '' turns it off).",
)
@click.option(
    "--alerts",
    "alerts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Alert rules (YAML; default: the shipped rules).",
)
@click.pass_context
def run(
    ctx: click.Context,
    listen: tuple[str, ...],
    data_dir: Path | None,
    query_http: str | None,
    metrics: str | None,
    alerts_file: Path | None,
) -> None:
    """Everything in one process: HEP listeners, analysis, chDB, query endpoint, alerts.

    HEP from Kamailio goes through an in-process queue to the analysis engine and into the
    embedded ClickHouse engine (chDB) in the data directory. The read-only query endpoint
    speaks ClickHouse's HTTP interface, so `hepwatch sql --server`, clickhouse-connect and
    Grafana can query the live data. SIGTERM or Ctrl-C stores everything received and
    checkpoints the calls in flight; the next start continues them.
    """
    from hepwatch.cli import _settings
    from hepwatch.run import RunService, banner

    overrides: dict[str, object] = {
        "run": {"listen": listen, "data_dir": data_dir},
        "metrics": {"listen": metrics},
        "query_http": {"listen": query_http},
        "alerts": {"rules": alerts_file},
    }
    settings = _settings(ctx, overrides)  # '' stays: it turns an endpoint off
    service = RunService(settings)

    def ready(svc: RunService) -> None:
        for line in banner(svc):
            click.echo(line)

    try:
        asyncio.run(service.run_until_signalled(ready))
    except (OSError, ValueError, ClickHouseDsnError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
