"""Records to ClickHouse columns: which table each record kind goes to and how its fields map.

The column names are the contract of `schemas/migrations/0001_core_tables.sql`. Columns are
built with one list comprehension per column over a batch of records (much cheaper than
row tuples), and addresses are turned into 16-byte IPv6 values through a cache (`AddressPacker`):
clickhouse-connect parses every IPv6 value with `ipaddress.ip_address` on insert, which was
half the insert time; the sink sends these columns typed as FixedString(16), which the
driver copies as they are and ClickHouse casts to IPv6 byte for byte.

Leg records are not stored here: they feed the second (leg correlation) stage.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.records import (
    AnomalyRecord,
    DialogRecord,
    MessageRecord,
    Record,
    SessionChangeRecord,
)

log = logging.getLogger(__name__)

V6_ZERO = bytes(16)
_V4_MAPPED = bytes(10) + b"\xff\xff"
SOURCE_COLUMNS = ("src_partition", "src_offset")


class AddressPacker:
    """Address strings to 16-byte IPv6 values (IPv4 as ::ffff:a.b.c.d), with a cache.

    Capture addresses repeat a lot (proxies, SBCs, trunks), so a dict lookup replaces a parse
    for nearly every value. "" and unparsable text become `::` and are counted in `invalid`
    (the raw message keeps the truth).
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._cache: dict[str, bytes] = {"": V6_ZERO}
        self.max_entries = max_entries
        self.invalid = 0

    def __call__(self, text: str) -> bytes:
        packed = self._cache.get(text)
        return packed if packed is not None else self._miss(text)

    def column(self, values: Sequence[str]) -> list[bytes]:
        get = self._cache.get
        miss = self._miss
        return [get(v) or miss(v) for v in values]

    def _miss(self, text: str) -> bytes:
        packed = pack_address(text)
        if packed is None:
            self.invalid += 1
            if self.invalid <= 10 or self.invalid % 10_000 == 0:
                log.warning(
                    "address %r is not IPv4 or IPv6; stored as :: (%d so far)", text, self.invalid
                )
            packed = V6_ZERO
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
            self._cache[""] = V6_ZERO
        self._cache[text] = packed
        return packed


def pack_address(text: str) -> bytes | None:
    """One address as 16 bytes, or None when it is not an address ("" is ::)."""
    if not text:
        return V6_ZERO
    if ":" in text:
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.split("%", 1)[0]  # scope id (fe80::1%eth0)
        try:
            return socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            return None
    try:
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None


def map_field(fields: dict[str, Any]) -> dict[str, str]:
    """A family's `fields` as Map(String, String): strings as they are, the rest as JSON."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
        for k, v in fields.items()
    }


ColumnBuilder = Callable[[list[Any], AddressPacker], list[list[Any]]]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table and how a batch of its records becomes columns (`columns` order, then source)."""

    table: str
    kind: str
    columns: tuple[str, ...]
    build: ColumnBuilder
    sources: tuple[str, ...]
    """Where each column's value comes from, for the C Native encoder (`native.py`): an
    attribute name; "name?" with None as "" or []; "!name" for `name is not None`;
    "observations.x" for the Array of x over the observations; "map:name" for
    `map_field(name)`. Must say what `build` does (tests compare both paths)."""

    @property
    def all_columns(self) -> tuple[str, ...]:
        return self.columns + SOURCE_COLUMNS


MESSAGE_COLUMNS = (
    "id", "event_time", "node_name", "capture_id", "call_id", "is_request", "method", "status",
    "reason_phrase", "cseq", "from_tag", "to_tag", "direction", "dialog_state", "origin",
    "retransmission", "transport", "src_ip", "src_port", "dst_ip", "dst_port", "user_agent",
    "has_allow", "allow", "has_supported", "supported", "require", "session_expires",
    "refresher", "min_se", "has_sdp", "sdp_role", "malformed", "correlation_id", "x_cid",
    "obs_time", "obs_src_ip", "obs_src_port", "obs_dst_ip", "obs_dst_port", "obs_hop",
    "obs_ref", "obs_copies", "raw",
)  # fmt: skip


