"""Every saved query of schemas/queries on the real ClickHouse engine (chDB): known rows in,
exact rows out. Plus the catalogue's own rules (headers agree with the placeholders) and one
query fed by the real pipeline (detectors, leg correlator, the ClickHouse row mapping)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from history_db import insert_records, insert_rows, now_us, open_db, reset, shifted

from consumers.history import saved
from consumers.history.query import QueryError, bind, plain, run
from consumers.records import AnomalyRecord

_ids = itertools.count(1)
MIN = 60_000_000


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = open_db(tmp_path_factory.mktemp("chdb"))
    yield client
    client.close()


@pytest.fixture
def ch(db: Client) -> Client:
    reset(db)
    return db


def saved_rows(client: Client, name: str, **params: str) -> list[dict[str, Any]]:
    """The saved query's rows, values as `hepwatch sql --format json` prints them."""
    query = saved.find(name)
    result = run(client, query.sql, bind(query.sql, params, query.defaults()))
    return [{c: plain(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]


def minute_of(us: int) -> str:
    return dt.datetime.fromtimestamp(us // MIN * 60, dt.UTC).replace(tzinfo=None).isoformat()


def iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).replace(tzinfo=None).isoformat()


@pytest.fixture
def t() -> int:
    """A time 20 minutes ago, on a minute boundary plus 5 s (the minute of each row is known)."""
    return (now_us() - 20 * MIN) // MIN * MIN + 5_000_000


def message(t_us: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": f"m{next(_ids)}",
        "event_time": t_us,
        "node_name": "p1",
        "call_id": "c1",
        "is_request": False,
        "method": "INVITE",
        "status": 200,
        "src_ip": "10.0.0.2",
        "dst_ip": "10.0.0.1",
        "user_agent": "",
        "retransmission": False,
        "src_partition": -1,
        "src_offset": -1,
    }
    row.update(kw)
    return row


def anomaly(t_us: int, name: str, family: str, severity: str, **kw: Any) -> dict[str, Any]:
    row = {
        "id": f"a{next(_ids)}",
        "event_time": t_us,
        "detected_at": t_us,
        "anomaly": name,
        "family": family,
        "severity": severity,
        "confidence": 1.0,
        "node_name": "p1",
        "call_id": "c1",
        "fields": {},
        "evidence": [],
        "src_partition": -1,
        "src_offset": -1,
    }
    row.update(kw)
    return row


def session_change(t_us: int, call_id: str, status: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": f"s{next(_ids)}",
        "event_time": t_us,
        "node_name": "p1",
        "call_id": call_id,
        "caller_tag": "a1",
        "callee_tag": "b1",
        "method": "INVITE",
        "status": status,
        "status_class": "glare" if status == 491 else "success",
        "ua_sender": "A/1",
        "ua_peer": "B/1",
        "src_partition": -1,
        "src_offset": -1,
    }
    row.update(kw)
    return row


# -- the catalogue ----------------------------------------------------------------------------


EXPECTED = {
    "responses_491_405_per_minute",
    "top_glare_dialogs",
    "update_support_by_user_agent",
    "update_405_by_peer",
    "session_timer_failures_by_peer",
    "early_dialog_misuse",
    "sbc_translations",
    "anomalies_by_type",
    "calls_by_anomaly",
    "call_lookup",
}


def test_catalogue_holds_the_saved_queries_with_descriptions():
    queries = saved.catalogue()
    assert set(queries) == EXPECTED
    for q in queries.values():
        assert q.description and q.path.name == f"{q.name}.sql"


def test_every_saved_query_runs_on_an_empty_database(ch: Client):
    for q in saved.catalogue().values():
        given = {p.name: "x" for p in q.params if p.default is None}
        result = run(ch, q.sql, bind(q.sql, given, q.defaults()))
        assert result.rows == [] and result.columns, q.name


def test_header_must_agree_with_the_placeholders(tmp_path: Path):
    bad = tmp_path / "bad.sql"
    bad.write_text("-- name: bad\n-- description: d\n-- param: a UInt32 = 1\nSELECT {b:UInt32}\n")
    with pytest.raises(QueryError, match="differ from the query's placeholders"):
        saved.catalogue(tmp_path)
    bad.write_text("-- name: other\n-- description: d\nSELECT 1\n")
    with pytest.raises(QueryError, match="differs from the file name"):
        saved.catalogue(tmp_path)


def test_param_header_forms(tmp_path: Path):
    (tmp_path / "q.sql").write_text(
        "-- name: q\n-- description: one\n-- description: two\n"
        "-- param: a UInt32 = 60 -- minutes\n-- param: b String = ''\n"
        "-- param: c String -- required\n"
        "SELECT {a:UInt32}, {b:String}, {c:String}\n"
    )
    q = saved.find("q", tmp_path)
    assert q.description == "one two"
    assert [(p.name, p.type, p.default, p.help) for p in q.params] == [
        ("a", "UInt32", "60", "minutes"),
        ("b", "String", "", ""),
        ("c", "String", None, "required"),
    ]
    with pytest.raises(QueryError, match="no saved query 'nope'"):
        saved.find("nope", tmp_path)


# -- each saved query -------------------------------------------------------------------------


def test_responses_491_405_per_minute(ch: Client, t: int):
    m2 = t + 3 * MIN
    insert_rows(
        ch,
        "sip_messages",
        [
            message(t, status=491),
            message(t + 1_000_000, status=491, call_id="c2"),
            message(t + 2_000_000, status=491, retransmission=True),
            message(t, status=405, method="UPDATE"),
            message(t + 10_000_000, status=405, method="INVITE", call_id="c3"),
            message(t, status=200),
            message(m2, status=491, method="UPDATE", node_name="p2"),
            message(t - 180 * MIN, status=491),  # three hours ago: outside the hour
        ],
    )
    # the per-minute counts are the view's, not a scan of sip_messages
    assert ch.query("SELECT sum(messages) FROM sip_minute_counts").result_rows == [(8,)]
    assert saved_rows(ch, "responses_491_405_per_minute") == [
        {
            "minute": minute_of(t),
            "node_name": "p1",
            "responses_491": 2,
            "responses_405": 2,
            "responses_405_to_update": 1,
        },
        {
            "minute": minute_of(m2),
            "node_name": "p2",
            "responses_491": 1,
            "responses_405": 0,
            "responses_405_to_update": 0,
        },
    ]
    only_p2 = saved_rows(ch, "responses_491_405_per_minute", node="p2")
    assert [r["node_name"] for r in only_p2] == ["p2"]
    assert saved_rows(ch, "responses_491_405_per_minute", window_minutes="5") == []
    wide = saved_rows(ch, "responses_491_405_per_minute", window_minutes="300")
    assert sum(r["responses_491"] for r in wide) == 4


def test_top_glare_dialogs(ch: Client, t: int):
    insert_rows(
        ch,
        "session_changes",
        [
            session_change(t, "c1", 491),
            session_change(t + 1_000_000, "c1", 491, method="UPDATE"),
            session_change(t + 2_000_000, "c1", 200),
            session_change(t + 5_000_000, "c2", 491, ua_sender="C/1", ua_peer="D/1"),
        ],
    )
    glare = {"caller_tag": "a1", "callee_tag": "b1", "ua_sender": "A/1", "ua_peer": "B/1"}
    insert_rows(
        ch,
        "anomalies",
        [
            anomaly(t, "glare_491", "C.1", "info", **glare),
            anomaly(t + 3_000_000, "glare_repeat", "C.1", "high", **glare),
            anomaly(t + 6_000_000, "glare_491", "C.1", "info", call_id="c3", **glare),
            anomaly(t, "overlapping_invite", "C.2", "medium", **glare),
        ],
    )
    rows = saved_rows(ch, "top_glare_dialogs")
    assert rows == [
        {
            "call_id": "c1",
            "node_name": "p1",
            "caller_tag": "a1",
            "callee_tag": "b1",
            "responses_491": 2,
            "glare_anomalies": 2,
            "anomaly_types": ["glare_491", "glare_repeat"],
            "worst_severity": "high",
            "first_seen": iso(t),
            "last_seen": iso(t + 3_000_000),
            "user_agents": ["A/1", "B/1"],
        },
        {
            "call_id": "c2",
            "node_name": "p1",
            "caller_tag": "a1",
            "callee_tag": "b1",
            "responses_491": 1,
            "glare_anomalies": 0,
            "anomaly_types": [],
            "worst_severity": "",
            "first_seen": iso(t + 5_000_000),
            "last_seen": iso(t + 5_000_000),
            "user_agents": ["C/1", "D/1"],
        },
        {
            "call_id": "c3",
            "node_name": "p1",
            "caller_tag": "a1",
            "callee_tag": "b1",
            "responses_491": 0,
            "glare_anomalies": 1,
            "anomaly_types": ["glare_491"],
            "worst_severity": "info",
            "first_seen": iso(t + 6_000_000),
            "last_seen": iso(t + 6_000_000),
            "user_agents": ["A/1", "B/1"],
        },
    ]
    assert [r["call_id"] for r in saved_rows(ch, "top_glare_dialogs", limit="2")] == ["c1", "c2"]


def test_update_support_by_user_agent(ch: Client, t: int):
    with_update = ["INVITE", "ACK", "BYE", "UPDATE"]
    without = ["INVITE", "ACK", "BYE"]
    insert_rows(
        ch,
        "sip_messages",
        [
            message(t, is_request=True, status=0, user_agent="Phone/1", has_allow=True,
                    allow=with_update),
            message(t, is_request=True, status=0, method="UPDATE", user_agent="Phone/1"),
            message(t, is_request=True, status=0, method="BYE", user_agent="Phone/1"),
            message(t, src_ip="10.0.0.3", user_agent="Old/2", has_allow=True, allow=without),
            message(t, src_ip="10.0.0.3", user_agent="Old/2", has_allow=True, allow=without,
                    method="UPDATE", status=405),
            message(t, src_ip="10.0.0.3", user_agent="Old/2", has_allow=True, allow=without,
                    method="UPDATE", status=405, retransmission=True),
            message(t, src_ip="10.0.0.4", user_agent="Mixed/3", has_allow=True, allow=without),
            message(t, src_ip="10.0.0.4", user_agent="Mixed/3", has_allow=True,
                    allow=with_update),
            message(t, src_ip="10.0.0.4", user_agent="Mixed/3", method="UPDATE", status=501),
            # Allow tokens are case-sensitive method names (RFC 3261 §7.1): "update" is not UPDATE
            message(t, src_ip="10.0.0.5", user_agent="Lower/1", has_allow=True,
                    allow=["INVITE", "update"]),
        ],
    )  # fmt: skip
    rows = saved_rows(ch, "update_support_by_user_agent")
    assert rows == [
        {"user_agent": "Old/2", "peer": "10.0.0.3", "messages_with_allow": 2,
         "allow_with_update": 0, "allow_without_update": 2, "allows_update": "no",
         "updates_sent": 0, "responses_405_to_update": 1, "responses_501_to_update": 0},
        {"user_agent": "Lower/1", "peer": "10.0.0.5", "messages_with_allow": 1,
         "allow_with_update": 0, "allow_without_update": 1, "allows_update": "no",
         "updates_sent": 0, "responses_405_to_update": 0, "responses_501_to_update": 0},
        {"user_agent": "Mixed/3", "peer": "10.0.0.4", "messages_with_allow": 2,
         "allow_with_update": 1, "allow_without_update": 1, "allows_update": "mixed",
         "updates_sent": 0, "responses_405_to_update": 0, "responses_501_to_update": 1},
        {"user_agent": "Phone/1", "peer": "10.0.0.2", "messages_with_allow": 1,
         "allow_with_update": 1, "allow_without_update": 0, "allows_update": "yes",
         "updates_sent": 1, "responses_405_to_update": 0, "responses_501_to_update": 0},
    ]  # fmt: skip


def test_update_405_by_peer(ch: Client, t: int):
    old = {"src_ip": "10.0.0.3", "user_agent": "Old/2", "method": "UPDATE"}
    insert_rows(
        ch,
        "sip_messages",
        [
            message(t, status=405, **old),
            message(t + MIN, status=405, **old),
            message(t + MIN, status=405, retransmission=True, **old),
            message(t, status=405, src_ip="10.0.0.3", user_agent="Old/2", method="INVITE"),
            message(t, status=501, src_ip="10.0.0.5", user_agent="Tiny/1", method="UPDATE"),
            message(t, status=200, src_ip="10.0.0.5", user_agent="Tiny/1", method="UPDATE"),
        ],
    )
    c5 = {"method": "UPDATE"}
    insert_rows(
        ch,
        "anomalies",
        [
            anomaly(t, "405_update_allow_said_no", "C.5", "medium", src_ip="10.0.0.3",
                    status=405, **c5),
            anomaly(t, "405_missing_allow", "C.5", "low", src_ip="10.0.0.3", status=405, **c5),
            anomaly(t, "405_update_no_info", "C.5", "low", src_ip="10.0.0.5", status=501, **c5),
            anomaly(t, "no_fallback_refresh", "C.5", "high", status=0, **c5),
            anomaly(t, "update_despite_allow", "C.4", "medium", src_ip="10.0.0.2", **c5),
        ],
    )  # fmt: skip
    assert saved_rows(ch, "update_405_by_peer") == [
        {"node_name": "p1", "peer": "10.0.0.3", "responses_405": 2, "responses_501": 0,
         "allow_said_no": 1, "allow_said_yes": 0, "no_allow_info": 0, "missing_allow": 1,
         "user_agents": ["Old/2"]},
        {"node_name": "p1", "peer": "10.0.0.5", "responses_405": 0, "responses_501": 1,
         "allow_said_no": 0, "allow_said_yes": 0, "no_allow_info": 1, "missing_allow": 0,
         "user_agents": ["Tiny/1"]},
    ]  # fmt: skip


def test_session_timer_failures_by_peer(ch: Client, t: int):
    ua_b = {"ua_sender": "UA-B/1"}
    insert_rows(
        ch,
        "anomalies",
        [
            anomaly(t, "refresh_missed", "C.8", "high", call_id="s2", **ua_b),
            anomaly(t + 1, "refresh_missed", "C.8", "high", call_id="s1", **ua_b),
            anomaly(t, "se_header_violation", "C.8", "medium", call_id="s3",
                    src_ip="10.0.0.3", **ua_b),
            anomaly(t, "no_fallback_refresh", "C.5", "high", call_id="s4", ua_sender="UA-A/1"),
            anomaly(t, "refresh_by_non_refresher", "C.8", "info", call_id="s5", **ua_b),
            anomaly(t, "glare_491", "C.1", "info", call_id="s6", **ua_b),
        ],
    )  # fmt: skip
    rows = saved_rows(ch, "session_timer_failures_by_peer")
    assert [{k: r[k] for k in r if k != "last_seen"} for r in rows] == [
        {"node_name": "p1", "peer": None, "user_agent": "UA-B/1", "anomaly": "refresh_missed",
         "worst_severity": "high", "anomalies": 2, "calls": 2, "sample_call_ids": ["s1", "s2"]},
        {"node_name": "p1", "peer": None, "user_agent": "UA-A/1",
         "anomaly": "no_fallback_refresh", "worst_severity": "high", "anomalies": 1,
         "calls": 1, "sample_call_ids": ["s4"]},
        {"node_name": "p1", "peer": "10.0.0.3", "user_agent": "UA-B/1",
         "anomaly": "se_header_violation", "worst_severity": "medium", "anomalies": 1,
         "calls": 1, "sample_call_ids": ["s3"]},
    ]  # fmt: skip
    assert rows[0]["last_seen"] == iso(t + 1)
    everything = saved_rows(ch, "session_timer_failures_by_peer", min_severity="info")
    assert [r["anomaly"] for r in everything][-1] == "refresh_by_non_refresher"
    assert len(everything) == 4
    assert saved_rows(ch, "session_timer_failures_by_peer", min_severity="critical") == []
    with pytest.raises(QueryError, match="bogus"):
        saved_rows(ch, "session_timer_failures_by_peer", min_severity="bogus")


def test_early_dialog_misuse(ch: Client, t: int):
    b_to_a = {"ua_sender": "UA-B/1", "ua_peer": "UA-A/1"}
    insert_rows(
        ch,
        "anomalies",
        [
            anomaly(t, "reinvite_in_early_dialog", "C.3", "medium", call_id="e1",
                    method="INVITE", fields={"response_status": "491"}, **b_to_a),
            anomaly(t + 1, "reinvite_in_early_dialog", "C.3", "medium", call_id="e2",
                    method="INVITE", fields={"response_status": "500"}, **b_to_a),
            anomaly(t + 2, "reinvite_in_early_dialog", "C.3", "medium", call_id="e2b",
                    method="INVITE", fields={"response_status": "null"}, **b_to_a),
            anomaly(t, "early_update_481", "C.6", "high", call_id="e3", method="UPDATE",
                    status=481, ua_sender="UA-A/1", ua_peer="UA-B/1"),
            anomaly(t, "481_after_bye_race", "C.6", "info", call_id="e4", status=481),
            anomaly(t, "update_481", "C.6", "high", call_id="e5", status=481),
        ],
    )  # fmt: skip
    rows = saved_rows(ch, "early_dialog_misuse")
    assert rows == [
        {"anomaly": "reinvite_in_early_dialog", "node_name": "p1", "user_agent": "UA-B/1",
         "peer_user_agent": "UA-A/1", "anomalies": 3, "calls": 3, "responses": ["491", "500"],
         "worst_severity": "medium", "last_seen": iso(t + 2),
         "sample_call_ids": ["e1", "e2", "e2b"]},
        {"anomaly": "early_update_481", "node_name": "p1", "user_agent": "UA-A/1",
         "peer_user_agent": "UA-B/1", "anomalies": 1, "calls": 1, "responses": ["481"],
         "worst_severity": "high", "last_seen": iso(t), "sample_call_ids": ["e3"]},
    ]  # fmt: skip


def c12(t_us: int, name: str, a: str, b: str, delay: str | None, **kw: Any) -> dict[str, Any]:
    fields = {"leg_a_call_id": a, "leg_b_call_id": b, "correlation_method": "x_cid",
              "correlation_score": "1.0", "leg_a_method": "UPDATE", "leg_b_method": "INVITE",
              "translation_delay_ms": "null" if delay is None else delay}  # fmt: skip
    fields.update(kw.pop("fields", {}))
    return anomaly(t_us, name, "C.12", "info", call_id=b, fields=fields, **kw)


def test_sbc_translations(ch: Client, t: int):
    insert_rows(
        ch,
        "anomalies",
        [
            c12(t, "update_to_reinvite", "a1", "b1", "20.5"),
            c12(t + 5, "update_to_reinvite", "a2", "b2", "30.5"),
            c12(t + 3, "update_to_reinvite", "a2", "b2", "30.5"),
            c12(t, "timer_terminated_locally", "a3", "b3", None,
                fields={"leg_a_method": "UPDATE", "leg_b_method": "UPDATE"}),
            anomaly(t, "glare_491", "C.1", "info"),
        ],
    )  # fmt: skip
    assert saved_rows(ch, "sbc_translations") == [
        {"anomaly": "update_to_reinvite", "node_name": "p1", "correlation_method": "x_cid",
         "leg_a_method": "UPDATE", "leg_b_method": "INVITE", "anomalies": 3, "leg_pairs": 2,
         "avg_delay_ms": 27.167, "max_delay_ms": 30.5, "last_seen": iso(t + 5),
         "sample_legs": ["a1 > b1", "a2 > b2"]},
        {"anomaly": "timer_terminated_locally", "node_name": "p1",
         "correlation_method": "x_cid", "leg_a_method": "UPDATE", "leg_b_method": "UPDATE",
         "anomalies": 1, "leg_pairs": 1, "avg_delay_ms": None, "max_delay_ms": None,
         "last_seen": iso(t), "sample_legs": ["a3 > b3"]},
    ]  # fmt: skip


def test_anomalies_by_type_and_calls_by_anomaly(ch: Client, t: int):
    insert_rows(
        ch,
        "anomalies",
        [
            anomaly(t, "glare_491", "C.1", "info", call_id="g1"),
            anomaly(t + 10, "glare_491", "C.1", "info", call_id="g2", node_name="p2"),
            anomaly(t + 20, "glare_491", "C.1", "info", call_id="g2", node_name="p2"),
            anomaly(t, "missing_ack", "C.7", "high", call_id="m1"),
            anomaly(t - 48 * 60 * MIN, "missing_ack", "C.7", "critical", call_id="old"),
        ],
    )
    assert saved_rows(ch, "anomalies_by_type") == [
        {"family": "C.1", "anomaly": "glare_491", "worst_severity": "info", "anomalies": 3,
         "calls": 2, "nodes": ["p1", "p2"], "first_seen": iso(t), "last_seen": iso(t + 20)},
        {"family": "C.7", "anomaly": "missing_ack", "worst_severity": "high", "anomalies": 1,
         "calls": 1, "nodes": ["p1"], "first_seen": iso(t), "last_seen": iso(t)},
    ]  # fmt: skip
    only_p2 = saved_rows(ch, "anomalies_by_type", node="p2")
    assert [(r["anomaly"], r["anomalies"]) for r in only_p2] == [("glare_491", 2)]
    three_days = saved_rows(ch, "anomalies_by_type", window_hours="72")
    assert [(r["anomaly"], r["worst_severity"]) for r in three_days][1] == (
        "missing_ack",
        "critical",
    )
    calls = saved_rows(ch, "calls_by_anomaly", anomaly="glare_491")
    assert [(r["call_id"], r["node_name"], r["event_time"]) for r in calls] == [
        ("g2", "p2", iso(t + 20)),
        ("g2", "p2", iso(t + 10)),
        ("g1", "p1", iso(t)),
    ]
    assert len(saved_rows(ch, "calls_by_anomaly", anomaly="glare_491", limit="1")) == 1


def test_call_lookup(ch: Client, t: int):
    insert_rows(
        ch,
        "sip_messages",
        [
            message(t, call_id="L1", is_request=True, status=0, cseq=1, user_agent="A/1",
                    x_cid="X0"),
            message(t + 1000, call_id="L1", status=180, cseq=1, user_agent="B/1"),
            message(t + 2000, call_id="L1", status=200, cseq=1, user_agent="B/1"),
            message(t + 3000, call_id="L1", is_request=True, status=0, method="ACK", cseq=1),
            message(t, call_id="other", is_request=True, status=0),
        ],
    )  # fmt: skip
    insert_rows(
        ch,
        "dialogs",
        [
            {"id": "d1", "node_name": "p1", "call_id": "L1", "caller_tag": "a", "callee_tag": "b",
             "state": "terminated", "start_time": t, "end_time": t + 5000, "end_reason": "bye",
             "src_partition": -1, "src_offset": -1},
        ],
    )  # fmt: skip
    insert_rows(ch, "anomalies", [anomaly(t, "missing_ack", "C.7", "high", call_id="L1")])
    assert saved_rows(ch, "call_lookup", call_id="L1") == [
        {"call_id": "L1", "node_name": "p1", "first_seen": iso(t), "last_seen": iso(t + 3000),
         "messages": 4, "sequence": "INVITE 180 200 ACK", "user_agents": ["A/1", "B/1"],
         "x_cids": ["X0"], "dialog_states": ["b:terminated:bye"], "anomalies": ["missing_ack"]},
    ]  # fmt: skip
    assert saved_rows(ch, "call_lookup", call_id="nope") == []
    with pytest.raises(QueryError, match="missing parameter call_id"):
        saved_rows(ch, "call_lookup")


def test_sbc_translations_from_the_pipeline(ch: Client):
    """An SBC relays UA-A's UPDATE as a re-INVITE on the B-leg: detectors, leg correlator and
    the ClickHouse row mapping produce the rows the saved query reads."""
    from test_legs import B2bua, _relay_update_as, _x_cid

    from consumers.engine import Engine, EngineConfig
    from consumers.legs import correlate

    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE", delay=0.03)
    call.end(9)
    engine = Engine(EngineConfig())
    records = []
    for o in call.observations():
        records += engine.feed(o)
    records += engine.flush()
    records += correlate(records)
    delta = (
        now_us() - 30 * MIN - min(r.event_time_us for r in records if hasattr(r, "event_time_us"))
    )
    insert_records(ch, shifted(records, delta))
    c12_found = [r for r in records if isinstance(r, AnomalyRecord) and r.family == "C.12"]
    assert [a.anomaly for a in c12_found] == ["update_to_reinvite"]
    (row,) = saved_rows(ch, "sbc_translations")
    assert row["anomaly"] == "update_to_reinvite"
    assert (row["correlation_method"], row["leg_a_method"], row["leg_b_method"]) == (
        "x_cid",
        "UPDATE",
        "INVITE",
    )
    assert row["sample_legs"] == ["leg-a@test > leg-b@sbc"]
    assert abs(row["max_delay_ms"] - 30) < 1
