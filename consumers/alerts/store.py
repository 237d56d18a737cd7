"""The alerts' ClickHouse adapter: counts from sip_minute_counts, evidence from
sip_messages and anomalies, alert state and history (tables of 0003_alerts.sql).

Every call goes through `client` (a clickhouse-connect client, `chdb://` or `http://`)
under `lock` when one is given, so a process that shares one chDB handle between threads
(`hepwatch run`) can pass the lock that guards it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from consumers.alerts.evaluate import (
    AlertState,
    GroupCount,
    Transition,
    group_counts,
    group_key,
    window_bounds,
)
from consumers.alerts.rules import Rule

STATE_COLUMNS = [
    "rule",
    "group_key",
    "labels",
    "state",
    "since",
    "last_true",
    "fired_at",
    "resolved_at",
    "value",
    "baseline",
    "threshold",
    "sent",
    "updated_at",
    "version",
]
HISTORY_COLUMNS = [
    "time",
    "rule",
    "group_key",
    "labels",
    "from_state",
    "to_state",
    "value",
    "baseline",
    "threshold",
    "severity",
    "summary",
    "evidence",
]


def to_dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def from_dt(value: datetime) -> float:
    """Epoch seconds from a datetime ClickHouse returned (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def peer_text(value: Any) -> str:
    """An IPv6 column value as people write it: IPv4-mapped addresses in dotted form."""
    addr = ipaddress.ip_address(value) if not isinstance(value, ipaddress.IPv6Address) else value
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def match_filter(
    rule: Rule, labels: dict[str, str] | None, *, messages: bool
) -> tuple[list[str], dict[str, Any]]:
    """WHERE terms and parameters for the rule's match (and one group's labels), on
    sip_minute_counts (`messages=False`) or sip_messages (`messages=True`)."""
    m = rule.match
    terms: list[str] = []
    params: dict[str, Any] = {}
    for column, values, kind in (
        ("method", m.method, "Array(String)"),
        ("status", m.status, "Array(UInt16)"),
        ("node_name", m.node_name, "Array(String)"),
        ("user_agent", m.user_agent, "Array(String)"),
    ):
        if values:
            terms.append(f"{column} IN {{m_{column}:{kind}}}")
            params[f"m_{column}"] = list(values)
    if messages and not m.retransmissions:
        terms.append("NOT retransmission")
    for column, value in sorted((labels or {}).items()):
        if column == "peer":
            terms.append(f"{'src_ip' if messages else 'peer'} = toIPv6({{g_peer:String}})")
        else:
            terms.append(f"{column} = {{g_{column}:String}}")
        params[f"g_{column}"] = value
    return terms, params


_PARAM = re.compile(r"\{(\w+):([^}]+)\}")


def inline(sql: str, params: dict[str, Any]) -> str:
    """The query with its {name:Type} parameters written as literals (for links)."""

    def literal(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{text}'"

    return _PARAM.sub(lambda m: literal(params[m.group(1)]), sql)


class AlertStore:
    def __init__(self, client: Any, lock: AbstractContextManager[Any] | None = None) -> None:
        self.client = client
        self._lock: AbstractContextManager[Any] = lock or contextlib.nullcontext()
        self._version = 0

    # -- counts ---------------------------------------------------------------------------

    def count_rows(self, rule: Rule, now: float) -> list[tuple[dict[str, str], float, list[float]]]:
        """One row per group: (labels, count in the current window, counts of the baseline
        windows that had messages). Baseline windows are read only for the groups whose
        current count reaches min_count (the others cannot hold)."""
        base_start, start, end = window_bounds(rule, now)
        terms, params = match_filter(rule, None, messages=False)
        value = "sum(messages)" if rule.match.retransmissions else "sum(messages - retransmissions)"
        cols = list(rule.group_by)
        current = rule.baseline_windows
        params.update(base=base_start, start=start, end=end, win=int(rule.window), cur=current)
        where = [
            *terms,
            "minute >= toDateTime({base:UInt32}, 'UTC')",
            "minute < toDateTime({end:UInt32}, 'UTC')",
        ]
        if current and cols:
            tup = "(" + ", ".join(cols) + ")"
            inner = " AND ".join(
                [
                    *terms,
                    "minute >= toDateTime({start:UInt32}, 'UTC')",
                    "minute < toDateTime({end:UInt32}, 'UTC')",
                ]
            )
            where.append(
                f"(minute >= toDateTime({{start:UInt32}}, 'UTC') OR {tup} IN (SELECT "
                f"{', '.join(cols)} FROM sip_minute_counts WHERE {inner} "
                f"GROUP BY {', '.join(cols)} HAVING {value} >= {{min_count:UInt64}}))"
            )
            params["min_count"] = rule.min_count
        window = "intDiv(toUInt32(minute) - {base:UInt32}, {win:UInt32}) AS w"
        per_window = (
            f"SELECT {', '.join([*cols, window])}, {value} AS n FROM sip_minute_counts "
            f"WHERE {' AND '.join(where)} GROUP BY {', '.join([*cols, 'w'])}"
        )
        group_by = f" GROUP BY {', '.join(cols)}" if cols else ""
        sql = (
            f"SELECT {''.join(c + ', ' for c in cols)}sumIf(n, w = {{cur:UInt32}}) AS value, "
            f"groupArrayIf(n, w < {{cur:UInt32}} AND n > 0) AS past "
            f"FROM ({per_window}){group_by} HAVING value > 0"
        )
        with self._lock:
            rows = self.client.query(sql, parameters=params).result_rows
        out = []
        for row in rows:
            labels = {
                col: peer_text(v) if col == "peer" else str(v)
                for col, v in zip(cols, row, strict=False)
            }
            out.append((labels, float(row[-2]), [float(x) for x in row[-1]]))
        return out

    def counts(self, rule: Rule, now: float) -> dict[str, GroupCount]:
        return group_counts(rule, self.count_rows(rule, now))

    def latest_minute(self) -> float | None:
        """The newest minute with any message (epoch seconds), None when there is none."""
        sql = "SELECT max(minute), count() FROM sip_minute_counts"
        with self._lock:
            latest, rows = self.client.query(sql).result_rows[0]
        return from_dt(latest) if rows else None

    # -- evidence -------------------------------------------------------------------------

    def messages_sql(
        self, rule: Rule, labels: dict[str, str], start: float, end: float, limit: int = 100
    ) -> str:
        """A self-contained query listing the messages behind an alert (for links)."""
        terms, params = match_filter(rule, labels, messages=True)
        terms += [
            "event_time >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC')",
            "event_time < fromUnixTimestamp64Milli({t1:Int64}, 'UTC')",
        ]
        params.update(t0=int(start * 1000), t1=int(end * 1000))
        sql = (
            "SELECT event_time, node_name, call_id, method, status, src_ip, user_agent "
            f"FROM sip_messages WHERE {' AND '.join(terms)} ORDER BY event_time LIMIT {limit}"
        )
        return inline(sql, params)

    def evidence(
        self, rule: Rule, labels: dict[str, str], start: float, end: float, top: int = 5
    ) -> dict[str, list[list[Any]]]:
        """The top call-ids, peers and user agents of the matching messages in [start, end),
        and the anomalies those calls raised meanwhile: {kind: [[value, count], ...]}."""
        terms, params = match_filter(rule, labels, messages=True)
        terms += [
            "event_time >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC')",
            "event_time < fromUnixTimestamp64Milli({t1:Int64}, 'UTC')",
        ]
        params.update(t0=int(start * 1000), t1=int(end * 1000), top=top)
        where = " AND ".join(terms)
        parts = [
            f"SELECT '{kind}' AS kind, {expr} AS v, count() AS c FROM sip_messages "
            f"WHERE {where} GROUP BY v ORDER BY c DESC, v LIMIT {{top:UInt32}}"
            for kind, expr in (
                ("call_ids", "call_id"),
                ("peers", "IPv6NumToString(src_ip)"),
                ("user_agents", "toString(user_agent)"),
            )
        ]
        parts.append(
            "SELECT 'anomalies' AS kind, toString(anomaly) AS v, count() AS c FROM anomalies "
            "WHERE event_time >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC') "
            "AND event_time < fromUnixTimestamp64Milli({t1:Int64}, 'UTC') "
            f"AND call_id IN (SELECT call_id FROM sip_messages WHERE {where}) "
            "GROUP BY v ORDER BY c DESC, v LIMIT {top:UInt32}"
        )
        with self._lock:
            rows = self.client.query(" UNION ALL ".join(parts), parameters=params).result_rows
        out: dict[str, list[list[Any]]] = {
            "call_ids": [],
            "peers": [],
            "user_agents": [],
            "anomalies": [],
        }
        for kind, value, count in rows:
            if kind == "peers":
                value = peer_text(value)
            out[kind].append([value, int(count)])
        for items in out.values():
            items.sort(key=lambda item: (-item[1], item[0]))
        return out

    # -- state ----------------------------------------------------------------------------

    def has_tables(self) -> bool:
        """Whether alert_state and alert_history exist (migration 0003 applied)."""
        sql = (
            "SELECT count() FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('alert_state', 'alert_history')"
        )
        with self._lock:
            return int(self.client.query(sql).result_rows[0][0]) == 2

    def load_states(self) -> list[AlertState]:
        """The latest state of every (rule, group) on record."""
        sql = f"SELECT {', '.join(STATE_COLUMNS)} FROM alert_state FINAL"
        with self._lock:
            rows = self.client.query(sql).result_rows
        states = []
        for row in rows:
            r = dict(zip(STATE_COLUMNS, row, strict=True))
            self._version = max(self._version, int(r["version"]))
            states.append(
                AlertState(
                    rule=r["rule"],
                    labels=dict(r["labels"]),
                    state=r["state"],
                    since=from_dt(r["since"]),
                    last_true=from_dt(r["last_true"]),
                    value=r["value"],
                    baseline=r["baseline"],
                    limit=r["threshold"],
                    fired_at=from_dt(r["fired_at"]) if r["fired_at"] else None,
                    resolved_at=from_dt(r["resolved_at"]) if r["resolved_at"] else None,
                    sent={k: from_dt(v) for k, v in r["sent"].items()},
                    updated_at=from_dt(r["updated_at"]),
                )
            )
        return states

    def _next_version(self) -> int:
        # Wall-clock nanoseconds, strictly increasing here: evaluation times may be
        # replayed out of order (tests), versions must still order the writes.
        self._version = max(time.time_ns(), self._version + 1)
        return self._version

    def save_states(self, states: Iterable[AlertState]) -> int:
        rows = [
            [
                s.rule,
                s.key,
                s.labels,
                s.state,
                to_dt(s.since),
                to_dt(s.last_true),
                to_dt(s.fired_at) if s.fired_at is not None else None,
                to_dt(s.resolved_at) if s.resolved_at is not None else None,
                float(s.value),
                s.baseline,
                float(s.limit),
                {k: to_dt(v) for k, v in s.sent.items()},
                to_dt(s.updated_at),
                self._next_version(),
            ]
            for s in states
        ]
        if rows:
            with self._lock:
                self.client.insert("alert_state", rows, column_names=STATE_COLUMNS)
        return len(rows)

    def append_history(
        self,
        transitions: Iterable[Transition],
        severity: dict[str, str],
        summaries: dict[tuple[str, str], str],
        evidence: dict[tuple[str, str], dict[str, Any]],
    ) -> int:
        """Append transitions; summaries and evidence keyed by (rule, group_key)."""
        rows = []
        for t in transitions:
            key = (t.rule, group_key(t.labels))
            rows.append(
                [
                    to_dt(t.at),
                    t.rule,
                    key[1],
                    t.labels,
                    t.from_state,
                    t.to_state,
                    float(t.value),
                    t.baseline,
                    float(t.limit),
                    severity.get(t.rule, ""),
                    summaries.get(key, ""),
                    json.dumps(evidence.get(key, {}), ensure_ascii=False),
                ]
            )
        if rows:
            with self._lock:
                self.client.insert("alert_history", rows, column_names=HISTORY_COLUMNS)
        return len(rows)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        sql = (
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM alert_history "
            "ORDER BY time DESC LIMIT {limit:UInt32}"
        )
        with self._lock:
            rows = self.client.query(sql, parameters={"limit": limit}).result_rows
        return [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows]
