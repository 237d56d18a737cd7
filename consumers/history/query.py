"""One SQL statement against ClickHouse, its parameters bound by the server, its result
formatted as an aligned table, CSV or JSON.

Targets are reached through clickhouse-connect: `chdb:///path` is the embedded engine (one
process per data directory), `http(s)://host:port[/db]` a ClickHouse server or the query
endpoint of `hepwatch run`.

Parameters are ClickHouse placeholders `{name:Type}` and travel beside the query (HTTP
`param_name`), never spliced into its text: `bind()` only accepts names the query declares
as placeholders, so clickhouse-connect never falls back to client-side `%(name)s` formatting.

Values are shown as an operator reads them: IPv4-mapped IPv6 addresses as IPv4, datetimes
as ISO 8601, arrays and maps as JSON text in table and CSV cells.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

DEFAULT_SERVER = "http://127.0.0.1:8123"
FORMATS = ("table", "vertical", "csv", "json")

# The placeholder syntax ClickHouse binds server-side (the form clickhouse-connect detects).
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class QueryError(Exception):
    """A query that could not run: bad parameters, an unreachable target, a ClickHouse error."""


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


# -- connecting -----------------------------------------------------------------------------


def connect(target: str, *, user: str | None = None, password: str | None = None) -> Client:
    """A clickhouse-connect client for `chdb:///path` or `http(s)://host[:port][/database]`."""
    try:
        if target.startswith("chdb:"):
            return _connect_chdb(target)
        return _connect_http(target, user=user, password=password)
    except QueryError:
        raise
    except ClickHouseError as exc:
        raise QueryError(f"{_redact(target)}: {_first_lines(str(exc))}") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise QueryError(f"{_redact(target)}: {exc}") from exc


def _connect_chdb(dsn: str) -> Client:
    try:
        from consumers.clickhouse.client import connect as project_connect
    except ImportError:  # the adapter package is not in this tree yet
        return clickhouse_connect.get_client(dsn=dsn)
    return project_connect(dsn)


def _connect_http(url: str, *, user: str | None, password: str | None) -> Client:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QueryError(
            f"{_redact(url)}: expected chdb:///PATH or http(s)://HOST[:PORT][/DATABASE]"
        )
    secure = parts.scheme == "https"
    kwargs: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "secure": secure,
        "username": user if user is not None else unquote(parts.username or "") or "default",
        "password": password if password is not None else unquote(parts.password or ""),
    }
    database = parts.path.strip("/")
    if database:
        kwargs["database"] = database
    return clickhouse_connect.get_client(**kwargs)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# -- parameters -----------------------------------------------------------------------------


def placeholders(sql: str) -> dict[str, str]:
    """The `{name:Type}` placeholders of a query, name -> type, in order of appearance."""
    found: dict[str, str] = {}
    for name, type_ in PLACEHOLDER.findall(_strip_comments(sql)):
        type_ = type_.strip()
        if found.setdefault(name, type_) != type_:
            raise QueryError(f"placeholder {name} declared as {found[name]} and as {type_}")
    return found


def _strip_comments(sql: str) -> str:
    """The query without `--` line comments (saved queries document placeholders there)."""
    out = []
    for line in sql.splitlines():
        quote = ""
        escaped = False
        for i, ch in enumerate(line):
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch in "'\"`":
                quote = ch
            elif line.startswith("--", i):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """`name=value` pairs from the command line (the value may contain `=`)."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not PARAM_NAME.match(name):
            raise QueryError(f"--param {item!r}: expected NAME=VALUE")
        if name in params:
            raise QueryError(f"--param {name} given twice")
        params[name] = value
    return params


