"""The schema migration runner: ordered `schemas/migrations/NNNN_name.sql` files into ClickHouse.

A migration file holds statements ended by `;` at the end of a line; `--` comments are
dropped. `{ttl_<name>_days}` placeholders take `settings.clickhouse.ttl.<name>_days`.
Applied versions are recorded in `schema_migrations` with the checksum of the file as
written (placeholders unfilled), so a file changed after it was applied is an error, while
a retention change in the config is not: each run compares every table's TTL with the
config and issues `ALTER TABLE ... MODIFY TTL` where they differ.

With `cfg.cluster` set the statements go through `consumers.clickhouse.cluster` first
(ON CLUSTER, Replicated engines, `<table>_local` plus Distributed tables).

Write migration statements so that re-running them is harmless (`IF NOT EXISTS`): a run
that dies half way through a file re-runs the whole file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from hepwatch.config import ClickHouseConfig, TtlConfig

log = logging.getLogger(__name__)

MIGRATIONS_ENV = "HEPWATCH_MIGRATIONS_DIR"
MIGRATIONS_TABLE = "schema_migrations"
MAX_TTL_DAYS = 25_000
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_TTL_PLACEHOLDER_RE = re.compile(r"\{ttl_([a-z0-9_]+)_days\}")
_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE
)
_TTL_CLAUSE_RE = re.compile(r"^\s*TTL\s+(.+?)\s*$", re.IGNORECASE | re.MULTILINE | re.DOTALL)


class MigrationError(RuntimeError):
    """A migration cannot be loaded or applied; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    text: str  # the file as written
    checksum: str  # sha256 of the file's bytes

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One line of `hepwatch schema status`."""

    version: int
    name: str
    state: str  # applied, pending, changed (file differs from what was applied), missing
    applied_at: datetime | None


@dataclass(slots=True)
class MigrationReport:
    applied: list[int]  # versions newly applied by this run
    ttl_changed: list[str]  # tables whose TTL was brought in line with the config


def migrations_dir() -> Path:
    """Where the migration files are: $HEPWATCH_MIGRATIONS_DIR, else the checkout's schemas/.

    The project is installed editable, so the files sit beside the packages in the
    repository; this file is consumers/clickhouse/migrations.py, two levels below the root.
    """
    env = os.environ.get(MIGRATIONS_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "schemas" / "migrations")
    for path in candidates:
        if path.is_dir():
            return path
    where = ", ".join(str(p) for p in candidates)
    raise MigrationError(f"no migrations directory (looked in {where}; set {MIGRATIONS_ENV})")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration file in version order; a misnamed .sql file or a duplicate is an error."""
    directory = directory or migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql" or not path.is_file():
            continue
        m = _FILE_RE.match(path.name)
        if m is None:
            raise MigrationError(
                f"{path}: migration files are named NNNN_name.sql (four digits, lower-case name)"
            )
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"{path}: version {version} is also {found[version].path.name}; versions are unique"
            )
        data = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=m.group(2),
            path=path,
            text=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[v] for v in sorted(found)]


def strip_comments(sql: str) -> str:
    """`sql` without `--` comments (quoted strings and identifiers are left alone)."""
    out: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            out.append(ch)
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def split_statements(sql: str) -> list[str]:
    """Statements of a migration: comments dropped, split where a line ends with `;`."""
    statements: list[str] = []
    current: list[str] = []
    for line in strip_comments(sql).splitlines():
        stripped = line.rstrip()
        if stripped.endswith(";"):
            current.append(stripped[:-1])
            _close(current, statements)
            current = []
        else:
            current.append(stripped)
    _close(current, statements)
    return statements


def _close(lines: list[str], statements: list[str]) -> None:
    text = "\n".join(lines).strip()
    if text:
        statements.append(text)


