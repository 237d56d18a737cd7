"""`hepwatch alerts`: the alert evaluator as a service, and `hepwatch alerts check`, which
prints the rules, their current values and the alert state without changing anything."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_DSN_HELP = (
    "ClickHouse DSN: chdb:///path or http(s)://host:port/db (default clickhouse.dsn). "
    "While `hepwatch run` holds its chDB directory, point at its query endpoint instead."
)


def _target_options(func: F) -> F:
    options = [
        click.option("--clickhouse", "dsn", metavar="DSN", help=_DSN_HELP),
        click.option(
            "--rules",
            type=click.Path(dir_okay=False, path_type=Path),
            help="YAML rules file (default alerts.rules, else the shipped deploy/alerts.yaml).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(ctx: click.Context, overrides: dict[str, Any]) -> Any:
    from hepwatch.cli import _settings  # the group's loader (cli.py registers this module)

    return _settings(ctx, overrides)


def _rules(path: Path | None) -> list[Any]:
    from consumers.alerts.rules import RulesError, load_rules

    try:
        return load_rules(path)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from exc


def _client(dsn: str) -> Any:
    from consumers.clickhouse.client import ClickHouseDsnError, connect

    try:
        return connect(dsn)
    except ClickHouseDsnError as exc:
        raise click.ClickException(str(exc)) from exc


def _query_url(settings: Any, explicit: str | None) -> str:
    if explicit:
        return explicit
    listen = settings.query_http.listen or "127.0.0.1:8123"
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{host}:{port}"


@click.group("alerts", invoke_without_command=True)
@_target_options
@click.option(
    "--alertmanager",
    metavar="URL",
    help="Alertmanager base URL (v2 API), e.g. http://127.0.0.1:9093.",
)
@click.option("--webhook", metavar="URL", help="POST each firing and resolution here as JSON.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between evaluations (default alerts.interval_s, 15).",
)
@click.option(
    "--resend",
    type=click.FloatRange(min=1),
    help="Seconds between re-sends of a firing alert to Alertmanager "
    "(default alerts.resend_interval_s, 60).",
)
@click.option(
    "--query-url",
    metavar="URL",
    help="Base of the alerts' generatorURL links (default: the query endpoint, query_http.listen).",
)
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus /metrics here.")
@click.option(
    "--clock",
    type=click.Choice(["wall", "data"]),
    help="Evaluate at the wall clock, or at the time of the newest data (moving on with the "
    "wall clock after it): for captures replayed with their original times "
    "(default alerts.clock, wall).",
)
@click.pass_context
def alerts(
    ctx: click.Context,
    dsn: str | None,
    rules: Path | None,
    alertmanager: str | None,
    webhook: str | None,
    interval: float | None,
    resend: float | None,
    query_url: str | None,
    metrics: str | None,
    clock: str | None,
) -> None:
    """Evaluate the alert rules every interval against ClickHouse and notify Alertmanager,
    a webhook and the log; `hepwatch alerts check` shows the state.

    The alert state lives in ClickHouse (alert_state, alert_history), so a restart neither
    re-sends what was delivered nor forgets what was pending. SIGTERM stops it cleanly.
    """
    ctx.ensure_object(dict)
    ctx.obj["alerts_target"] = (dsn, rules)
    if ctx.invoked_subcommand is not None:
        return
    settings = _load(
        ctx,
        {
            "clickhouse": {"dsn": dsn},
            "alerts": {
                "rules": rules,
                "alertmanager_url": alertmanager,
                "webhook_url": webhook,
                "interval_s": interval,
                "resend_interval_s": resend,
                "clock": clock,
            },
        },
    )
    from consumers.alerts.service import AlertEvaluator
    from consumers.clickhouse.client import describe_dsn
    from consumers.clickhouse.migrations import MigrationError, apply_migrations

    rule_list = _rules(settings.alerts.rules)
    client = _client(settings.clickhouse.dsn)
    try:
        apply_migrations(client, settings.clickhouse)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    evaluator = AlertEvaluator(
        client,
        settings.alerts,
        rule_list,
        query_url=_query_url(settings, query_url),
    )
    if metrics:
        from prometheus_client import start_http_server

        from hepwatch.config import parse_host_port

        host, port = parse_host_port(metrics)
        start_http_server(port, host, registry=evaluator.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    notifiers = ", ".join(n.name for n in evaluator.notifiers) or "none"
    click.echo(
        f"alerts: {len(rule_list)} rules against {describe_dsn(settings.clickhouse.dsn)} "
        f"every {settings.alerts.interval_s:g}s; notifiers: {notifiers}",
        err=True,
    )
    try:
        evaluator.run(stop)
    finally:
        client.close()


def _parse_at(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: epoch seconds or an ISO time") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


@alerts.command("check")
@_target_options
@click.option(
    "--at", "at", metavar="TIME", help="Evaluate at this time (ISO or epoch; default now)."
)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
@click.pass_context
def check(
    ctx: click.Context, dsn: str | None, rules: Path | None, at: str | None, json_out: bool
) -> None:
    """Print the rules, each group's current value against its limit, the stored alert
    states and the latest transitions. Reads only."""
    parent_dsn, parent_rules = ctx.obj.get("alerts_target", (None, None))
    settings = _load(
        ctx, {"clickhouse": {"dsn": dsn or parent_dsn}, "alerts": {"rules": rules or parent_rules}}
    )
    from consumers.alerts.service import AlertEvaluator

    now = None if at == "data" else _parse_at(at)
    rule_list = _rules(settings.alerts.rules)
    client = _client(settings.clickhouse.dsn)
    try:
        evaluator = AlertEvaluator(
            client,
            settings.alerts,
            rule_list,
            notifiers=[],
            clock="data" if at == "data" else "wall",
        )
        if not evaluator.store.has_tables():
            raise click.ClickException(
                "no alert tables in this database: run `hepwatch schema apply` or the service"
            )
        views = evaluator.preview(now)
        history = evaluator.store.history(limit=10)
    except click.ClickException:
        raise
    except Exception as exc:  # the server's or the engine's error, shown as it is
        raise click.ClickException(f"alerts check: {exc}") from exc
    finally:
        client.close()

    if json_out:
        out = {
            "rules": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "condition": r.describe(),
                    "severity": r.severity,
                    "groups": [
                        {
                            "labels": v.labels,
                            "value": v.value,
                            "baseline": v.baseline,
                            "limit": v.limit,
                            "holds": v.holds,
                            "state": v.state,
                            "since": _when(v.since) or None,
                        }
                        for v in views[r.name]
                    ],
                }
                for r in rule_list
            ],
            "history": [
                {
                    "time": h["time"].isoformat(),
                    "rule": h["rule"],
                    "labels": dict(h["labels"]),
                    "from": h["from_state"],
                    "to": h["to_state"],
                    "value": h["value"],
                }
                for h in history
            ],
        }
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for r in rule_list:
        click.echo(f"{r.name} [{r.kind}, {r.severity}]: {r.describe()}")
        groups = views[r.name]
        if not groups:
            click.echo("    no matching messages in the window")
        for v in groups:
            group = ", ".join(f"{k}={val}" for k, val in sorted(v.labels.items())) or "(all)"
            mark = "HOLDS" if v.holds else "ok"
            base = f" baseline {_num(v.baseline)}" if r.kind == "spike" else ""
            since = f" since {_when(v.since)}" if v.since and v.state != "inactive" else ""
            click.echo(
                f"    {group}: {_num(v.value)} (limit {_num(v.limit)}{base}) {mark}; "
                f"{v.state}{since}"
            )
    if history:
        click.echo("recent transitions:")
        for h in history:
            group = ", ".join(f"{k}={val}" for k, val in sorted(dict(h["labels"]).items()))
            click.echo(
                f"    {h['time']:%Y-%m-%d %H:%M:%S} {h['rule']} {group} "
                f"{h['from_state']} -> {h['to_state']} ({_num(h['value'])})"
            )
