"""The `hepwatch` command line.

Each command reads the configuration (TOML file, then environment, then its flags) and
runs one service or tool. Flags that are not given leave the file and environment alone.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hepwatch import __version__

if TYPE_CHECKING:
    from hepwatch.config import Settings

# `hepwatch analyze` starts in a fraction of a second: pydantic (the settings) and the
# commands' own dependencies (clickhouse-connect, confluent-kafka) load only when used.

# `analyze` is one run over a file, then the process ends. The engine leaves every finished
# call as cyclic garbage (~1 KB per packet); freeing it costs about as much as a third of the
# analysis (0.5 s of 1.7 s for 2000 calls), and the OS takes the memory back at exit anyway.
# So the cycle collector runs after a million new objects (~100 MB of garbage at most) rather
# than 100k, and main() freezes what is left before the interpreter's last collection.
ANALYZE_GC_GEN0 = 1_000_000
# Idle established calls are frozen (consumers/tracking/freezer.py) only above this many held
# calls: up to ~50 MB of call state, where freezing would spend ~0.3 ms per call.
ANALYZE_UNFROZEN_CALLS = 10_000
_collect_at_exit = True


def _setup_logging(level: str) -> None:
    import logging  # not at the top: `analyze` does without it (~6 ms of start-up)

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _LazyGroup(click.Group):
    """A click group whose commands may be registered as "module:attribute" and imported
    only when run (or listed by --help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str) -> None:
        self.lazy_commands[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module, _, attr = target.partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


def _settings(ctx: click.Context, overrides: dict[str, Any]) -> Settings:
    from hepwatch.config import config_file, load_settings

    path = config_file(ctx.obj.get("config"))
    try:
        settings = load_settings(path, _drop_none(overrides))
    except Exception as exc:  # pydantic ValidationError, bad TOML, missing file
        raise click.ClickException(f"configuration: {exc}") from exc
    _setup_logging(ctx.obj.get("log_level") or settings.log.level)
    return settings


# The [consumer] and [log] defaults of hepwatch.config, for `analyze` runs that have no
# configuration at all (tests/test_cli_startup.py keeps them equal to the settings model).
ANALYZE_DEFAULTS = {"reorder_window_ms": 300, "dedup_window_ms": 1000, "t1_ms": 500}
LOG_LEVEL_DEFAULT = "INFO"


def _unconfigured(ctx: click.Context) -> bool:
    """No config file (flag, HEPWATCH_CONFIG, ./hepwatch.toml) and no HEPWATCH_* variable:
    the settings are the defaults, and pydantic need not be loaded to know them."""
    if ctx.obj.get("config") or Path("hepwatch.toml").is_file():
        return False
    return not any(name.upper().startswith("HEPWATCH_") for name in os.environ)


def _consumer_settings(ctx: click.Context) -> dict[str, int]:
    if _unconfigured(ctx):
        _setup_logging(ctx.obj.get("log_level") or LOG_LEVEL_DEFAULT)
        return dict(ANALYZE_DEFAULTS)
    consumer = _settings(ctx, {}).consumer
    return {name: getattr(consumer, name) for name in ANALYZE_DEFAULTS}


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value not in (None, ()):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="hepwatch")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (default: $HEPWATCH_CONFIG, else ./hepwatch.toml if present).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Override log.level.",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_level: str | None) -> None:
    """hepwatch: SIP capture for Kamailio clusters.

    Kamailio mirrors every SIP message as HEP; hepwatch collects it into Kafka, follows
    every dialog and flags session-modification failures (491 glare, 405 to UPDATE, 481
    in early dialogs, missed session-timer refreshes).

    Settings come from a TOML file, HEPWATCH_<SECTION>__<KEY> environment variables, and
    the flags of each command, in rising precedence. `hepwatch config` prints the result.
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["log_level"] = log_level


@cli.command()
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="URL",
    help="udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT; repeatable "
    "(default udp and tcp on 0.0.0.0:9060).",
)
@click.option(
    "--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers (default 127.0.0.1:9092)."
)
@click.option("--topic", help="Kafka topic (default hepwatch.hep).")
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Disk spool used while Kafka is unreachable (default var/spool).",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve /metrics, /healthz and /readyz here (default 127.0.0.1:9096).",
)
@click.option("--node-name", help="Collector node name put in every record (default: hostname).")
@click.pass_context
def collect(
    ctx: click.Context,
    listen: tuple[str, ...],
    kafka: str | None,
    topic: str | None,
    spool_dir: Path | None,
    metrics: str | None,
    node_name: str | None,
) -> None:
    """Receive HEP v1/v2/v3 over UDP, TCP and TLS and publish it to Kafka.

    Every accepted packet reaches Kafka as HEPv3 keyed by its SIP Call-ID, or waits in the
    disk spool while the broker is unreachable; SIGTERM flushes everything accepted.
    """
    from collector.service import CollectorService

    settings = _settings(
        ctx,
        {
            "collector": {"listen": listen, "node_name": node_name},
            "kafka": {"bootstrap": kafka, "topic": topic},
            "spool": {"dir": spool_dir},
            "metrics": {"listen": metrics},
        },
    )
    service = CollectorService(settings)
    try:
        import asyncio

        asyncio.run(service.run_until_signalled())
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to_url",
    required=True,
    metavar="URL",
    help="Collector address: udp://HOST:PORT or tcp://HOST:PORT.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Packets per second (default: as fast as possible).",
)
@click.option(
    "--loop",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Send the capture this many times.",
)
@click.option(
    "--capture-id",
    type=click.IntRange(min=0, max=2**32 - 1),
    default=0,
    show_default=True,
    help="Capture id for plain SIP packets wrapped as HEPv3.",
)
@click.pass_context
def replay(
    ctx: click.Context, file: Path, to_url: str, rate: float | None, loop: int, capture_id: int
) -> None:
    """Send a pcap or pcapng capture to a collector.

    HEP packets inside the capture are sent as they are; plain SIP packets are wrapped as
    HEPv3 with their addresses, ports and capture times.
    """
    from collector import replay as replay_mod

    _setup_logging(ctx.obj.get("log_level") or "INFO")
    try:
        result = replay_mod.replay(file, to_url, rate=rate, loop=loop, capture_id=capture_id)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(result))


@cli.command()
@click.option("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers.")
@click.option("--topic", help="Kafka topic of HEP records (default hepwatch.hep).")
@click.option("--group", help="Consumer group (default hepwatch-consumers).")
@click.option(
    "--sink",
    metavar="jsonl:DIR|clickhouse:DSN",
    help="Where records go: jsonl:DIR, one JSON-lines file per partition, or clickhouse:DSN "
    "(chdb:///path or http(s)://host:8123/db), migrated at start.",
)
@click.option("--clickhouse", metavar="DSN", help="Shorthand for --sink clickhouse:DSN.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Partition checkpoints; shared by every replica of the group (default var/state).",
)
@click.option("--metrics", metavar="HOST:PORT", help="Serve /metrics, /healthz, /readyz here.")
@click.option(
    "--no-legs-stage",
    is_flag=True,
    help="Do not run the cross-leg (C.12) stage in this process; run `hepwatch legs`.",
)
@click.pass_context
def consume(
    ctx: click.Context,
    kafka: str | None,
    topic: str | None,
    group: str | None,
    sink: str | None,
    clickhouse: str | None,
    state_dir: Path | None,
    metrics: str | None,
    no_legs_stage: bool,
) -> None:
    """Follow every dialog in the HEP topic and write messages, session changes, dialogs
    and anomalies to the sink.

    Partitions are checkpointed with their offsets, so a restart or a rebalance resumes
    the calls in flight; records are written once even when Kafka redelivers. While
    ClickHouse is unavailable the consumer pauses (it stays in its group, lag grows) and
    retries; nothing is lost.
    """
    from consumers.service import run_service

    if clickhouse is not None:
        if sink is not None:
            raise click.UsageError("give --sink or --clickhouse, not both")
        sink = f"clickhouse:{clickhouse}"

    settings = _settings(
        ctx,
        {
            "kafka": {"bootstrap": kafka, "topic": topic},
            "consumer": {
                "group": group,
                "sink": sink,
                "state_dir": state_dir,
                "metrics_listen": metrics,
                "legs_stage": False if no_legs_stage else None,
            },
        },
    )
    try:
        run_service(settings)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the effective configuration (file, environment and defaults) as JSON; keys masked."""
    import json

    settings = _settings(ctx, {})
    data = json.loads(settings.model_dump_json())
    data["auth"]["keys"] = dict.fromkeys(data["auth"]["keys"], "***")
    click.echo(json.dumps(data, indent=2))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--json",
    "json_out",
    is_flag=True,
    help="Print one JSON object: dialogs, session_changes, anomalies, messages, stats.",
)
@click.option(
    "--jsonl",
    "jsonl_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write every record (messages included) to PATH, one JSON object per line.",
)
@click.option("--no-ladder", is_flag=True, help="Text report without the ladder diagrams.")
@click.pass_context
def analyze(
    ctx: click.Context, file: Path, json_out: bool, jsonl_path: Path | None, no_ladder: bool
) -> None:
    """Analyze a pcap or pcapng capture offline: every dialog, its session changes and
    its anomalies, with a ladder diagram of every call.

    The capture may hold HEP packets (between Kamailio and a collector), plain SIP, or
    both. The [consumer] settings (reorder and dedup windows, T1) apply as in `consume`.
    """
    from consumers.analyze import analyze as run_analysis
    from consumers.analyze import report_lines
    from consumers.capture import CaptureError
    from consumers.engine import EngineConfig
    from consumers.sinks import JsonLinesSink
    from consumers.tracking.tracker import TrackerConfig

    global _collect_at_exit
    consumer = _consumer_settings(ctx)
    # As consumers.runtime.tune_gc (what start-up made is never scanned again; rare older
    # collections), without its first full collection: start-up garbage is not worth 4 ms
    # in a process this short.
    gc.freeze()
    gc.set_threshold(ANALYZE_GC_GEN0, 50, 100)
    _collect_at_exit = False
    # Message records feed the ladders and --jsonl; --json alone only counts messages.
    messages = not json_out or jsonl_path is not None
    config = EngineConfig(
        reorder_window_ms=consumer["reorder_window_ms"],
        dedup_window_ms=consumer["dedup_window_ms"],
        tracker=TrackerConfig(t1_ms=consumer["t1_ms"], freeze_above=ANALYZE_UNFROZEN_CALLS),
        emit_messages=messages,
        keep_raw=messages,
    )
    sink = None
    try:
        if jsonl_path is not None:
            sink = JsonLinesSink(jsonl_path, append=False)
        result = run_analysis(file, config=config, on_records=sink.write if sink else None)
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or file}: {exc.strerror or exc}") from exc
    finally:
        if sink is not None:
            sink.close()
    if json_out:
        import orjson  # ~10x json.dumps on the ~1 MB of a 400-call capture; UTF-8 as is

        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_NON_STR_KEYS))
        return
    chunk: list[str] = []  # echoed a few hundred lines at a time: one write and flush each
    for line in report_lines(result, ladders=not no_ladder):
        chunk.append(line)
        if len(chunk) == 500:
            click.echo("\n".join(chunk))
            chunk = []
    if chunk:
        click.echo("\n".join(chunk))


cli.add_lazy_command("sql", "hepwatch.cmd_sql:sql")  # type: ignore[attr-defined]
cli.add_lazy_command("flow", "hepwatch.cmd_flow:flow")  # type: ignore[attr-defined]


cli.add_lazy_command("legs", "hepwatch.cmd_legs:legs")  # type: ignore[attr-defined]


cli.add_lazy_command("schema", "hepwatch.cmd_schema:schema")  # type: ignore[attr-defined]


cli.add_lazy_command("alerts", "hepwatch.cmd_alerts:alerts")  # type: ignore[attr-defined]


cli.add_lazy_command("run", "hepwatch.cmd_run:run")  # type: ignore[attr-defined]


def main() -> None:
    try:
        cli(prog_name="hepwatch")
    finally:
        if not _collect_at_exit:
            gc.freeze()  # the process ends: the OS frees the garbage, not a last collection


if __name__ == "__main__":
    main()
