"""The cluster variant of the schema: the single-server DDL turned into Replicated + Distributed.

For a table `t` of the migrations, every server of the cluster gets

- `t_local`: the same columns, indexes, partitioning, order and TTL, on the Replicated
  form of its engine (`ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/
  t_local', '{replica}')`, likewise Summing or plain MergeTree, engine arguments kept);
- `t`: `Distributed(cluster, database, t_local, <sharding key>)` over them, so queries and
  inserts use the same names as on one server. The sharding key is `cityHash64(call_id)`
  (one call on one shard, so per-call queries and the id dedup stay on one shard) or
  `rand()` for tables without a call_id.

Materialized views are created on every server and read and write the local tables
(`FROM t_local`, `TO counts_local`), so each shard aggregates what it stores. ALTERs of
columns go to both tables, other ALTERs (TTL, indexes) to the local one. Everything is
`ON CLUSTER`. A statement this module cannot translate is an error, never passed through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIGRATIONS_TABLE = "schema_migrations"
REPLICA_PATH = "/clickhouse/tables/{{shard}}/{{database}}/{table}"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?({_IDENT})\s*\(", re.IGNORECASE | re.DOTALL
)
_ENGINE = re.compile(rf"\bENGINE\s*=\s*({_IDENT})\s*(\()?", re.IGNORECASE)
_CREATE_MV = re.compile(
    rf"^CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?({_IDENT})\s+TO\s+({_IDENT})\s+"
    r"(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_CREATE_VIEW = re.compile(
    rf"^CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?({_IDENT})\s+(AS\s.*)$",
    re.IGNORECASE | re.DOTALL,
)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+({_IDENT})\s+(.*)$", re.IGNORECASE | re.DOTALL)
_COLUMN_ALTER = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.IGNORECASE)
_DROP = re.compile(
    rf"^DROP\s+(TABLE|VIEW|DICTIONARY)\s+(IF\s+EXISTS\s+)?({_IDENT})\s*$", re.IGNORECASE
)
_FROM_JOIN = re.compile(rf"\b(FROM|JOIN)\s+({_IDENT})\b", re.IGNORECASE)


class ClusterSqlError(ValueError):
    """A migration statement has no cluster form here; the message quotes its start."""


def quote_ident(name: str) -> str:
    return name if re.fullmatch(_IDENT, name) else "`" + name.replace("`", "\\`") + "`"


def quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def created_tables(statements: Iterable[str]) -> set[str]:
    """Names of the tables the statements create (the ones that get a _local twin)."""
    return {m.group(2) for s in statements if (m := _CREATE_TABLE.match(s.strip()))}


def cluster_statements(
    statements: list[str],
    cluster: str,
    database: str,
    tables: set[str] | None = None,
) -> list[str]:
    """The cluster form of single-server statements (see the module docstring).

    `tables` are the names known to be split into local + Distributed (those created by
    earlier migrations as well); by default the ones these statements create.
    """
    known = set(tables or ()) | created_tables(statements)
    out: list[str] = []
    for stmt in statements:
        out.extend(_translate(stmt.strip(), cluster, database, known))
    return out


def migrations_table_sql(cluster: str) -> str:
    """`schema_migrations` on every server, replicated within each shard."""
    path = quote_str(REPLICA_PATH.format(table=MIGRATIONS_TABLE))
    return (
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ON CLUSTER {quote_ident(cluster)} "
        "(version UInt32, name String, checksum String, applied_at DateTime64(6, 'UTC')) "
        f"ENGINE = ReplicatedReplacingMergeTree({path}, '{{replica}}') ORDER BY version"
    )


def _translate(stmt: str, cluster: str, database: str, known: set[str]) -> list[str]:
    on = f"ON CLUSTER {quote_ident(cluster)}"
    if m := _CREATE_TABLE.match(stmt):
        return _create_table(stmt, m, cluster, database, on)
    if m := _CREATE_MV.match(stmt):
        if_not, name, target, rest = m.groups()
        rest = _FROM_JOIN.sub(lambda x: _local_ref(x, known), rest)
        target = target + "_local" if target in known else target
        return [f"CREATE MATERIALIZED VIEW {if_not or ''}{name} {on} TO {target} {rest}"]
    if m := _CREATE_VIEW.match(stmt):
        or_replace, if_not, name, rest = m.groups()
        return [f"CREATE {or_replace or ''}VIEW {if_not or ''}{name} {on} {rest}"]
    if m := _ALTER.match(stmt):
        name, rest = m.groups()
        if name not in known:
            return [f"ALTER TABLE {name} {on} {rest}"]
        out = [f"ALTER TABLE {name}_local {on} {rest}"]
        if _COLUMN_ALTER.match(rest):
            out.append(f"ALTER TABLE {name} {on} {rest}")
        return out
    if m := _DROP.match(stmt):
        what, if_exists, name = m.groups()
        if_exists = if_exists or ""
        out = [f"DROP {what.upper()} {if_exists}{name} {on}"]
        if name in known:
            out.append(f"DROP {what.upper()} {if_exists}{name}_local {on}")
        return out
    raise ClusterSqlError(f"no cluster form for statement: {stmt[:80]!r}")


def _create_table(stmt: str, m: re.Match[str], cluster: str, database: str, on: str) -> list[str]:
    if_not, name = m.group(1) or "", m.group(2)
    body_start = m.end() - 1  # the "(" of the column list
    body_end = _matching_paren(stmt, body_start)
    columns = stmt[body_start : body_end + 1]
    tail = stmt[body_end + 1 :]
    e = _ENGINE.search(tail)
    if e is None or not e.group(1).endswith("MergeTree"):
        raise ClusterSqlError(f"{name}: only MergeTree-family tables have a cluster form")
    engine = e.group(1)
    if engine.startswith("Replicated"):
        raise ClusterSqlError(f"{name}: already Replicated; write the single-server form")
    local = f"{name}_local"
    path = quote_str(REPLICA_PATH.format(table=local))
    if e.group(2):  # engine arguments: keep them after the replication pair
        args_end = _matching_paren(tail, e.end() - 1)
        args = tail[e.end() : args_end].strip()
        after = tail[args_end + 1 :]
    else:
        args = ""
        after = tail[e.end(1) :]
    replicated = f"Replicated{engine}({path}, '{{replica}}'{', ' + args if args else ''})"
    local_sql = (
        f"CREATE TABLE {if_not}{local} {on}\n{columns}"
        f"{tail[: e.start()]}ENGINE = {replicated}{after}"
    )
    key = _sharding_key(name, columns, after)
    dist_sql = (
        f"CREATE TABLE {if_not}{name} {on} AS {local}\n"
        f"ENGINE = Distributed({quote_str(cluster)}, {quote_str(database)}, {local}, {key})"
    )
    return [local_sql, dist_sql]


def _sharding_key(name: str, columns: str, clauses: str) -> str:
    """cityHash64(call_id) when there is a call_id, else cityHash64 of the sort key.

    Rows that ReplacingMergeTree or SummingMergeTree must meet share their sort key, so
    hashing it keeps them on one shard.
    """
    if re.search(r"^\s*call_id\s", columns, re.MULTILINE):
        return "cityHash64(call_id)"
    m = re.search(r"\bORDER\s+BY\s+", clauses, re.IGNORECASE)
    if m is None:
        raise ClusterSqlError(f"{name}: no ORDER BY to shard by")
    rest = clauses[m.end() :]
    key = rest[1 : _matching_paren(rest, 0)] if rest.startswith("(") else rest.splitlines()[0]
    if not key or key.strip() == "tuple()":
        return "rand()"
    return f"cityHash64({key.strip()})"


def _local_ref(m: re.Match[str], known: set[str]) -> str:
    word, table = m.groups()
    return f"{word} {table}_local" if table in known else m.group(0)


def _matching_paren(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at `start` (quotes respected)."""
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ClusterSqlError(f"unbalanced parentheses in: {text[start : start + 80]!r}")