def render(sql: str, ttl: TtlConfig) -> str:
    """Fill `{ttl_<name>_days}` from the TTL config; an unknown name is an error."""

    def fill(m: re.Match[str]) -> str:
        key = f"{m.group(1)}_days"
        if key not in TtlConfig.model_fields:
            known = ", ".join(f"{{ttl_{k}}}" for k in TtlConfig.model_fields)
            raise MigrationError(f"unknown placeholder {m.group(0)} (known: {known})")
        days = int(getattr(ttl, key))
        if days > MAX_TTL_DAYS:
            # toDateTime(t) + INTERVAL n DAY wraps past 2106: every row would expire at once.
            raise MigrationError(
                f"ttl.{key} = {days}: more than {MAX_TTL_DAYS} days passes the end of "
                "ClickHouse DateTime (2106) and would expire every row at once"
            )
        return str(days)

    return _TTL_PLACEHOLDER_RE.sub(fill, sql)


def migration_statements(
    migration: Migration,
    cfg: ClickHouseConfig,
    database: str,
    tables: set[str] | None = None,
) -> list[str]:
    """The statements of one migration as they are sent: rendered, cluster form if configured.

    `tables`: in the cluster form, the tables all migrations create (a later migration's
    view or ALTER may name a table of an earlier one).
    """
    try:
        statements = split_statements(render(migration.text, cfg.ttl))
        if cfg.cluster:
            from consumers.clickhouse.cluster import ClusterSqlError, cluster_statements

            try:
                statements = cluster_statements(statements, cfg.cluster, database, tables)
            except ClusterSqlError as exc:
                raise MigrationError(str(exc)) from exc
    except MigrationError as exc:
        raise MigrationError(f"{migration.filename}: {exc}") from exc
    return statements


def all_tables(migrations: list[Migration]) -> set[str]:
    """Every table the migrations create."""
    from consumers.clickhouse.cluster import created_tables

    return set().union(*(created_tables(split_statements(m.text)) for m in migrations))


def schema_sql(
    cfg: ClickHouseConfig, database: str = "default", directory: Path | None = None
) -> list[tuple[Migration, list[str]]]:
    """Every migration with the statements it sends under `cfg` (cluster form if set)."""
    migrations = load_migrations(directory)
    tables = all_tables(migrations)
    return [(m, migration_statements(m, cfg, database, tables)) for m in migrations]


def table_ttls(migrations: list[Migration], ttl: TtlConfig) -> dict[str, str]:
    """The TTL expression each table should have under `ttl`, from its CREATE TABLE."""
    out: dict[str, str] = {}
    for mig in migrations:
        if not _TTL_PLACEHOLDER_RE.search(mig.text):
            continue
        for stmt in split_statements(render(mig.text, ttl)):
            m = _CREATE_TABLE_RE.match(stmt)
            if m is None:
                continue
            clause = _TTL_CLAUSE_RE.search(stmt[_columns_end(stmt) :])
            if clause is not None:
                out[m.group(1)] = _until_settings(clause.group(1))
    return out