def bind(
    sql: str, given: Mapping[str, str], defaults: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """The values for every placeholder of `sql`: given, else the default; an unknown or a
    missing parameter is an error that names what the query takes."""
    found = placeholders(sql)
    takes = ", ".join(f"{n} {t}" for n, t in found.items()) or "no parameters"
    unknown = [n for n in given if n not in found]
    if unknown:
        raise QueryError(f"unknown parameter {', '.join(unknown)} (the query takes {takes})")
    values: dict[str, str] = {}
    missing = []
    for name, type_ in found.items():
        if name in given:
            values[name] = given[name]
        elif defaults is not None and defaults.get(name) is not None:
            values[name] = defaults[name]  # type: ignore[assignment]
        else:
            missing.append(f"{name} ({type_})")
    if missing:
        raise QueryError(
            f"missing parameter {', '.join(missing)}: pass --param NAME=VALUE (the query takes "
            f"{takes})"
        )
    return values


# -- running --------------------------------------------------------------------------------


def run(client: Client, sql: str, values: Mapping[str, str]) -> QueryResult:
    """Run one statement; `values` are bound server-side to the query's placeholders."""
    for name in values:
        if name not in placeholders(sql):
            # Guard: clickhouse-connect would format a value the query does not bind as a
            # placeholder into the text itself.
            raise QueryError(f"parameter {name} is not a placeholder of the query")
    try:
        result = client.query(sql, parameters=dict(values) or None)
    except ClickHouseError as exc:
        raise QueryError(_first_lines(str(exc))) from exc
    columns, types = list(result.column_names), [t.name for t in result.column_types]
    if not columns:
        columns, types = _header(client, sql, values)
    return QueryResult(columns, types, list(result.result_rows))


def _header(client: Client, sql: str, values: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The columns of a result without rows (chDB sends no block then), from DESCRIBE."""
    try:
        described = client.query(
            f"DESCRIBE TABLE ({sql.strip().rstrip(';')})", dict(values) or None
        )
    except ClickHouseError:
        return [], []  # not a SELECT: no columns to show
    return [r[0] for r in described.result_rows], [r[1] for r in described.result_rows]


def _first_lines(text: str, limit: int = 20) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:limit])


# -- values ---------------------------------------------------------------------------------


def plain(value: Any, *, iso_sep: str = "T") -> Any:
    """A JSON-ready form of a ClickHouse value: mapped IPv6 as IPv4, datetimes in ISO 8601."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, ipaddress.IPv6Address):
        mapped = value.ipv4_mapped
        return str(mapped) if mapped is not None else str(value)
    if isinstance(value, ipaddress.IPv4Address | UUID | Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=iso_sep)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(plain(k, iso_sep=iso_sep)): plain(v, iso_sep=iso_sep) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [plain(v, iso_sep=iso_sep) for v in value]
    return str(value)


def cell(value: Any) -> str:
    """A value as the text of a table or CSV cell."""
    value = plain(value, iso_sep=" ")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


# -- formats --------------------------------------------------------------------------------


def format_result(result: QueryResult, fmt: str, *, width: int | None = None) -> str:
    if fmt == "json":
        return format_json(result)
    if fmt == "csv":
        return format_csv(result)
    if fmt == "vertical":
        return format_vertical(result)
    if fmt == "table":
        return format_table(result, width=width)
    raise QueryError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def format_json(result: QueryResult) -> str:
    """An array of objects, one per row, one row per line."""
    if not result.rows:
        return "[]"
    lines = [
        json.dumps(
            {c: plain(v) for c, v in zip(result.columns, row, strict=True)}, ensure_ascii=False
        )
        for row in result.rows
    ]
    return "[\n" + ",\n".join(lines) + "\n]"


def format_csv(result: QueryResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([cell(v) for v in row])
    return buf.getvalue().rstrip("\n")


_NUMERIC = re.compile(r"(Nullable\()?(U?Int|Float|Decimal)")


def format_table(result: QueryResult, *, width: int | None = None) -> str:
    """Aligned columns, numbers to the right; rows wider than the terminal switch to the
    vertical layout (one `column: value` line each), as clickhouse-client's Vertical does."""
    cells = [[_one_line(cell(v)) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    total = sum(widths) + 2 * (len(widths) - 1)
    limit = width if width is not None else shutil.get_terminal_size((120, 24)).columns
    if result.rows and total > limit:
        return format_vertical(result)
    right = [bool(_NUMERIC.match(t)) for t in result.types]

    def line(texts: list[str]) -> str:
        parts = [
            t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(result.columns), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(result.rows)} row{'' if len(result.rows) == 1 else 's'})")
    return "\n".join(out)


def format_vertical(result: QueryResult) -> str:
    name_width = max((len(c) for c in result.columns), default=0)
    out: list[str] = []
    for n, row in enumerate(result.rows, 1):
        out.append(f"Row {n}:")
        out.append("-" * (len(out[-1])))
        for col, value in zip(result.columns, row, strict=True):
            text = cell(value).splitlines() or [""]
            out.append(f"{col.rjust(name_width)}: {text[0]}")
            out += [" " * (name_width + 2) + rest for rest in text[1:]]
        out.append("")
    out.append(f"({len(result.rows)} row{'' if len(result.rows) == 1 else 's'})")
    return "\n".join(out)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