def message_columns(recs: list[MessageRecord], ip: AddressPacker) -> list[list[Any]]:
    obs = [r.observations for r in recs]
    ipcol = ip.column
    if isinstance(ip, AddressPacker):
        get, miss = ip._cache.get, ip._miss  # inlined: two lookups per observation
        obs_src = [[get(o.src_ip) or miss(o.src_ip) for o in os] for os in obs]
        obs_dst = [[get(o.dst_ip) or miss(o.dst_ip) for o in os] for os in obs]
    else:
        obs_src = [ipcol([o.src_ip for o in os]) for os in obs]
        obs_dst = [ipcol([o.dst_ip for o in os]) for os in obs]
    return [
        [r.id for r in recs],
        [r.event_time_us for r in recs],
        [r.node for r in recs],
        [r.capture_id for r in recs],
        [r.call_id for r in recs],
        [r.is_request for r in recs],
        [r.method for r in recs],
        [r.status for r in recs],
        [r.reason_phrase for r in recs],
        [r.cseq for r in recs],
        [r.from_tag for r in recs],
        [r.to_tag for r in recs],
        [r.direction for r in recs],
        [r.dialog_state for r in recs],
        [r.origin for r in recs],
        [r.retransmission for r in recs],
        [r.transport for r in recs],
        ipcol([r.src_ip for r in recs]),
        [r.src_port for r in recs],
        ipcol([r.dst_ip for r in recs]),
        [r.dst_port for r in recs],
        [r.user_agent for r in recs],
        [r.allow is not None for r in recs],
        [r.allow or [] for r in recs],
        [r.supported is not None for r in recs],
        [r.supported or [] for r in recs],
        [r.require or [] for r in recs],
        [r.session_expires for r in recs],
        [r.refresher or "" for r in recs],
        [r.min_se for r in recs],
        [r.has_sdp for r in recs],
        [r.sdp_role for r in recs],
        [r.malformed for r in recs],
        [r.correlation_id for r in recs],
        [r.x_cid for r in recs],
        [[o.ts_us for o in os] for os in obs],
        obs_src,
        [[o.src_port for o in os] for os in obs],
        obs_dst,
        [[o.dst_port for o in os] for os in obs],
        [[o.hop for o in os] for os in obs],
        [[o.ref for o in os] for os in obs],
        [[o.copies for o in os] for os in obs],
        [r.raw for r in recs],
    ]


SESSION_CHANGE_COLUMNS = (
    "id", "event_time", "node_name", "call_id", "caller_tag", "callee_tag", "method", "cseq",
    "direction", "dialog_state", "status", "status_class", "time_to_final_ms", "intent",
    "offer_in", "sdp_version_before", "sdp_version_after", "had_reliable_1xx",
    "retransmissions", "ua_sender", "ua_peer", "evidence", "fields",
)  # fmt: skip


def session_change_columns(recs: list[SessionChangeRecord], ip: AddressPacker) -> list[list[Any]]:
    return [
        [r.id for r in recs],
        [r.event_time_us for r in recs],
        [r.node for r in recs],
        [r.call_id for r in recs],
        [r.caller_tag for r in recs],
        [r.callee_tag for r in recs],
        [r.method for r in recs],
        [r.cseq for r in recs],
        [r.direction for r in recs],
        [r.dialog_state for r in recs],
        [r.status for r in recs],
        [r.status_class for r in recs],
        [r.time_to_final_ms for r in recs],
        [r.intent for r in recs],
        [r.offer_in for r in recs],
        [r.sdp_version_before for r in recs],
        [r.sdp_version_after for r in recs],
        [r.had_reliable_1xx for r in recs],
        [r.retransmissions for r in recs],
        [r.ua_sender for r in recs],
        [r.ua_peer for r in recs],
        [list(r.evidence) for r in recs],
        [map_field(r.fields) for r in recs],
    ]


DIALOG_COLUMNS = (
    "id", "node_name", "call_id", "caller_tag", "callee_tag", "state", "start_time",
    "early_time", "confirmed_time", "end_time", "end_reason", "initial_status",
    "call_id_owner", "record_routed", "caller_ua", "callee_ua", "caller_ip", "callee_ip",
    "reinvites", "updates", "pracks", "anomalies", "x_cid", "session_id_pair", "icid",
    "correlation_id",
)  # fmt: skip


def dialog_columns(recs: list[DialogRecord], ip: AddressPacker) -> list[list[Any]]:
    return [
        [r.id for r in recs],
        [r.node for r in recs],
        [r.call_id for r in recs],
        [r.caller_tag for r in recs],
        [r.callee_tag for r in recs],
        [r.state for r in recs],
        [r.start_time_us for r in recs],
        [r.early_time_us for r in recs],
        [r.confirmed_time_us for r in recs],
        [r.end_time_us for r in recs],
        [r.end_reason for r in recs],
        [r.initial_status for r in recs],
        [r.call_id_owner for r in recs],
        [r.record_routed for r in recs],
        [r.caller_ua for r in recs],
        [r.callee_ua for r in recs],
        ip.column([r.caller_ip for r in recs]),
        ip.column([r.callee_ip for r in recs]),
        [r.reinvites for r in recs],
        [r.updates for r in recs],
        [r.pracks for r in recs],
        [r.anomalies for r in recs],
        [r.x_cid for r in recs],
        [r.session_id_pair for r in recs],
        [r.icid for r in recs],
        [r.correlation_id for r in recs],
    ]


