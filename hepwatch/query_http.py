"""The read-only query endpoint of `hepwatch run`: ClickHouse's HTTP interface over its chDB.

chDB lets one process open a data directory, so `run` answers queries for everyone else:
`hepwatch sql --server`, clickhouse-connect (`interface="http"`) and Grafana's ClickHouse
data source talk to this endpoint as they would to a ClickHouse server.

What is served, as ClickHouse serves it:
- `GET|POST /` with the query in the `query` parameter, the POST body, or both (the
  parameter, a newline, then the body); form-encoded POSTs (`query`, `param_*` fields) too.
  `GET /` without a query and `/ping` answer `Ok.`; `/replicas_status` answers `Ok.`.
- Output format: the query's `FORMAT` clause, else `default_format`, else TabSeparated; the
  bytes are chDB's own formatting, `Content-Type` and `X-ClickHouse-Format` from
  `system.formats`. `X-ClickHouse-Query-Id`, `-Timezone`, `-Summary` and
  `-Server-Display-Name` headers are set.
- `param_<name>` binds `{name:Type}` placeholders server-side; `database` selects the
  database; every other unknown parameter is a ClickHouse setting for this query
  (transport-only ones, e.g. `session_id`, `compress`, are ignored). `max_result_rows` and
  `max_execution_time` are capped by the configured limits.
- Errors: `Code: N. DB::Exception: ... (NAME) (version V)` with the ClickHouse HTTP status
  for the code and the `X-ClickHouse-Exception-Code` header.

Read-only, twice: a statement must start with SELECT, WITH, SHOW, DESCRIBE/DESC, EXPLAIN or
EXISTS and be one statement without `INTO OUTFILE` (checked on the tokens, outside strings
and comments; otherwise 403 READONLY), and every query runs on a fresh chDB session handle
with `readonly = 1`, which also blocks table functions such as file() and url().

Authentication when `[query_http] users` is set: HTTP basic auth, the X-ClickHouse-User /
X-ClickHouse-Key headers, or `user`/`password` parameters; no credentials gives 401
(REQUIRED_PASSWORD), wrong ones 403 (AUTHENTICATION_FAILED).

Every chDB call of the process goes through one lock (chDB is not safe for concurrent use);
a query waits for it at most `max_execution_time_s`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import chdb
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from hepwatch.config import QueryHttpConfig

log = logging.getLogger("hepwatch.query_http")

ALLOWED_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
DEFAULT_FORMAT = "TabSeparated"

# Parameters that belong to the HTTP transport, never passed to the engine as settings.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "enable_http_compression",
        "http_zlib_compression_level",
        "wait_end_of_query",
        "buffer_size",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "client_protocol_version",
        "quota_key",
        "role",
        "readonly",  # always 1 here
        "stacktrace",
        "http_response_buffer_size",
    }
)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code:\s*(\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\))?\s*\.?\s*$")

# ClickHouse error codes used here.
SYNTAX_ERROR = 62
TIMEOUT_EXCEEDED = 159
READONLY = 164
REQUIRED_PASSWORD = 194
AUTHENTICATION_FAILED = 516
BAD_ARGUMENTS = 36
UNKNOWN_SETTING = 115

# HTTP status per exception code, as ClickHouse's HTTP handler maps them (a subset).
_STATUS_400 = frozenset(
    {6, 27, 36, 38, 41, 42, 43, 44, 47, 53, 62, 72, 115, 117, 130, 184, 215, 456, 457}
)
_STATUS_404 = frozenset({16, 46, 50, 60, 73, 81})
_STATUS_403 = frozenset({164, 192, 193, 497, 516})


def http_status(code: int) -> int:
    if code == REQUIRED_PASSWORD:
        return 401
    if code in _STATUS_403:
        return 403
    if code in _STATUS_400:
        return 400
    if code in _STATUS_404:
        return 404
    if code == 48:  # NOT_IMPLEMENTED
        return 501
    return 500


class QueryError(Exception):
    """A ClickHouse-style failure: code, name and message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> QueryError:
        text = str(exc).strip()
        idx = text.find("Code: ")
        if idx > 0:
            text = text[idx:]
        m = _CODE.match(text)
        code = int(m.group(1)) if m else 1000
        n = _NAME.search(text)
        return cls(code, n.group(1) if n else "", text)

    def body(self, version: str) -> str:
        if self.message.startswith("Code: "):
            text = self.message
        else:
            text = f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})"
        if "(version " not in text:
            text += f" (version {version})"
        return text + "\n"


