"""The deploy kit (deploy/): docker compose stack, hepwatch image, Grafana, Alertmanager,
ClickHouse users and the Kamailio siptrace snippet.

`docker compose config` is not available here, so the compose file is checked in Python:
services, images, ports, volumes, health checks and start order; every hepwatch command
line in it is parsed by the real click command (so a flag that does not exist fails) and
the TOML config it mounts is loaded with the environment compose gives it. The Grafana
dashboard's SQL runs against the real embedded ClickHouse (chDB, in a subprocess because
chDB opens one data directory per process) with the project's migrations applied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
MIGRATIONS = ROOT / "schemas" / "migrations"

HEPWATCH_IMAGE = "hepwatch:local"
EXPECTED_SERVICES = {
    "kafka",
    "kafka-init",
    "clickhouse",
    "schema",
    "collect",
    "consume",
    "alerts",
    "alertmanager",
    "grafana",
    "kamailio",
}
# What each hepwatch service runs: its subcommand path and the flags it must pass.
HEPWATCH_COMMANDS = {
    "schema": (("schema", "apply"), {"--clickhouse"}),
    "collect": (("collect",), {"--listen", "--kafka", "--topic", "--node-name"}),
    "consume": (
        ("consume",),
        {"--kafka", "--topic", "--group", "--sink", "--state-dir", "--metrics"},
    ),
    "alerts": (("alerts",), {"--clickhouse", "--rules", "--alertmanager"}),
}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_]\w*)")


# ---------------------------------------------------------------- compose helpers


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$.

    Every variable the kit uses must have a default, so the stack starts without a .env.
    """
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if name in env:
            return env[name]
        if m.group(2) is None:
            raise AssertionError(f"${{{name}}} has no default in docker-compose.yml")
        return m.group(3)

    return _VAR.sub(repl, value)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file with defaults interpolated (as `docker compose` would, no .env)."""
    return interpolate(raw_compose)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry (short syntax)."""
    out = []
    for entry in service.get("volumes") or []:
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        parts = entry.split(":")
        assert len(parts) in (2, 3), f"volume {entry!r}: expected SOURCE:TARGET[:ro]"
        out.append((parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"))
    return out


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The file under deploy/ a bind mount puts at `container_path`."""
    best: tuple[str, str] | None = None
    for source, target, _ro in mounts(service):
        if not source.startswith("."):
            continue
        if (container_path == target or container_path.startswith(target.rstrip("/") + "/")) and (
            best is None or len(target) > len(best[1])
        ):
            best = (source, target)
    assert best is not None, f"{container_path} is not bind-mounted"
    source, target = best
    return (DEPLOY / source / os.path.relpath(container_path, target)).resolve()


def published(service: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(host_ip, host_port, container_port, proto) of each published port."""
    out = []
    for entry in service.get("ports") or []:
        spec, _, proto = str(entry).partition("/")
        parts = spec.split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        host, container = (parts[-2], parts[-1]) if len(parts) >= 2 else (parts[0], parts[0])
        out.append((ip, int(host), int(container), proto or "tcp"))
    return out


def hepwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(compose).items() if s.get("image") == HEPWATCH_IMAGE}


def option_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def option_value(args: list[str], flag: str) -> str:
    values = option_values(args, flag)
    assert len(values) == 1, f"{flag} given {len(values)} times in {args}"
    return values[0]


# ---------------------------------------------------------------- services and images


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == EXPECTED_SERVICES
    assert set(hepwatch_services(compose)) == set(HEPWATCH_COMMANDS)


def test_images_are_pinned_or_built_here(compose: dict[str, Any]) -> None:
    expected = {
        "kafka": "apache/kafka:",
        "kafka-init": "apache/kafka:",
        "clickhouse": "clickhouse/clickhouse-server:",
        "alertmanager": "prom/alertmanager:",
        "grafana": "grafana/grafana:",
    }
    for name, service in services(compose).items():
        image = service.get("image")
        assert image, f"{name}: no image"
        if "build" in service:
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            assert image.endswith(":local"), f"{name}: a locally built image is tagged :local"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin the image tag ({image})"
        assert image.startswith(expected[name]), f"{name}: {image}"


def test_hepwatch_image_is_built_from_the_repository(compose: dict[str, Any]) -> None:
    for name, service in hepwatch_services(compose).items():
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT, name
        assert build["dockerfile"] == "deploy/Dockerfile", name
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["hepwatch"\]', text, re.M), "entrypoint is the CLI"
    # Everything the Dockerfile copies exists, including what the services read at run
    # time relative to the checkout (migrations, default alert rules).
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    for needed in ("schemas", "deploy", "collector", "consumers", "hepwatch"):
        assert re.search(rf"^COPY {needed} ", text, re.M), f"image lacks {needed}/"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**/.venv" in ignore and "var" in ignore


def test_kafka_runs_kraft_single_node(compose: dict[str, Any]) -> None:
    kafka = services(compose)["kafka"]
    env = env_of(kafka)
    assert not any("ZOOKEEPER" in k for k in env), "KRaft mode: no ZooKeeper"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{node_id}@kafka:9093"]
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert len(env["CLUSTER_ID"]) == 22, "KRaft cluster id: 16 bytes, base64url, 22 chars"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key}: one broker"
    assert (
        "kafka-data",
        env["KAFKA_LOG_DIRS"],
        False,
    ) in mounts(kafka), "Kafka's log dir must be the named volume"