ANOMALY_COLUMNS = (
    "id", "event_time", "detected_at", "anomaly", "severity", "confidence", "capture_id",
    "node_name", "call_id", "caller_tag", "callee_tag", "dialog_state", "direction", "method",
    "cseq", "status", "reason", "src_ip", "src_port", "dst_ip", "dst_port", "transport",
    "ua_sender", "ua_peer", "hep_correlation_id", "x_cid", "session_id_pair", "icid",
    "call_id_owner", "family", "evidence", "fields",
)  # fmt: skip


def anomaly_columns(recs: list[AnomalyRecord], ip: AddressPacker) -> list[list[Any]]:
    return [
        [r.id for r in recs],
        [r.event_time_us for r in recs],
        [r.detected_at_us for r in recs],
        [r.anomaly for r in recs],
        [str(r.severity) for r in recs],
        [r.confidence for r in recs],
        [r.capture_id for r in recs],
        [r.node for r in recs],
        [r.call_id for r in recs],
        [r.caller_tag for r in recs],
        [r.callee_tag for r in recs],
        [r.dialog_state for r in recs],
        [r.direction for r in recs],
        [r.method for r in recs],
        [r.cseq for r in recs],
        [r.status for r in recs],
        [r.reason for r in recs],
        ip.column([r.src_ip for r in recs]),
        [r.src_port for r in recs],
        ip.column([r.dst_ip for r in recs]),
        [r.dst_port for r in recs],
        [r.transport for r in recs],
        [r.ua_sender for r in recs],
        [r.ua_peer for r in recs],
        [r.hep_correlation_id for r in recs],
        [r.x_cid for r in recs],
        [r.session_id_pair for r in recs],
        [r.icid for r in recs],
        [r.call_id_owner for r in recs],
        [r.family for r in recs],
        [list(r.evidence) for r in recs],
        [map_field(r.fields) for r in recs],
    ]


def sources(columns: tuple[str, ...], **renamed: str) -> tuple[str, ...]:
    """Each column's source: its own name unless renamed."""
    unknown = set(renamed) - set(columns)
    if unknown:
        raise AssertionError(f"sources for unknown columns {sorted(unknown)}")
    return tuple(renamed.get(c, c) for c in columns)


_OBS = {f"obs_{x}": f"observations.{x}"
        for x in ("src_ip", "src_port", "dst_ip", "dst_port", "hop", "ref", "copies")}  # fmt: skip
MESSAGE_SOURCES = sources(
    MESSAGE_COLUMNS, event_time="event_time_us", node_name="node", has_allow="!allow",
    allow="allow?", has_supported="!supported", supported="supported?", require="require?",
    refresher="refresher?", obs_time="observations.ts_us", **_OBS,
)  # fmt: skip
SESSION_CHANGE_SOURCES = sources(
    SESSION_CHANGE_COLUMNS, event_time="event_time_us", node_name="node", fields="map:fields"
)
DIALOG_SOURCES = sources(
    DIALOG_COLUMNS, node_name="node", start_time="start_time_us", early_time="early_time_us",
    confirmed_time="confirmed_time_us", end_time="end_time_us",
)  # fmt: skip
ANOMALY_SOURCES = sources(
    ANOMALY_COLUMNS, event_time="event_time_us", detected_at="detected_at_us", node_name="node",
    fields="map:fields",
)  # fmt: skip

TABLES: dict[str, TableSpec] = {
    spec.kind: spec
    for spec in (
        TableSpec("sip_messages", "message", MESSAGE_COLUMNS, message_columns, MESSAGE_SOURCES),
        TableSpec("session_changes", "session_change", SESSION_CHANGE_COLUMNS,
                  session_change_columns, SESSION_CHANGE_SOURCES),
        TableSpec("dialogs", "dialog", DIALOG_COLUMNS, dialog_columns, DIALOG_SOURCES),
        TableSpec("anomalies", "anomaly", ANOMALY_COLUMNS, anomaly_columns, ANOMALY_SOURCES),
    )
}  # fmt: skip
"""Record kind -> its table. Kinds not listed (leg) are not stored by the ClickHouse sink."""

IGNORED_KINDS = frozenset({"leg"})


def columns_of(spec: TableSpec, records: list[Record], ip: AddressPacker) -> list[list[Any]]:
    """The table's columns (without the source columns) for a batch of its records."""
    cols = spec.build(records, ip)
    if len(cols) != len(spec.columns):  # a builder out of step with its column names
        raise AssertionError(f"{spec.table}: {len(cols)} columns built for {len(spec.columns)}")
    return cols