# -- statement inspection -------------------------------------------------------------------

# Deliberately conservative: where ClickHouse's lexer might accept more (heredocs, `#`
# comments, nested block comments), this one sees ordinary tokens, so what could hide a
# second statement or an INTO OUTFILE from it is rejected rather than passed.
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<qident>"(?:[^"\\]|\\.|"")*(?:"|\Z)|`(?:[^`\\]|\\.|``)*(?:`|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<punct>.)
    """,
    re.S | re.X,
)


def significant_tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) of every token but whitespace and comments."""
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "punct"
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
    return out


def inspect_query(sql: str, formats: Mapping[str, str]) -> str | None:
    """Check that `sql` is one read-only statement; returns the format its FORMAT clause
    names (canonical spelling), or None. Raises QueryError (READONLY or SYNTAX_ERROR)."""
    tokens = significant_tokens(sql)
    i = 0
    while i < len(tokens) and tokens[i] == ("punct", "("):
        i += 1
    if i >= len(tokens):
        raise QueryError(SYNTAX_ERROR, "SYNTAX_ERROR", "Empty query")
    kind, text = tokens[i]
    if kind != "word" or text.upper() not in ALLOWED_STATEMENTS:
        raise _readonly(f"only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS are served; "
                        f"got {text[:40]!r}")  # fmt: skip
    found: str | None = None
    depth = 0
    n = len(tokens)
    for j, (kind, text) in enumerate(tokens):
        if kind == "punct":
            if text == "(":
                depth += 1
            elif text == ")":
                depth -= 1
            elif text == ";" and any(t != ("punct", ";") for t in tokens[j + 1 :]):
                raise _readonly("multi-statement queries are not allowed")
            continue
        if kind != "word":
            continue
        upper = text.upper()
        if upper == "INTO" and j + 1 < n and tokens[j + 1][1].upper() == "OUTFILE":
            raise _readonly("INTO OUTFILE is not allowed")
        if upper == "FORMAT" and depth == 0 and j + 1 < n and tokens[j + 1][0] == "word":
            canonical = formats.get(tokens[j + 1][1].lower())
            if canonical is not None:
                found = canonical
    return found


def _readonly(detail: str) -> QueryError:
    return QueryError(READONLY, "READONLY", f"hepwatch: Cannot execute query in readonly mode: "
                      f"{detail}")  # fmt: skip


# -- the engine side ------------------------------------------------------------------------


@dataclass(slots=True)
class QueryOutput:
    body: bytes
    fmt: str
    read_rows: int
    read_bytes: int
    elapsed_s: float


class ChdbQueries:
    """Runs read-only queries on fresh chDB session handles of an engine this process opened.

    `path` must be spelled as the engine was opened (clickhouse-connect opens the realpath);
    `lock` is the process-wide chDB lock.
    """

    def __init__(self, path: str, lock: threading.Lock, config: QueryHttpConfig) -> None:
        self.path = path
        self.lock = lock
        self.config = config
        self.version = ""
        self.timezone = "UTC"
        self.formats: dict[str, str] = {}  # lower-case name -> canonical name
        self.content_types: dict[str, str] = {}  # canonical name -> Content-Type

    def load_server_info(self) -> None:
        with self.lock:
            conn = chdb.connect(self.path)
            try:
                row = conn.query("SELECT version(), timezone()", "TabSeparated").bytes()
                self.version, self.timezone = row.decode().strip().split("\t")
                rows = conn.query(
                    "SELECT name, content_type FROM system.formats WHERE is_output",
                    "TabSeparated",
                ).bytes()
            finally:
                conn.close()
        for line in rows.decode().splitlines():
            name, _, ctype = line.partition("\t")
            self.formats[name.lower()] = name
            self.content_types[name] = ctype or "application/octet-stream"

    def content_type(self, fmt: str) -> str:
        return self.content_types.get(fmt) or "text/plain; charset=UTF-8"

    def settings_for(self, requested: Mapping[str, str]) -> dict[str, str]:
        """The settings a query runs with: the requested ones, limits capped."""
        out: dict[str, str] = {}
        for name, value in requested.items():
            if not _SETTING_NAME.match(name):
                raise QueryError(UNKNOWN_SETTING, "UNKNOWN_SETTING", f"Bad setting name {name!r}")
            out[name] = value
        cfg = self.config
        out["max_result_rows"] = str(_capped(out.get("max_result_rows"), cfg.max_result_rows))
        limit_s = cfg.max_execution_time_s
        out["max_execution_time"] = str(_capped_float(out.get("max_execution_time"), limit_s))
        return out

    def execute(
        self,
        sql: str,
        fmt: str,
        params: Mapping[str, str],
        settings: Mapping[str, str],
        database: str | None,
    ) -> QueryOutput:
        """Run one query (already inspected); raises QueryError."""
        wait = self.config.max_execution_time_s
        if not self.lock.acquire(timeout=wait):
            raise QueryError(
                TIMEOUT_EXCEEDED,
                "TIMEOUT_EXCEEDED",
                f"Timeout exceeded: waited {wait:g} s for the engine (busy inserting or "
                "answering another query)",
            )
        try:
            try:
                conn = chdb.connect(self.path)
            except Exception as exc:
                raise QueryError.from_engine(exc) from exc
            try:
                if database:
                    conn.query(f"USE {_quote_identifier(database)}", "TabSeparated")
                assignments = ", ".join(f"{k} = {_quote(v)}" for k, v in settings.items())
                conn.query(f"SET {assignments}", "TabSeparated")
                conn.query("SET readonly = 1", "TabSeparated")
                res = conn.query(sql, fmt, params=dict(params))
                return QueryOutput(
                    body=res.bytes() or b"",
                    fmt=fmt,
                    read_rows=int(res.rows_read()),
                    read_bytes=int(res.bytes_read()),
                    elapsed_s=float(res.elapsed()),
                )
            except QueryError:
                raise
            except Exception as exc:
                raise QueryError.from_engine(exc) from exc
            finally:
                conn.close()
        finally:
            self.lock.release()


def _capped(value: str | None, limit: int) -> int:
    try:
        asked = int(value) if value is not None else 0
    except ValueError as exc:
        raise QueryError(BAD_ARGUMENTS, "BAD_ARGUMENTS", f"max_result_rows {value!r}") from exc
    return limit if asked <= 0 else min(asked, limit)


def _capped_float(value: str | None, limit: float) -> float:
    try:
        asked = float(value) if value is not None else 0.0
    except ValueError as exc:
        raise QueryError(BAD_ARGUMENTS, "BAD_ARGUMENTS", f"max_execution_time {value!r}") from exc
    return limit if asked <= 0 else min(asked, limit)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# -- the HTTP side --------------------------------------------------------------------------


class QueryHttpServer:
    """The aiohttp application and its site; `start` returns the bound port."""

    def __init__(self, queries: ChdbQueries, config: QueryHttpConfig) -> None:
        self.queries = queries
        self.config = config
        self.display_name = socket.gethostname()
        self.served = 0
        self.failed = 0
        self._runner: web.AppRunner | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="query-http")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("GET", "/", self.handle_query)
        app.router.add_route("POST", "/", self.handle_query)
        app.router.add_get("/ping", self._ok)
        app.router.add_get("/replicas_status", self._ok)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        if server is not None and getattr(server, "sockets", None):
            return int(server.sockets[0].getsockname()[1])
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=True)

    async def _ok(self, _request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def handle_query(self, request: web.Request) -> web.Response:
        query_id = request.query.get("query_id") or str(uuid.uuid4())
        try:
            params = await self._request_params(request)
            self._authenticate(request, params)
            sql = params.pop("__sql__")
            if not sql.strip():
                if request.method == "GET":
                    return web.Response(text="Ok.\n")
                raise QueryError(SYNTAX_ERROR, "SYNTAX_ERROR", "Empty query")
            return await self._run(sql, params, query_id)
        except QueryError as exc:
            self.failed += 1
            if exc.code not in (REQUIRED_PASSWORD, AUTHENTICATION_FAILED):
                log.debug("query %s failed: %s", query_id, exc.message)
            return self._error(exc, query_id)

    async def _request_params(self, request: web.Request) -> dict[str, str]:
        """URL parameters (and form fields) as a dict, the query text under `__sql__`."""
        fields: MultiDict[str] = MultiDict(request.query)
        body = ""
        if request.method == "POST":
            # As ClickHouse: multipart forms carry fields (clickhouse-connect's form
            # encoding); any other body is query text (curl's default form type included).
            if request.content_type == "multipart/form-data":
                form: MultiDictProxy[Any] = await request.post()
                for key, value in form.items():
                    if isinstance(value, str):
                        fields.add(key, value)
            else:
                raw = await request.read()
                try:
                    body = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise QueryError(
                        SYNTAX_ERROR, "SYNTAX_ERROR", "the query is not valid UTF-8"
                    ) from exc
        params = {k: fields.getone(k) for k in fields}
        query = fields.getall("query", [""])[-1]
        params["__sql__"] = (query + "\n" + body) if query and body else (query or body)
        return params

    def _authenticate(self, request: web.Request, params: Mapping[str, str]) -> None:
        users = self.config.users
        if not users:
            return
        user = password = None
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
        elif "X-ClickHouse-User" in request.headers:
            user = request.headers["X-ClickHouse-User"]
            password = request.headers.get("X-ClickHouse-Key", "")
        elif "user" in params:
            user, password = params["user"], params.get("password", "")
        if not user:
            raise QueryError(
                REQUIRED_PASSWORD,
                "REQUIRED_PASSWORD",
                "hepwatch: this endpoint requires a user and password (basic auth, "
                "X-ClickHouse-User/X-ClickHouse-Key headers or user/password parameters)",
            )
        expected = users.get(user)
        if expected is None or not hmac.compare_digest(
            expected.encode(), (password or "").encode()
        ):
            raise QueryError(
                AUTHENTICATION_FAILED,
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user "
                "with such name",
            )

    async def _run(self, sql: str, params: dict[str, str], query_id: str) -> web.Response:
        queries = self.queries
        named = inspect_query(sql, queries.formats)
        default = params.get("default_format")
        if default is not None:
            canonical = queries.formats.get(default.lower())
            if canonical is None:
                raise QueryError(73, "UNKNOWN_FORMAT", f"Unknown format {default}")
            default = canonical
        fmt = named or default or DEFAULT_FORMAT
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_") and len(k) > 6}
        requested = {
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        settings = queries.settings_for(requested)
        database = params.get("database") or None
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        out = await loop.run_in_executor(
            self._executor, queries.execute, sql, fmt, binds, settings, database
        )
        self.served += 1
        elapsed_ns = int((time.monotonic() - started) * 1e9)
        summary = {
            "read_rows": str(out.read_rows),
            "read_bytes": str(out.read_bytes),
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": str(out.read_rows),
            "result_bytes": str(len(out.body)),
            "elapsed_ns": str(elapsed_ns),
        }
        headers = {
            "Content-Type": queries.content_type(out.fmt),
            "X-ClickHouse-Format": out.fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": queries.timezone,
            "X-ClickHouse-Server-Display-Name": self.display_name,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
        }
        return web.Response(body=out.body, headers=headers)

    def _error(self, exc: QueryError, query_id: str) -> web.Response:
        status = http_status(exc.code)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(exc.code),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": self.display_name,
        }
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="hepwatch"'
        return web.Response(
            status=status, text=exc.body(self.queries.version or "chdb"), headers=headers
        )


__all__ = [
    "ALLOWED_STATEMENTS",
    "ChdbQueries",
    "QueryError",
    "QueryHttpServer",
    "http_status",
    "inspect_query",
]