def _columns_end(stmt: str) -> int:
    """Index just past the column list of a CREATE TABLE (the parenthesis closing it)."""
    start = stmt.find("(")
    depth = 0
    for i in range(start, len(stmt)):
        if stmt[i] == "(":
            depth += 1
        elif stmt[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return 0


def _until_settings(clause: str) -> str:
    m = re.search(r"\bSETTINGS\b", clause, re.IGNORECASE)
    return (clause[: m.start()] if m else clause).strip()


def ensure_migrations_table(client: Client, cfg: ClickHouseConfig) -> None:
    if cfg.cluster:
        from consumers.clickhouse.cluster import migrations_table_sql

        client.command(migrations_table_sql(cfg.cluster))
        return
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String, "
        "checksum String, applied_at DateTime64(6, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )


def applied_migrations(client: Client) -> dict[int, tuple[str, str, datetime]]:
    """version -> (name, checksum, applied_at) of what the database says was applied."""
    rows = client.query(
        f"SELECT version, argMin(name, applied_at), argMin(checksum, applied_at), "
        f"min(applied_at) FROM {MIGRATIONS_TABLE} GROUP BY version ORDER BY version"
    ).result_rows
    return {int(v): (n, c, t) for v, n, c, t in rows}


def migrate(
    client: Client, cfg: ClickHouseConfig, directory: Path | None = None
) -> MigrationReport:
    """Apply pending migrations in order, then bring every table's TTL in line with `cfg`."""
    migrations = load_migrations(directory)
    database = client.database or "default"
    ensure_migrations_table(client, cfg)
    done = applied_migrations(client)
    for mig in migrations:
        if mig.version in done and done[mig.version][1] != mig.checksum:
            raise MigrationError(
                f"{mig.filename} was changed after it was applied (checksum "
                f"{done[mig.version][1][:12]} in {MIGRATIONS_TABLE}, {mig.checksum[:12]} on "
                "disk); restore the file and put the change in a new migration"
            )
    known = {m.version for m in migrations}
    for version in sorted(set(done) - known):
        log.warning("schema_migrations has version %d, which has no file here", version)

    applied: list[int] = []
    tables = all_tables(migrations)
    for mig in migrations:
        if mig.version in done:
            continue
        statements = migration_statements(mig, cfg, database, tables)
        for i, stmt in enumerate(statements, 1):
            try:
                client.command(stmt)
            except Exception as exc:
                raise MigrationError(
                    f"{mig.filename}, statement {i} of {len(statements)} failed: {exc}"
                ) from exc
        client.insert(
            MIGRATIONS_TABLE,
            [[mig.version, mig.name, mig.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
        )
        log.info("applied migration %s", mig.filename)
        applied.append(mig.version)

    ttl_changed = sync_ttls(client, cfg, migrations)
    return MigrationReport(applied=applied, ttl_changed=ttl_changed)


def apply_migrations(
    client: Client, cfg: ClickHouseConfig, directory: Path | None = None
) -> list[int]:
    """Apply what is pending (idempotent) and sync TTLs; returns the versions newly applied."""
    return migrate(client, cfg, directory).applied


def sync_ttls(
    client: Client, cfg: ClickHouseConfig, migrations: list[Migration] | None = None
) -> list[str]:
    """ALTER TABLE ... MODIFY TTL for each table whose TTL differs from the config."""
    if migrations is None:
        migrations = load_migrations()
    wanted = table_ttls(migrations, cfg.ttl)
    if not wanted:
        return []
    suffix = "_local" if cfg.cluster else ""
    current = current_ttls(client, [t + suffix for t in wanted])
    changed: list[str] = []
    for table, expr in wanted.items():
        target = table + suffix
        if target not in current:
            continue  # not created (yet): nothing to bring in line
        if _normal_expr(client, expr) == current[target]:
            continue
        on_cluster = f" ON CLUSTER {cfg.cluster}" if cfg.cluster else ""
        client.command(f"ALTER TABLE {target}{on_cluster} MODIFY TTL {expr}")
        log.info("TTL of %s is now %s", target, expr)
        changed.append(table)
    return changed


def current_ttls(client: Client, tables: list[str]) -> dict[str, str]:
    """table -> its TTL expression as ClickHouse normalised it ("" when it has none)."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {tables:Array(String)}",
        parameters={"tables": tables},
    ).result_rows
    out: dict[str, str] = {}
    for name, engine_full in rows:
        m = re.search(r"\bTTL\s+(.*?)(?:\s+SETTINGS\s+.*)?$", engine_full, re.DOTALL)
        out[name] = m.group(1).strip() if m else ""
    return out


def _normal_expr(client: Client, expr: str) -> str:
    """`expr` the way ClickHouse prints it (INTERVAL 14 DAY -> toIntervalDay(14))."""
    text = str(
        client.command(
            "SELECT formatQuerySingleLine({q:String})", parameters={"q": f"SELECT {expr}"}
        )
    )
    return text.removeprefix("SELECT ").strip()


def migration_status(client: Client, directory: Path | None = None) -> list[MigrationState]:
    """Every migration on disk or in the database with its state."""
    migrations = load_migrations(directory)
    exists = client.command(f"EXISTS TABLE {MIGRATIONS_TABLE}")
    done = applied_migrations(client) if str(exists).strip() == "1" else {}
    out: list[MigrationState] = []
    for mig in migrations:
        if mig.version not in done:
            out.append(MigrationState(mig.version, mig.name, "pending", None))
            continue
        name, checksum, at = done[mig.version]
        state = "applied" if checksum == mig.checksum else "changed"
        out.append(MigrationState(mig.version, mig.name, state, at))
    on_disk = {m.version for m in migrations}
    for version, (name, _checksum, at) in done.items():
        if version not in on_disk:
            out.append(MigrationState(version, name, "missing", at))
    return sorted(out, key=lambda s: s.version)
