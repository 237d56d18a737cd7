"""Configuration: a TOML file, environment overrides on top, command-line flags on top of both.

Precedence, highest first: flags given on the command line, `HEPWATCH_<SECTION>__<KEY>`
environment variables (for example `HEPWATCH_KAFKA__BOOTSTRAP=broker:9092`), the TOML
file named by `--config` or `HEPWATCH_CONFIG` (else `./hepwatch.toml` when it exists),
then the embedded defaults below. Every default is usable on one machine as it is.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LISTEN_SCHEMES = ("udp", "tcp", "tls")


class ListenAddress(BaseModel):
    """A parsed listener URL: `udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ListenAddress:
        parts = urlsplit(url)
        if parts.scheme not in LISTEN_SCHEMES:
            raise ValueError(f"listener {url!r}: scheme must be one of {', '.join(LISTEN_SCHEMES)}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"listener {url!r}: expected {parts.scheme}://HOST:PORT")
        return cls(scheme=parts.scheme, host=parts.hostname, port=parts.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_host_port(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` into a pair; raises ValueError with the reason."""
    parts = urlsplit("//" + value)
    if parts.port is None:
        raise ValueError(f"{value!r}: expected HOST:PORT")
    return parts.hostname or default_host, parts.port


class _Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class CollectorConfig(_Section):
    listen: list[str] = Field(default_factory=lambda: ["udp://0.0.0.0:9060", "tcp://0.0.0.0:9060"])
    node_name: str = Field(default_factory=socket.gethostname)
    max_packet_bytes: int = Field(65535, ge=64, le=65535)
    udp_receive_buffer_bytes: int = Field(8 * 1024 * 1024, ge=65536)
    max_connections: int = Field(1024, ge=1)
    idle_timeout_s: float = Field(300.0, gt=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # when set, TLS clients must present a certificate
    reject_log_per_minute: int = Field(20, ge=0)
    max_tracked_senders: int = Field(1000, ge=1)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        for url in value:
            ListenAddress.parse(url)
        return value

    def listen_addresses(self) -> list[ListenAddress]:
        return [ListenAddress.parse(url) for url in self.listen]


class KafkaConfig(_Section):
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "hepwatch.hep"
    # lz4 and large batches: zstd at linger 5 ms held the collector below 80k packets/s on
    # two cores, lz4 with 10 ms batches sustains 150k (BENCHMARKS.md).
    compression: str = "lz4"
    linger_ms: int = Field(10, ge=0)
    # After this long without an acknowledgement a record leaves librdkafka for the spool.
    message_timeout_ms: int = Field(10000, ge=1000)
    queue_max_messages: int = Field(500000, ge=1000)
    # Raw librdkafka properties, applied last (for SASL, SSL and tuning).
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)


class SpoolConfig(_Section):
    dir: Path = Path("var/spool")
    max_bytes: int = Field(1024**3, ge=1024 * 1024)
    segment_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)


class AuthConfig(_Section):
    # Agent keys (HEP chunk 0x000e) by capture id; "*" applies to every capture id.
    # When any key is set, a packet without the right key is dropped and counted.
    keys: dict[str, str] = Field(default_factory=dict)
    # Source networks allowed to send HEP; empty means any.
    allow_cidrs: list[str] = Field(default_factory=list)

    @field_validator("allow_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


class ConsumerConfig(_Section):
    group: str = "hepwatch-consumers"
    # Per-partition analysis state, checkpointed with its offsets. Replicas of one group
    # that can take over each other's partitions must share this directory.
    state_dir: Path = Path("var/state")
    # Where records go: jsonl:DIR (one file per partition).
    sink: str = "jsonl:var/records"
    checkpoint_interval_s: float = Field(5.0, gt=0)
    session_timeout_ms: int = Field(10000, ge=1000)
    # An idle partition's stream time follows the wall clock after this long without records.
    idle_advance_s: float = Field(2.0, gt=0)
    reorder_window_ms: int = Field(300, ge=0)
    dedup_window_ms: int = Field(1000, ge=0)
    t1_ms: int = Field(500, ge=1)
    max_calls_per_partition: int = Field(1_000_000, ge=100)
    metrics_listen: str | None = "127.0.0.1:9097"
    # C.12 second stage (consumers/legs/stage.py): leg facts go to legs_topic ("" means
    # "<kafka.topic>.legs", created with legs_partitions, 0 = as many as the HEP topic), read
    # by group "<group>.legs"; consume runs that stage in a thread unless legs_stage is false.
    legs_topic: str = ""
    legs_partitions: int = Field(0, ge=0)
    legs_stage: bool = True
    # Each partition engine sends a stream mark (how far it has processed) to every legs
    # partition at most this often; the legs stage decides by the lowest mark, and stops
    # waiting for a HEP partition whose mark has not risen for legs_stall_s.
    legs_mark_interval_s: float = Field(1.0, gt=0)
    legs_stall_s: float = Field(120.0, gt=0)

    @field_validator("sink")
    @classmethod
    def _check_sink(cls, value: str) -> str:
        scheme, _, target = value.partition(":")
        if scheme not in ("jsonl", "clickhouse") or not target:
            raise ValueError(f"sink {value!r}: expected jsonl:DIR or clickhouse:DSN")
        return value


class TtlConfig(_Section):
    """Retention per table in days (ClickHouse TTL; `schema apply` brings tables in line)."""

    messages_days: int = Field(14, ge=1)
    session_changes_days: int = Field(90, ge=1)
    dialogs_days: int = Field(90, ge=1)
    anomalies_days: int = Field(365, ge=1)
    minute_counts_days: int = Field(400, ge=1)
    alerts_days: int = Field(365, ge=1)


class ClickHouseConfig(_Section):
    # chdb:///path is the embedded engine (one process per directory); http(s)://host:8123/db
    # a ClickHouse server. Same SQL, same code (clickhouse-connect).
    dsn: str = "chdb:///var/lib/hepwatch/clickhouse"
    # Cluster variant: ON CLUSTER name for ReplicatedMergeTree + Distributed; None: one server.
    cluster: str | None = None
    ttl: TtlConfig = Field(default_factory=TtlConfig)
    batch_rows: int = Field(50_000, ge=1)
    flush_interval_s: float = Field(0.5, gt=0)
    retry_backoff_s: float = Field(1.0, gt=0)


class QueryHttpConfig(_Section):
    """The read-only ClickHouse-HTTP-compatible endpoint `run` serves over its chDB."""

    listen: str | None = "127.0.0.1:8123"
    # When users are set, requests must authenticate (basic auth, X-ClickHouse-User/Key
    # headers or user/password parameters) as one of them: {user = "password"}.
    users: dict[str, str] = Field(default_factory=dict)
    max_result_rows: int = Field(1_000_000, ge=1)
    max_execution_time_s: float = Field(30.0, gt=0)


class AlertsConfig(_Section):
    rules: Path | None = None  # YAML rules; None: the shipped defaults (deploy/alerts.yaml)
    interval_s: float = Field(15.0, gt=0)
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093 (v2 API)
    webhook_url: str | None = None
    log: bool = True
    resend_interval_s: float = Field(60.0, gt=0)  # Alertmanager hears of firing alerts again
    # wall: evaluate at the wall clock; data: at the newest data's time, moving on with the
    # wall clock after it (for captures replayed with their original times).
    clock: str = Field("wall", pattern="^(wall|data)$")


class RunConfig(_Section):
    """`hepwatch run`: everything in one process on embedded defaults."""

    data_dir: Path = Path("var/hepwatch")
    listen: list[str] = Field(default_factory=lambda: ["udp://0.0.0.0:9060", "tcp://0.0.0.0:9060"])
    queue_max_records: int = Field(1_000_000, ge=1000)


class MetricsConfig(_Section):
    listen: str | None = "127.0.0.1:9096"


class LogConfig(_Section):
    level: str = "INFO"
    json_format: bool = False


class Settings(BaseSettings):
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    consumer: ConsumerConfig = Field(default_factory=ConsumerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    clickhouse: ClickHouseConfig = Field(default_factory=ClickHouseConfig)
    query_http: QueryHttpConfig = Field(default_factory=QueryHttpConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    model_config = SettingsConfigDict(
        env_prefix="HEPWATCH_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # TomlConfigSettingsSource reads `toml_file` from model_config; None reads nothing.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The TOML file to read: the flag, else `HEPWATCH_CONFIG`, else ./hepwatch.toml if present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("HEPWATCH_CONFIG"):
        return Path(env)
    local = Path("hepwatch.toml")
    return local if local.is_file() else None


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from file, environment and flag overrides (a nested dict)."""
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

    return FileSettings(**(overrides or {}))