def test_topic_is_created_with_enough_partitions(compose: dict[str, Any]) -> None:
    svc = services(compose)
    init = svc["kafka-init"]
    assert init["entrypoint"] == ["/opt/kafka/bin/kafka-topics.sh"]
    args = [str(a) for a in init["command"]]
    assert "--create" in args and "--if-not-exists" in args
    topic = option_value(args, "--topic")
    partitions = int(option_value(args, "--partitions"))
    for name in ("collect", "consume"):
        assert option_value([str(a) for a in svc[name]["command"]], "--topic") == topic
    assert partitions >= svc["consume"]["deploy"]["replicas"]
    assert env_of(svc["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    bootstrap = option_value(args, "--bootstrap-server")
    for name in ("collect", "consume"):
        assert option_value([str(a) for a in svc[name]["command"]], "--kafka") == bootstrap


# ---------------------------------------------------------------- start order and health


def test_depends_on_conditions_and_healthchecks(compose: dict[str, Any]) -> None:
    svc = services(compose)
    one_shots = {"kafka-init", "schema"}
    for name, service in svc.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in svc, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if dep in one_shots:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}"
                test = svc[dep].get("healthcheck", {}).get("test")
                assert test and test[0] in ("CMD", "CMD-SHELL"), f"{dep}: no healthcheck"
    for name in one_shots:
        assert svc[name]["restart"] == "no", f"{name} runs once"
    for name, service in svc.items():
        if name not in one_shots:
            assert service["restart"] == "unless-stopped", name
    # Start order: the topic and the schema exist before anything uses them.
    assert "kafka-init" in svc["collect"]["depends_on"]
    assert {"kafka-init", "schema"} <= set(svc["consume"]["depends_on"])
    assert "schema" in svc["alerts"]["depends_on"]
    assert "clickhouse" in svc["schema"]["depends_on"]
    # No cycles.
    seen: dict[str, int] = {}

    def visit(node: str) -> None:
        assert seen.get(node) != 1, f"depends_on cycle through {node}"
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for dep in svc[node].get("depends_on") or {}:
            visit(dep)
        seen[node] = 2

    for name in svc:
        visit(name)


def test_hepwatch_healthchecks_use_the_metrics_port(compose: dict[str, Any]) -> None:
    svc = services(compose)
    for name in ("collect", "consume"):
        args = [str(a) for a in svc[name]["command"]]
        port = option_value(args, "--metrics").rsplit(":", 1)[1]
        test = " ".join(svc[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in test, f"{name}: health check on another port"


# ---------------------------------------------------------------- volumes and ports


def test_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in services(compose).items():
        for source, target, _ro in mounts(service):
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
            assert target.startswith("/"), f"{name}: {target}"
    assert used == declared, f"declared but unused: {declared - used}"
    svc = services(compose)
    required = {
        "kafka": "kafka-data",
        "clickhouse": "clickhouse-data",
        "grafana": "grafana-data",
        "consume": "consumer-state",
        "collect": "collector-spool",
    }
    for name, volume in required.items():
        assert volume in [s for s, _t, _r in mounts(svc[name])], f"{name} lacks {volume}"
    assert ("clickhouse-data", "/var/lib/clickhouse", False) in mounts(svc["clickhouse"])
    assert ("grafana-data", "/var/lib/grafana", False) in mounts(svc["grafana"])


def test_consumers_share_one_group_and_state(compose: dict[str, Any]) -> None:
    consume = services(compose)["consume"]
    assert consume["deploy"]["replicas"] == 2, "two replicas in one group"
    args = [str(a) for a in consume["command"]]
    state_dir = option_value(args, "--state-dir")
    assert ("consumer-state", state_dir, False) in mounts(consume), (
        "the replicas must share the state volume (checkpoints follow rebalances)"
    )
    assert option_value(args, "--group")
    # Replicas cannot publish a fixed host port.
    assert not consume.get("ports")
    assert not consume.get("container_name")


def test_ports(compose: dict[str, Any]) -> None:
    svc = services(compose)
    seen: set[tuple[int, str]] = set()
    for name, service in svc.items():
        for _ip, host, _container, proto in published(service):
            assert (host, proto) not in seen, f"{name}: host port {host}/{proto} used twice"
            seen.add((host, proto))
    collect = published(svc["collect"])
    assert ("0.0.0.0", 9060, 9060, "udp") in collect
    assert ("0.0.0.0", 9060, 9060, "tcp") in collect
    listens = option_values([str(a) for a in svc["collect"]["command"]], "--listen")
    assert sorted(listens) == ["tcp://0.0.0.0:9060", "udp://0.0.0.0:9060"]
    assert ("0.0.0.0", 5060, 5060, "udp") in published(svc["kamailio"])
    # Admin interfaces stay on the loopback of the host.
    for name, port in (("grafana", 3000), ("clickhouse", 8123), ("alertmanager", 9093)):
        assert ("127.0.0.1", port, port, "tcp") in published(svc[name]), name
    assert not svc["kafka"].get("ports"), "Kafka is internal to the stack"


# ---------------------------------------------------------------- hepwatch command lines


def _resolve(args: list[str]) -> tuple[list[str], click.Context]:
    """Parse a full hepwatch argv with the real click commands; (command path, leaf ctx)."""
    from hepwatch.cli import cli

    ctx = cli.make_context("hepwatch", list(args))
    command: click.Command = cli
    path: list[str] = []
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest and command.invoke_without_command:
            break  # a group that runs on its own (`hepwatch alerts` is the service)
        assert rest, f"no subcommand in {args}"
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return path, ctx


@pytest.mark.parametrize("service_name", sorted(HEPWATCH_COMMANDS))
def test_hepwatch_command_exists_and_parses(compose: dict[str, Any], service_name: str) -> None:
    expected_path, required = HEPWATCH_COMMANDS[service_name]
    service = services(compose)[service_name]
    args = [str(a) for a in service["command"]]
    try:
        path, ctx = _resolve(args)
    except click.UsageError as exc:
        pytest.fail(f"{service_name}: `hepwatch {' '.join(args)}` does not parse: {exc}")
    assert tuple(path) == expected_path
    assert not ctx.args, f"{service_name}: stray arguments {ctx.args}"
    used = {a for a in args[args.index(path[0]) :] if a.startswith("--")}
    assert required <= used, f"{service_name}: missing {required - used}"

    from hepwatch.cli import cli

    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    for flag in used:
        assert flag in result.output, f"`hepwatch {' '.join(path)} --help` lacks {flag}"


@pytest.mark.parametrize("service_name", sorted(HEPWATCH_COMMANDS))
def test_mounted_config_loads(
    compose: dict[str, Any], service_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hepwatch.config import load_settings

    service = services(compose)[service_name]
    args = [str(a) for a in service["command"]]
    config = host_path(service, option_value(args, "--config"))
    assert config.is_file(), config
    for key in list(os.environ):
        if key.startswith("HEPWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env_of(service).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(config)
    if service_name == "collect":
        assert settings.auth.keys, "collector without the example proxy's auth key"


def test_flag_values_are_valid(compose: dict[str, Any]) -> None:
    from hepwatch.config import ConsumerConfig, ListenAddress

    svc = services(compose)
    collect = [str(a) for a in svc["collect"]["command"]]
    for url in option_values(collect, "--listen"):
        ListenAddress.parse(url)
    consume = [str(a) for a in svc["consume"]["command"]]
    sink = option_value(consume, "--sink")
    ConsumerConfig(sink=sink)
    scheme, _, dsn = sink.partition(":")
    assert scheme == "clickhouse"
    ch_env = env_of(svc["clickhouse"])
    dsns = [dsn]
    for name in ("schema", "alerts"):
        dsns.append(option_value([str(a) for a in svc[name]["command"]], "--clickhouse"))
    for url in dsns:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname == "clickhouse", url
        assert parts.port == 8123
        assert parts.username == ch_env["CLICKHOUSE_USER"], url
        assert parts.password == ch_env["CLICKHOUSE_PASSWORD"], url
        assert parts.path == "/" + ch_env["CLICKHOUSE_DB"], url
    alerts = [str(a) for a in svc["alerts"]["command"]]
    am = urlsplit(option_value(alerts, "--alertmanager"))
    assert am.hostname == "alertmanager" and am.port == 9093


def test_alert_rules_file_is_mounted_and_valid(compose: dict[str, Any]) -> None:
    alerts = services(compose)["alerts"]
    rules = host_path(alerts, option_value([str(a) for a in alerts["command"]], "--rules"))
    assert rules.is_file(), f"{rules} missing (the shipped alert rules)"
    from consumers.alerts.rules import load_rules

    assert load_rules(rules), "no rules in the shipped file"


# ---------------------------------------------------------------- ClickHouse, Grafana, Alertmanager


def _grafana_user() -> ET.Element:
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "grafana.xml").getroot()
    return root


def test_clickhouse_reader_user_for_grafana(compose: dict[str, Any]) -> None:
    svc = services(compose)
    root = _grafana_user()
    user = root.find("users/grafana")
    assert user is not None
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None
    # readonly 2: no writes, yet the data source may set max_execution_time per query.
    assert profile.findtext("readonly") == "2"
    password = user.find("password")
    assert password is not None and password.get("from_env") == "GRAFANA_CLICKHOUSE_PASSWORD"
    assert (
        env_of(svc["clickhouse"])["GRAFANA_CLICKHOUSE_PASSWORD"]
        == env_of(svc["grafana"])["GRAFANA_CLICKHOUSE_PASSWORD"]
    )
    assert host_path(svc["clickhouse"], "/etc/clickhouse-server/users.d/grafana.xml").is_file()


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    env = env_of(grafana)
    assert "grafana-clickhouse-datasource" in env["GF_INSTALL_PLUGINS"]
    ds_file = host_path(grafana, "/etc/grafana/provisioning/datasources/clickhouse.yaml")
    (ds,) = yaml.safe_load(ds_file.read_text())["datasources"]
    assert ds["type"] == "grafana-clickhouse-datasource"
    ch_env = env_of(services(compose)["clickhouse"])
    assert ds["jsonData"]["host"] == "clickhouse"
    assert ds["jsonData"]["port"] == 8123 and ds["jsonData"]["protocol"] == "http"
    assert ds["jsonData"]["defaultDatabase"] == ch_env["CLICKHOUSE_DB"]
    assert _grafana_user().find(f"users/{ds['jsonData']['username']}") is not None
    password = ds["secureJsonData"]["password"]
    assert password.startswith("$") and password.lstrip("${").rstrip("}") in env
    dash_file = host_path(grafana, "/etc/grafana/provisioning/dashboards/hepwatch.yaml")
    (provider,) = yaml.safe_load(dash_file.read_text())["providers"]
    dash_dir = host_path(grafana, provider["options"]["path"])
    assert dash_dir == DASHBOARD_DIR.resolve()
    assert host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    for path in DASHBOARD_DIR.glob("*.json"):
        for panel in _panels(json.loads(path.read_text())):
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
            assert panel["datasource"]["type"] == ds["type"], panel["title"]


def test_alertmanager_config() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}

    def walk(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield route
        for child in route.get("routes") or []:
            yield from walk(child)

    for route in walk(config["route"]):
        if "receiver" in route:
            assert route["receiver"] in receivers
    # hepwatch alerts group by these labels (consumers/alerts: GROUP_COLUMNS).
    assert {"alertname", "node_name", "peer"} <= set(config["route"]["group_by"])


# ---------------------------------------------------------------- dashboard SQL on chDB


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels") or []
        else:
            yield panel


_FROM, _TO = "toDateTime(now() - INTERVAL 6 HOUR)", "toDateTime(now() + INTERVAL 1 MINUTE)"


def grafana_sql(sql: str, node: str | None) -> str:
    """The SQL the Grafana ClickHouse data source sends: its macros and $node expanded."""

    def conditional_all(m: re.Match[str]) -> str:
        return m.group(1) if node is not None else "1=1"

    sql = re.sub(r"\$__conditionalAll\((.*?), \$node\)", conditional_all, sql)
    sql = sql.replace("${node:singlequote}", f"'{node}'")
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= {_FROM} AND \1 <= {_TO}", sql)
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)",
        sql,
    )
    sql = sql.replace("$__fromTime", _FROM).replace("$__toTime", _TO)
    sql = sql.replace("$__interval_s", "60")
    assert "$" not in sql, f"unexpanded macro or variable in:\n{sql}"
    return sql


# Rows for the panels, as the consumers would write them (minute counts come from the
# materialized view). Two calls start; one has ended (its dialog row exists).
SEED = [
    """INSERT INTO sip_messages (id, event_time, node_name, call_id, is_request, method,
        status, to_tag, src_ip, user_agent, src_partition, src_offset) VALUES
        ('m1', now64(6) - INTERVAL 10 MINUTE, 'proxy-1', 'call-a', true, 'INVITE', 0, '',
         '10.0.0.1', 'phone-a', 0, 1),
        ('m2', now64(6) - INTERVAL 9 MINUTE, 'proxy-1', 'call-b', true, 'INVITE', 0, '',
         '10.0.0.2', 'phone-b', 0, 2),
        ('m3', now64(6) - INTERVAL 8 MINUTE, 'proxy-1', 'call-a', false, 'INVITE', 491, 'x',
         '10.0.0.9', 'sbc-9', 0, 3),
        ('m4', now64(6) - INTERVAL 7 MINUTE, 'proxy-2', 'call-a', false, 'UPDATE', 405, 'x',
         '10.0.0.9', 'sbc-9', 0, 4),
        ('m5', now64(6) - INTERVAL 7 MINUTE, 'proxy-2', 'call-c', false, 'INFO', 405, 'x',
         '10.0.0.9', 'sbc-9', 0, 5)""",
    """INSERT INTO session_changes (id, event_time, node_name, call_id, method, status,
        status_class, intent, time_to_final_ms, src_partition, src_offset) VALUES
        ('s1', now64(6) - INTERVAL 8 MINUTE, 'proxy-1', 'call-a', 'INVITE', 491, 'glare',
         'hold', 12.5, 0, 3)""",
    """INSERT INTO anomalies (id, event_time, detected_at, anomaly, severity, node_name,
        call_id, reason, src_partition, src_offset) VALUES
        ('a1', now64(6) - INTERVAL 8 MINUTE, now64(6), 'glare_491', 'medium', 'proxy-1',
         'call-a', 'both sides re-INVITE', 0, 3)""",
    """INSERT INTO dialogs (id, node_name, call_id, state, start_time, end_time, end_reason,
        src_partition, src_offset) VALUES
        ('d1', 'proxy-1', 'call-b', 'terminated', now64(6) - INTERVAL 9 MINUTE,
         now64(6) - INTERVAL 2 MINUTE, 'bye', 0, 9)""",
]


def _migrations_sql() -> list[str]:
    statements = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        text = re.sub(r"\{ttl_\w+_days\}", "30", text)
        statements += [s.strip() for s in text.split(";") if s.strip()]
    assert statements, f"no migrations in {MIGRATIONS}"
    return statements


def _run_in_chdb(statements: list[str], queries: dict[str, str]) -> dict[str, Any]:
    """Run statements, then queries, in a fresh chDB in a child process; rows or errors."""
    with tempfile.TemporaryDirectory(prefix="hepwatch-dash-") as tmp:
        job = {"path": str(Path(tmp) / "ch"), "statements": statements, "queries": queries}
        proc = subprocess.run(
            [sys.executable, __file__, "--chdb-worker"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _chdb_worker() -> None:
    import clickhouse_connect

    job = json.load(sys.stdin)
    client = clickhouse_connect.get_client(dsn=f"chdb://{job['path']}")
    for statement in job["statements"]:
        client.command(statement)
    results: dict[str, Any] = {}
    for key, sql in job["queries"].items():
        try:
            rows = client.query(sql).result_rows
            results[key] = {"rows": json.loads(json.dumps(rows, default=str))}
        except Exception as exc:
            results[key] = {"error": str(exc)[:2000]}
    json.dump(results, sys.stdout)


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARD_DIR.glob("*.json"))
    assert files, "no dashboard in deploy/grafana/dashboards"
    return {p.name: json.loads(p.read_text()) for p in files}


@pytest.fixture(scope="module")
def dashboard_results(dashboards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    queries: dict[str, str] = {}
    for file, dash in dashboards.items():
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                queries[f"{file}|var {var['name']}|all"] = grafana_sql(var["query"], None)
        for panel in _panels(dash):
            for target in panel["targets"]:
                for node in (None, "proxy-1"):
                    key = f"{file}|{panel['title']}|{target['refId']}|{node or 'all'}"
                    queries[key] = grafana_sql(target["rawSql"], node)
    return _run_in_chdb([*_migrations_sql(), *SEED], queries)


def test_dashboard_structure(dashboards: dict[str, dict[str, Any]]) -> None:
    titles = []
    for dash in dashboards.values():
        assert dash["uid"] and dash["title"]
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        for panel in _panels(dash):
            titles.append(panel["title"])
            assert panel.get("description"), f"{panel['title']}: say what it shows"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["editorType"] == "sql" and target["rawSql"].strip()
                expected = "timeseries" if panel["type"] == "timeseries" else "table"
                assert target["queryType"] == expected, panel["title"]
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    joined = " | ".join(titles).lower()
    for topic in ("491", "405", "session-modification outcomes", "anomalies by type", "calls in"):
        assert topic in joined, f"no panel about {topic}"


def test_every_dashboard_query_runs_on_the_schema(dashboard_results: dict[str, Any]) -> None:
    errors = {k: v["error"] for k, v in dashboard_results.items() if "error" in v}
    assert not errors, json.dumps(errors, indent=2)


def _result(results: dict[str, Any], title: str, node: str = "all") -> list[list[Any]]:
    (key,) = [k for k in results if k.split("|")[1] == title and k.endswith(f"|{node}")]
    return results[key]["rows"]


def test_dashboard_queries_count_what_was_stored(dashboard_results: dict[str, Any]) -> None:
    r = dashboard_results
    assert _result(r, "491 responses") == [[1]]
    assert _result(r, "405 to UPDATE") == [[1]], "405 to INFO must not count"
    assert _result(r, "405 to UPDATE", "proxy-1") == [[0]], "node filter"
    assert _result(r, "Anomalies") == [[1]]
    # call-a started and has no dialog row yet; call-b ended.
    assert _result(r, "Calls in progress (from ClickHouse, approx.)") == [[1]]
    top = _result(r, "Who answers 491 and 405 (top 20 senders)")
    assert top == [["::ffff:10.0.0.9", "sbc-9", 1, 1, 1]]
    series = _result(r, "491 per minute, by node")
    assert [(row[1], row[2]) for row in series] == [("proxy-1", 1)]
    outcomes = _result(r, "Session-modification outcomes")
    assert [(row[1], row[2]) for row in outcomes] == [("INVITE glare", 1)]
    by_type = _result(r, "Anomalies by type")
    assert [(row[1], row[2]) for row in by_type] == [("glare_491", 1)]
    nodes = next(v["rows"] for k, v in r.items() if "|var node|" in k)
    assert nodes == [["proxy-1"], ["proxy-2"]]


# ---------------------------------------------------------------- Kamailio


def _modparams(path: Path) -> dict[str, tuple[str, list[str]]]:
    """siptrace modparams: name -> (value, the comment lines right above it)."""
    lines = path.read_text().splitlines()
    out: dict[str, tuple[str, list[str]]] = {}
    for i, line in enumerate(lines):
        m = re.match(r'modparam\("siptrace", "(\w+)", (.+)\)\s*$', line.strip())
        if not m:
            continue
        comments = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and not lines[j].startswith("#!"):
            comments.insert(0, lines[j])
            j -= 1
        if j >= 0 and lines[j].startswith("#!ifdef"):  # comment above the guard
            j -= 1
            while j >= 0 and lines[j].startswith("#") and not lines[j].startswith("#!"):
                comments.insert(0, lines[j])
                j -= 1
        out[m.group(1)] = (m.group(2).strip(), comments)
    return out


def test_siptrace_snippet_settings_and_reasons() -> None:
    params = _modparams(DEPLOY / "kamailio" / "siptrace.cfg")
    expected = {
        "trace_on": "1",
        "trace_mode": "1",
        "trace_to_database": "0",
        "hep_mode_on": "1",
        "hep_version": "3",
        "hep_capture_id": "HEPWATCH_CAPTURE_ID",
        "duplicate_uri": "HEPWATCH_URI",
        "auth_key": "HEPWATCH_AUTH_KEY",
    }
    for name, value in expected.items():
        assert name in params, f"siptrace.cfg lacks {name}"
        assert params[name][0] == value, f"{name} = {params[name][0]}"
        reason = " ".join(params[name][1])
        assert len(reason) > 40, f"{name}: say why (a comment above the setting)"
    assert "explicit" in " ".join(params["hep_version"][1]).lower()


def test_compose_kamailio_matches_the_collector(compose: dict[str, Any]) -> None:
    svc = services(compose)
    kam = svc["kamailio"]
    args = [str(a) for a in kam["command"]]
    defines = dict(d.split("=", 1) for d in option_values(args, "-A"))
    uri = defines["HEPWATCH_URI"].strip('"')
    m = re.fullmatch(r"sip:([\w.-]+):(\d+)", uri)
    assert m, uri
    assert m.group(1) in svc and m.group(1) == "collect"
    assert ("0.0.0.0", int(m.group(2)), int(m.group(2)), "udp") in published(svc["collect"])
    keys = json.loads(env_of(svc["collect"])["HEPWATCH_AUTH__KEYS"])
    assert keys[defines["HEPWATCH_CAPTURE_ID"]] == defines["HEPWATCH_AUTH_KEY"].strip('"')
    dockerfile = (DEPLOY / kam["build"]["context"] / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (DEPLOY / "kamailio" / source).is_file(), source
    cfg = re.search(r'"-f", "([^"]+)"', dockerfile)
    assert cfg and Path(cfg.group(1)).name == "example-proxy.cfg"
    assert (
        '#!include_file "siptrace.cfg"' in (DEPLOY / "kamailio" / "example-proxy.cfg").read_text()
    )


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio is not installed")
def test_kamailio_accepts_the_example_config(compose: dict[str, Any]) -> None:
    args = [str(a) for a in services(compose)["kamailio"]["command"]]
    proc = subprocess.run(
        ["kamailio", "-c", "-f", str(DEPLOY / "kamailio" / "example-proxy.cfg"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # the include must resolve relative to the config
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "config file ok" in proc.stdout + proc.stderr


if __name__ == "__main__" and sys.argv[1:] == ["--chdb-worker"]:
    _chdb_worker()
