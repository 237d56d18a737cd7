"""Open a clickhouse-connect client from a hepwatch DSN: the embedded engine or a server.

- `chdb:///abs/path` (or `chdb://rel/path`, resolved against the working directory): the
  chDB engine in this process, its data in that directory (created when missing). chDB
  allows one process per directory and one directory per process.
- `chdb://:memory:`: a throw-away in-memory engine.
- `http://[user[:password]@]host[:port][/database]` and `https://...`: a ClickHouse server
  over HTTP (ports 8123 and 8443 by default; database `default`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

__all__ = ["ClickHouseDsnError", "Client", "connect", "describe_dsn"]

HTTP_CONNECT_TIMEOUT_S = 10
HTTP_SEND_RECEIVE_TIMEOUT_S = 30


class ClickHouseDsnError(ValueError):
    """The DSN is not one hepwatch understands, or its target cannot be opened."""


def connect(dsn: str, *, settings: dict[str, Any] | None = None) -> Client:
    """A client for `dsn` (see the module docstring); raises ClickHouseDsnError when bad."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ClickHouseDsnError(
            f"ClickHouse DSN {dsn!r}: expected chdb:///path or http(s)://host:port/database"
        )
    scheme = scheme.lower()
    if scheme == "chdb":
        return _connect_chdb(dsn, rest, settings)
    if scheme in ("http", "https"):
        return _connect_http(dsn, scheme, settings)
    raise ClickHouseDsnError(
        f"ClickHouse DSN {dsn!r}: unknown scheme {scheme!r} (use chdb, http or https)"
    )


def describe_dsn(dsn: str) -> str:
    """The DSN with any password masked, for logs and messages."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return dsn
    userinfo, _, tail = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in userinfo else dsn


def _connect_chdb(dsn: str, rest: str, settings: dict[str, Any] | None) -> Client:
    location = rest.split("?", 1)[0]
    if not location:
        raise ClickHouseDsnError(f"ClickHouse DSN {dsn!r}: chdb needs a directory (chdb:///path)")
    if location in (":memory:", "memory"):
        return clickhouse_connect.get_client(dsn="chdb://:memory:", settings=settings)
    path = Path(unquote(location)).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClickHouseDsnError(f"chDB directory {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise ClickHouseDsnError(f"chDB directory {path} is not a directory")
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}", settings=settings)
    except Exception as exc:
        hint = ""
        text = str(exc).lower()
        if "lock" in text:
            hint = " (another process has it open: chDB allows one process per directory)"
        elif "already initialized" in text:
            hint = " (this process has another chDB directory open: close that client first)"
        raise ClickHouseDsnError(f"cannot open chDB at {path}{hint}: {exc}") from exc


def _connect_http(dsn: str, scheme: str, settings: dict[str, Any] | None) -> Client:
    parts = urlsplit(dsn)
    try:
        port = parts.port
    except ValueError as exc:
        raise ClickHouseDsnError(f"ClickHouse DSN {describe_dsn(dsn)!r}: {exc}") from exc
    if not parts.hostname:
        raise ClickHouseDsnError(f"ClickHouse DSN {describe_dsn(dsn)!r}: no host")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > 1:
        raise ClickHouseDsnError(
            f"ClickHouse DSN {describe_dsn(dsn)!r}: the path is the database, one name only"
        )
    database = unquote(segments[0]) if segments else "default"
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname,
            port=port or (8443 if scheme == "https" else 8123),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else "",
            database=database,
            secure=scheme == "https",
            settings=settings,
            # A stuck server must not hold a consumer past max.poll.interval.ms (60 s).
            connect_timeout=HTTP_CONNECT_TIMEOUT_S,
            send_receive_timeout=HTTP_SEND_RECEIVE_TIMEOUT_S,
        )
    except Exception as exc:
        raise ClickHouseDsnError(f"cannot reach ClickHouse at {describe_dsn(dsn)}: {exc}") from exc
