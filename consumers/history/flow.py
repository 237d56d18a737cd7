"""Load one call back out of ClickHouse: its messages with every captured copy, its dialogs,
its anomalies, and the other legs of the same call through a B2BUA or SBC.

Rows become the records the consumers wrote (`consumers.records`), so the ladder code draws
a stored call exactly as `analyze` draws a live one.

Other legs are found as the leg correlator finds them (PROTOCOL.md B.13, C.12): the HEP
correlation id, an RFC 7989 Session-ID UUID, X-CID (a B-leg's X-CID is its A-leg's Call-ID),
the P-Charging-Vector icid, and the leg pairs named by C.12 anomalies. Keys come from the
messages, dialogs and anomalies of the legs known so far, searched within a time window
around them (the day partitions then prune the scan), for a bounded number of rounds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from consumers.history.query import QueryError
from consumers.records import AnomalyRecord, DialogRecord, MessageRecord, ObservationRow

NIL_SESSION_ID = "0" * 32
MAX_LEGS = 12
MAX_ROUNDS = 3


class CallNotFound(LookupError):
    """No message, dialog or anomaly has this Call-ID."""


@dataclass(slots=True)
class Leg:
    call_id: str
    found_by: str  # "requested", or the key kind: x_cid, hep_correlation_id, session_id, ...
    key: str = ""  # the shared value (for a C.12 pair: the correlator's method)


@dataclass(slots=True)
class CallFlow:
    call_id: str
    legs: list[Leg]
    messages: list[MessageRecord] = field(default_factory=list)
    dialogs: list[DialogRecord] = field(default_factory=list)
    anomalies: list[AnomalyRecord] = field(default_factory=list)

    def leg_of(self, call_id: str) -> int:
        for i, leg in enumerate(self.legs):
            if leg.call_id == call_id:
                return i
        return -1


def load_call(
    client: Client, call_id: str, *, legs: bool = True, window_minutes: int = 60
) -> CallFlow:
    """The call with its related legs (raises CallNotFound for an unknown Call-ID)."""
    try:
        span = _time_span(client, [call_id])
        if span is None:
            raise CallNotFound(call_id)
        found = [Leg(call_id, "requested")]
        if legs:
            found += _related_legs(client, call_id, span, window_minutes)
        ids = [leg.call_id for leg in found]
        flow = CallFlow(call_id, found)
        flow.messages = _messages(client, ids)
        first: dict[str, int] = {}
        for m in flow.messages:
            first.setdefault(m.call_id, m.event_time_us)
        # legs in order of their first message: an A-leg comes before the B-leg it caused
        found.sort(key=lambda leg: (leg.call_id not in first, first.get(leg.call_id, 0)))
        flow.dialogs = _dialogs(client, ids)
        flow.anomalies = _anomalies(client, ids)
    except ClickHouseError as exc:
        raise QueryError(str(exc).strip().splitlines()[0]) from exc
    return flow


# -- finding the legs -------------------------------------------------------------------------


def _time_span(client: Client, ids: list[str]) -> tuple[dt.datetime, dt.datetime] | None:
    rows = client.query(
        """
        SELECT min(t), max(t), count() FROM (
            SELECT event_time AS t FROM sip_messages WHERE call_id IN {ids:Array(String)}
            UNION ALL
            SELECT start_time AS t FROM dialogs WHERE call_id IN {ids:Array(String)}
            UNION ALL
            SELECT end_time AS t FROM dialogs WHERE call_id IN {ids:Array(String)}
            UNION ALL
            SELECT event_time AS t FROM anomalies WHERE call_id IN {ids:Array(String)}
        )
        """,
        parameters={"ids": ids},
    ).result_rows
    lo, hi, n = rows[0]
    return (lo, hi) if n else None


_KEYS_SQL = """
SELECT DISTINCT kind, key FROM (
    SELECT 'x_cid' AS kind, x_cid AS key FROM sip_messages
        WHERE call_id IN {ids:Array(String)} AND x_cid != ''
    UNION ALL
    SELECT 'hep_correlation_id', correlation_id FROM sip_messages
        WHERE call_id IN {ids:Array(String)} AND correlation_id != ''
    UNION ALL
    SELECT 'x_cid', x_cid FROM dialogs WHERE call_id IN {ids:Array(String)} AND x_cid != ''
    UNION ALL
    SELECT 'hep_correlation_id', correlation_id FROM dialogs
        WHERE call_id IN {ids:Array(String)} AND correlation_id != ''
    UNION ALL
    SELECT 'icid', icid FROM dialogs WHERE call_id IN {ids:Array(String)} AND icid != ''
    UNION ALL
    SELECT 'session_id', arrayJoin(splitByChar(',', session_id_pair)) FROM dialogs
        WHERE call_id IN {ids:Array(String)} AND session_id_pair != ''
    UNION ALL
    SELECT 'x_cid', x_cid FROM anomalies WHERE call_id IN {ids:Array(String)} AND x_cid != ''
    UNION ALL
    SELECT 'hep_correlation_id', hep_correlation_id FROM anomalies
        WHERE call_id IN {ids:Array(String)} AND hep_correlation_id != ''
    UNION ALL
    SELECT 'icid', icid FROM anomalies WHERE call_id IN {ids:Array(String)} AND icid != ''
    UNION ALL
    SELECT 'session_id', arrayJoin(splitByChar(',', session_id_pair)) FROM anomalies
        WHERE call_id IN {ids:Array(String)} AND session_id_pair != ''
)
"""

# Call-IDs that share a key with the known legs, and which key; {lo}/{hi} bound the scan.
_MATCH_SQL = """
SELECT DISTINCT call_id, kind, key FROM (
    SELECT call_id, 'x_cid' AS kind, x_cid AS key FROM sip_messages
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND x_cid != '' AND (x_cid IN {ids:Array(String)} OR x_cid IN {x_cids:Array(String)})
    UNION ALL
    SELECT call_id, 'x_cid', call_id FROM sip_messages
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND call_id IN {x_cids:Array(String)}
    UNION ALL
    SELECT call_id, 'hep_correlation_id', correlation_id FROM sip_messages
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND correlation_id IN {hep:Array(String)}
    UNION ALL
    SELECT call_id, 'x_cid', x_cid FROM dialogs
        WHERE start_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND x_cid != '' AND (x_cid IN {ids:Array(String)} OR x_cid IN {x_cids:Array(String)})
    UNION ALL
    SELECT call_id, 'hep_correlation_id', correlation_id FROM dialogs
        WHERE start_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND correlation_id IN {hep:Array(String)}
    UNION ALL
    SELECT call_id, 'icid', icid FROM dialogs
        WHERE start_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND icid IN {icids:Array(String)}
    UNION ALL
    SELECT call_id, 'session_id', arrayJoin(arrayIntersect(
            splitByChar(',', session_id_pair), {sids:Array(String)})) FROM dialogs
        WHERE start_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND hasAny(splitByChar(',', session_id_pair), {sids:Array(String)})
    UNION ALL
    SELECT call_id, 'icid', icid FROM anomalies
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND icid IN {icids:Array(String)}
    UNION ALL
    SELECT call_id, 'session_id', arrayJoin(arrayIntersect(
            splitByChar(',', session_id_pair), {sids:Array(String)})) FROM anomalies
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND hasAny(splitByChar(',', session_id_pair), {sids:Array(String)})
    UNION ALL
    SELECT arrayJoin([fields['leg_a_call_id'], fields['leg_b_call_id']]) AS call_id,
            concat('c12:', toString(anomaly)), fields['correlation_method'] FROM anomalies
        WHERE event_time BETWEEN {lo:DateTime64(6)} AND {hi:DateTime64(6)}
            AND family = 'C.12' AND (fields['leg_a_call_id'] IN {ids:Array(String)}
                OR fields['leg_b_call_id'] IN {ids:Array(String)})
)
WHERE call_id != '' AND call_id NOT IN {ids:Array(String)}
ORDER BY call_id, kind, key
"""


def _related_legs(
    client: Client, call_id: str, span: tuple[dt.datetime, dt.datetime], window_minutes: int
) -> list[Leg]:
    margin = dt.timedelta(minutes=window_minutes)
    lo, hi = span[0] - margin, span[1] + margin
    known = [call_id]
    legs: list[Leg] = []
    frontier = [call_id]
    for _ in range(MAX_ROUNDS):
        keys: dict[str, set[str]] = {"x_cid": set(), "hep_correlation_id": set()}
        keys |= {"icid": set(), "session_id": set()}
        for kind, key in client.query(_KEYS_SQL, parameters={"ids": frontier}).result_rows:
            if key and key != NIL_SESSION_ID:
                keys[kind].add(key)
        params: dict[str, Any] = {
            "lo": lo,
            "hi": hi,
            "ids": known,
            "x_cids": sorted(keys["x_cid"]),
            "hep": sorted(keys["hep_correlation_id"]),
            "icids": sorted(keys["icid"]),
            "sids": sorted(keys["session_id"]),
        }
        best: dict[str, tuple[str, str]] = {}
        for other, kind, key in client.query(_MATCH_SQL, parameters=params).result_rows:
            if other not in best or _rank(kind) < _rank(best[other][0]):
                best[other] = (kind, key)
        frontier = []
        for other, (kind, key) in best.items():
            if other in known or len(known) >= MAX_LEGS:
                continue
            known.append(other)
            frontier.append(other)
            legs.append(Leg(other, kind, key))
        if not frontier:
            break
    return legs


# B.13's order of trust in a shared key; C.12 pairs name legs the correlator already linked.
_PRIORITY = ("hep_correlation_id", "session_id", "x_cid", "icid")


def _rank(kind: str) -> int:
    return _PRIORITY.index(kind) if kind in _PRIORITY else len(_PRIORITY)


# -- loading the rows -------------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    "id, toUnixTimestamp64Micro(event_time), node_name, capture_id, call_id, is_request, method,"
    " status, reason_phrase, cseq, from_tag, to_tag, direction, dialog_state, origin,"
    " retransmission, transport, src_ip, src_port, dst_ip, dst_port, user_agent, has_allow, allow,"
    " has_supported, supported, require, session_expires, refresher, min_se, has_sdp, sdp_role,"
    " malformed, correlation_id, x_cid, arrayMap(t -> toUnixTimestamp64Micro(t), obs_time),"
    " obs_src_ip, obs_src_port, obs_dst_ip, obs_dst_port, obs_hop, obs_ref, obs_copies, raw"
)


def _messages(client: Client, ids: list[str]) -> list[MessageRecord]:
    result = client.query(
        f"SELECT {_MESSAGE_COLUMNS} FROM sip_messages WHERE call_id IN {{ids:Array(String)}}"
        " ORDER BY event_time, cseq, id LIMIT 1 BY id",
        parameters={"ids": ids},
        column_formats={"raw": "bytes"},
    )
    out = []
    for r in result.result_rows:
        (id_, t, node, capture_id, call_id, is_request, method, status, reason, cseq, from_tag,
         to_tag, direction, state, origin, retrans, transport, src_ip, src_port, dst_ip, dst_port,
         ua, has_allow, allow, has_supported, supported, require, se, refresher, min_se, has_sdp,
         sdp_role, malformed, correlation_id, x_cid, obs_t, obs_src, obs_sport, obs_dst,
         obs_dport, obs_hop, obs_ref, obs_copies, raw) = r  # fmt: skip
        observations = [
            ObservationRow(ts, ip_text(s), sp, ip_text(d), dp, hop, ref, copies)
            for ts, s, sp, d, dp, hop, ref, copies in zip(
                obs_t,
                obs_src,
                obs_sport,
                obs_dst,
                obs_dport,
                obs_hop,
                obs_ref,
                obs_copies,
                strict=False,
            )
        ]
        out.append(
            MessageRecord(
                id=id_, event_time_us=t, node=node, capture_id=capture_id, call_id=call_id,
                is_request=bool(is_request), method=method, status=status, reason_phrase=reason,
                cseq=cseq, from_tag=from_tag, to_tag=to_tag, direction=direction,
                dialog_state=state, origin=origin, retransmission=bool(retrans),
                transport=transport, src_ip=ip_text(src_ip), src_port=src_port,
                dst_ip=ip_text(dst_ip), dst_port=dst_port, user_agent=ua,
                allow=list(allow) if has_allow else None,
                supported=list(supported) if has_supported else None,
                require=list(require), session_expires=se, refresher=refresher or None,
                min_se=min_se, has_sdp=bool(has_sdp), sdp_role=sdp_role,
                malformed=list(malformed), correlation_id=correlation_id, x_cid=x_cid,
                observations=observations, raw=_bytes(raw),
            )
        )  # fmt: skip
    return out


_DIALOG_COLUMNS = (
    "id, node_name, call_id, caller_tag, callee_tag, state, toUnixTimestamp64Micro(start_time),"
    " toUnixTimestamp64Micro(early_time), toUnixTimestamp64Micro(confirmed_time),"
    " toUnixTimestamp64Micro(end_time), end_reason, initial_status, call_id_owner,"
    " record_routed, caller_ua, callee_ua, caller_ip, callee_ip, reinvites, updates, pracks,"
    " anomalies, x_cid, session_id_pair, icid, correlation_id"
)


def _dialogs(client: Client, ids: list[str]) -> list[DialogRecord]:
    result = client.query(
        f"SELECT {_DIALOG_COLUMNS} FROM dialogs WHERE call_id IN {{ids:Array(String)}}"
        " ORDER BY start_time, callee_tag, id LIMIT 1 BY id",
        parameters={"ids": ids},
    )
    out = []
    for r in result.result_rows:
        values = list(r)
        values[16], values[17] = ip_text(values[16]), ip_text(values[17])
        out.append(DialogRecord(*values))
    return out


_ANOMALY_COLUMNS = (
    "id, anomaly, toString(severity), confidence, toUnixTimestamp64Micro(event_time),"
    " toUnixTimestamp64Micro(detected_at), node_name, capture_id, call_id, caller_tag,"
    " callee_tag, dialog_state, direction, method, cseq, status, reason, src_ip, src_port,"
    " dst_ip, dst_port, transport, ua_sender, ua_peer, hep_correlation_id, x_cid,"
    " session_id_pair, icid, call_id_owner, family, evidence, fields"
)


def _anomalies(client: Client, ids: list[str]) -> list[AnomalyRecord]:
    result = client.query(
        f"SELECT {_ANOMALY_COLUMNS} FROM anomalies WHERE call_id IN {{ids:Array(String)}}"
        " ORDER BY event_time, anomaly, id LIMIT 1 BY id",
        parameters={"ids": ids},
    )
    out = []
    for r in result.result_rows:
        values = list(r)
        values[17], values[19] = ip_text(values[17]), ip_text(values[19])
        values[3] = round(float(values[3]), 3)
        values[30], values[31] = list(values[30]), dict(values[31])
        out.append(AnomalyRecord(*values))
    return out


def ip_text(value: Any) -> str:
    """An address as text: IPv4-mapped IPv6 as IPv4, :: as "" (not captured)."""
    if value is None:
        return ""
    addr = ipaddress.ip_address(value) if isinstance(value, str) else value
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if int(addr) == 0:
            return ""
    return str(addr)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value or "").encode("utf-8", "surrogateescape")
