"""C.8 session-timer problems (RFC 4028): rules, traps and clean flows."""

from __future__ import annotations

import pickle

from sipflow import Flow, Sent, sdp

from consumers.detectors.session_timer import SessionTimerDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK"
ALLOW_NO_UPDATE = "Allow: INVITE, ACK, BYE, CANCEL"
NAMES = {
    "refresh_missed",
    "session_expired_bye",
    "refresh_late",
    "refresh_by_non_refresher",
    "refresher_table_violation",
    "se_header_violation",
    "refresher_flapping",
    "reinvite_refresh_preferred_update",
    "refresh_with_changed_sdp_version",
}
OFFER = sdp(addr="10.0.0.2")
ANSWER = sdp(addr="10.0.0.3", session_id="2002")
SE_120 = "Session-Expires: 120;refresher=uac"
INSERTED = b"Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\nContent-Type"


def _run(*flows: Flow) -> list[AnomalyRecord]:
    eng = Engine(EngineConfig(), detectors=[SessionTimerDetector()])
    obs = sorted((o for f in flows for o in f.obs), key=lambda o: o.ts_us)
    records = []
    for o in obs:
        records += eng.feed(o)
    records += eng.flush()
    return [r for r in records if r.kind == "anomaly" and r.anomaly in NAMES]


def _names(anomalies: list[AnomalyRecord]) -> list[str]:
    return sorted(a.anomaly for a in anomalies)


def _timer_call(
    f: Flow,
    *,
    se: int = 120,
    asked: str | None = "uac",
    answered: str | None = "uac",
    supported: bool = True,
    require: bool = True,
    min_se: int | None = None,
    b_allow: str = ALLOW,
    rsp_se: int | None = None,
) -> Sent:
    """INVITE with Session-Expires, 100 (proxy), 180, 200 with Session-Expires, ACK."""
    a_headers = [ALLOW]
    if supported:
        a_headers.append("Supported: timer")
    if asked is not None or se:
        a_headers.append(f"Session-Expires: {se}" + (f";refresher={asked}" if asked else ""))
    if min_se is not None:
        a_headers.append(f"Min-SE: {min_se}")
    inv = f.request("A", "INVITE", in_dialog=False, body=OFFER, headers=a_headers)
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.05)
    f.response(inv, 180, headers=[b_allow])
    f.wait(0.5)
    b_headers = [b_allow]
    if require:
        b_headers.append("Require: timer")
    if answered is not None:
        b_headers.append(f"Session-Expires: {rsp_se or se};refresher={answered}")
    f.response(inv, 200, body=ANSWER, headers=b_headers)
    inv.to_tag = "b1"
    f.wait(0.05)
    f.ack(inv)
    return inv


def _refresh(
    f: Flow,
    sender: str = "A",
    method: str = "UPDATE",
    *,
    se: int = 120,
    asked: str | None = "uac",
    answered: str | None = "uac",
    offer: str = "",
    answer: str = "",
    extra: tuple[str, ...] = (),
) -> Sent:
    headers = ["Supported: timer", *extra]
    if asked is not None or se:
        headers.append(f"Session-Expires: {se}" + (f";refresher={asked}" if asked else ""))
    req = f.request(sender, method, body=offer, headers=headers)
    f.wait(0.05)
    rsp_headers = []
    if answered is not None:
        rsp_headers = ["Require: timer", f"Session-Expires: {se};refresher={answered}"]
    f.response(req, 200, body=answer, headers=rsp_headers)
    if method == "INVITE":
        f.wait(0.02)
        f.ack(req)
    return req


def _tick(flows: list[Flow], at: float) -> None:
    other = Flow("tick@test")
    other.at(at)
    other.request("A", "OPTIONS", in_dialog=False)
    flows.append(other)


def _edit(f: Flow, index: int, old: bytes, new: bytes) -> None:
    """Rewrite one captured copy, as the proxy would have changed it on the way."""
    o = f.obs[index]
    assert old in o.payload
    payload = o.payload.replace(old, new)
    f.obs[index] = o.replace(payload=payload)


# -- clean flows -----------------------------------------------------------------------------


def test_update_refreshes_at_half_interval_are_clean():
    f = Flow()
    _timer_call(f)
    for t in (60.5, 120.5, 180.5):
        f.at(t)
        _refresh(f)
    f.at(200)
    f.bye("A")
    flows = [f]
    _tick(flows, 600)
    assert _run(*flows) == []


def test_call_ending_before_expiry_is_clean():
    f = Flow()
    _timer_call(f)
    f.at(30)
    f.bye("B")
    flows = [f]
    _tick(flows, 600)
    assert _run(*flows) == []


# -- refresh_missed / session_expired_bye ------------------------------------------------------


def test_no_refresh_by_expiry_is_refresh_missed():
    f = Flow()
    _timer_call(f)
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_missed" and a.severity == "high"
    assert a.fields["refresher_party"] == "caller"
    assert a.direction == "caller_to_callee"
    assert a.fields["session_expires_s"] == 120
    assert a.fields["refresher_param"] == "uac"
    assert a.fields["supported_timer_uac"] is True
    assert a.fields["require_timer_2xx"] is True
    assert a.fields["t_refresh"] is None
    assert a.event_time_us == a.fields["t_expiry"]


def test_refresher_uas_maps_to_the_callee_of_that_transaction():
    f = Flow()
    _timer_call(f, asked=None, answered="uas")
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_missed" and a.fields["refresher_party"] == "callee"
    assert a.direction == "callee_to_caller"


def test_roles_swap_when_the_callee_sends_the_refresh():
    # The callee refreshes with refresher=uac: it is the UAC of that transaction, so the
    # callee becomes the refresher; the caller's silence afterwards is not the fault.
    f = Flow()
    _timer_call(f, asked=None, answered="uas")
    f.at(60)
    _refresh(f, "B", asked="uac", answered="uac")
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_missed" and a.fields["refresher_party"] == "callee"
    assert a.fields["refresh_method"] == "UPDATE" and a.fields["t_refresh"] is not None


def test_non_refresher_bye_before_expiry_is_session_expired_bye():
    f = Flow()
    _timer_call(f)
    f.at(0.6 + 120 - 32)  # min(32 s, 120/3) before expiry [RFC 4028 §10]
    bye = f.request("B", "BYE", headers=['Reason: SIP;cause=408;text="Session expired"'])
    f.wait(0.02)
    f.response(bye, 200)
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "session_expired_bye" and a.severity == "critical"
    assert a.fields["refresher_party"] == "caller"
    assert "cause=408" in a.fields["bye_reason"]
    assert a.method == "BYE"


def test_record_routed_false_claims_no_missed_refresh():
    f = Flow(record_route=False)
    _timer_call(f)
    flows = [f]
    _tick(flows, 600)
    assert _run(*flows) == []


def test_capture_end_before_expiry_claims_nothing():
    f = Flow()
    _timer_call(f)
    flows = [f]
    _tick(flows, 100)
    assert _run(*flows) == []


def test_2xx_without_session_expires_turns_the_timer_off():
    f = Flow()
    _timer_call(f)
    f.at(50)
    _refresh(f, asked=None, se=0, answered=None)
    flows = [f]
    _tick(flows, 600)
    assert _run(*flows) == []


def test_refresh_in_flight_at_expiry_decides():
    f = Flow()
    _timer_call(f)
    f.at(0.6 + 119.9)
    upd = f.request(
        "A", "UPDATE", headers=["Supported: timer", "Session-Expires: 120;refresher=uac"]
    )
    f.wait(1.0)  # answered after expiry
    f.response(upd, 200, headers=["Require: timer", "Session-Expires: 120;refresher=uac"])
    f.at(200)
    f.bye("A")
    flows = [f]
    _tick(flows, 600)
    assert _names(_run(*flows)) == ["refresh_late"]


# -- refresh_late / refresh_by_non_refresher ---------------------------------------------------


def test_refresh_after_three_quarters_is_late():
    f = Flow()
    _timer_call(f)
    f.at(0.6 + 100)
    _refresh(f)
    f.at(150)
    f.bye("A")
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_late" and a.severity == "low"
    assert a.direction == "caller_to_callee"
    assert 99 < a.fields["refresh_after_s"] < 101


def test_refresh_by_non_refresher_is_info_once():
    f = Flow()
    _timer_call(f)
    f.at(50)
    _refresh(f, "B", asked="uas", answered="uas")  # keeps the caller as refresher
    f.at(100)
    _refresh(f, "B", asked="uas", answered="uas")
    f.at(120)
    f.bye("A")
    flows = [f]
    _tick(flows, 600)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_by_non_refresher" and a.severity == "info"
    assert a.direction == "callee_to_caller"


# -- Table 2 and header checks -----------------------------------------------------------------


def test_uas_overriding_an_explicit_refresher_violates_table_2():
    f = Flow()
    _timer_call(f, asked="uac", answered="uas")
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "refresher_table_violation" and a.severity == "medium"
    assert a.fields["expected_refresher"] == "uac" and a.fields["refresher_param"] == "uas"
    assert a.direction == "callee_to_caller"


def test_refresher_uac_without_supported_timer_violates_table_2():
    f = Flow()
    _timer_call(f, supported=False, asked=None, answered="uac")
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "refresher_table_violation"
    assert a.fields["expected_refresher"] == "uas" and a.fields["supported_timer_uac"] is False


def test_uas_may_choose_when_the_request_named_no_refresher():
    f = Flow()
    _timer_call(f, asked=None, answered="uac")
    f.at(30)
    f.bye("A")
    assert _run(f) == []


def test_refresher_uac_without_require_timer():
    f = Flow()
    _timer_call(f, require=False)
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "se_header_violation" and a.severity == "medium"
    assert a.fields["violation"] == "refresher_uac_without_require_timer"
    assert a.fields["offender"] == "callee"


def test_uas_raising_session_expires():
    f = Flow()
    _timer_call(f, se=600, rsp_se=1800)
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.fields["violation"] == "session_expires_raised_by_uas"


def test_values_below_90_and_below_min_se():
    f = Flow()
    _timer_call(f, se=60, min_se=80, answered="uac")
    f.at(20)
    f.bye("A")
    violations = sorted(a.fields["violation"] for a in _run(f))
    # The request's Session-Expires and Min-SE are both below 90, Session-Expires is below
    # Min-SE; the 2xx repeats the low value (reported once per dialog and offender).
    assert violations == [
        "min_se_below_90",
        "session_expires_below_90",
        "session_expires_below_90",
        "session_expires_below_min_se",
        "session_expires_below_min_se",
    ]


def test_min_se_in_a_non_422_response():
    f = Flow()
    _timer_call(f)
    f.at(30)
    upd = f.request(
        "A", "UPDATE", headers=["Supported: timer", "Session-Expires: 120;refresher=uac"]
    )
    f.response(
        upd, 200, headers=["Require: timer", "Session-Expires: 120;refresher=uac", "Min-SE: 90"]
    )
    f.at(40)
    f.bye("A")
    (a,) = _run(f)
    assert a.fields["violation"] == "min_se_in_non_422_response" and a.severity == "low"


def test_proxy_changing_the_refresher_of_a_2xx():
    f = Flow()
    _timer_call(f, asked=None, answered="uas")
    # The 200's out-copy (proxy -> caller) is the last-but-one observation before the ACK.
    idx = next(
        i
        for i in range(len(f.obs) - 1, -1, -1)
        if f.obs[i].payload.startswith(b"SIP/2.0 200") and f.obs[i].src_ip == "10.0.0.1"
    )
    _edit(f, idx, b"refresher=uas", b"refresher=uac")
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "se_header_violation"
    assert a.fields["violation"] == "refresher_changed_by_proxy"
    assert a.fields["offender"] == "proxy"


def test_proxy_adding_a_refresher_to_a_request():
    f = Flow()
    _timer_call(f, asked=None, answered="uas")
    idx = next(
        i for i, o in enumerate(f.obs) if o.payload.startswith(b"INVITE") and o.src_ip == "10.0.0.1"
    )
    _edit(f, idx, b"Session-Expires: 120", b"Session-Expires: 120;refresher=uas")
    f.at(30)
    f.bye("A")
    (a,) = _run(f)
    assert a.fields["violation"] == "refresher_added_by_proxy"
    assert a.fields["offender"] == "proxy"


def test_proxy_inserted_session_expires_for_a_timerless_uas_is_legal():
    # RFC 4028 §8.2: the UAS's 2xx has no Session-Expires, the proxy adds refresher=uac
    # and Require: timer for the caller that supports timers; the caller then refreshes.
    f = Flow()
    _timer_call(f, se=1800, asked=None, answered=None, require=False)
    idx = next(
        i
        for i in range(len(f.obs) - 1, -1, -1)
        if f.obs[i].payload.startswith(b"SIP/2.0 200") and f.obs[i].src_ip == "10.0.0.1"
    )
    _edit(
        f,
        idx,
        b"Content-Type",
        b"Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\nContent-Type",
    )
    f.at(900)
    _refresh(f, se=1800, answered=None)
    f.at(1000)
    f.bye("A")
    flows = [f]
    _tick(flows, 5000)
    # The refresh's 2xx again lacks Session-Expires in both copies: the timer is off after it.
    assert _run(*flows) == []


def test_proxy_inserted_timer_is_enforced():
    f = Flow()
    _timer_call(f, se=1800, asked=None, answered=None, require=False)
    idx = next(
        i
        for i in range(len(f.obs) - 1, -1, -1)
        if f.obs[i].payload.startswith(b"SIP/2.0 200") and f.obs[i].src_ip == "10.0.0.1"
    )
    _edit(
        f,
        idx,
        b"Content-Type",
        b"Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\nContent-Type",
    )
    flows = [f]
    _tick(flows, 5000)
    (a,) = _run(*flows)
    assert a.anomaly == "refresh_missed" and a.fields["refresher_party"] == "caller"


# -- refresher_flapping / method / SDP ---------------------------------------------------------


def test_refresher_flapping():
    f = Flow()
    _timer_call(f)
    f.at(60)
    _refresh(f, "A", asked="uas", answered="uas")  # the caller hands the role over
    f.at(100)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "refresher_flapping" and a.severity == "low"
    assert a.fields["previous_refresher_party"] == "caller"


def test_reinvite_refresh_although_peer_allows_update():
    f = Flow()
    _timer_call(f)
    f.at(60)
    _refresh(f, "A", "INVITE", offer=OFFER, answer=ANSWER)  # unchanged SDP, same version
    f.at(100)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "reinvite_refresh_preferred_update" and a.severity == "info"


def test_reinvite_refresh_is_fine_when_peer_lacks_update():
    f = Flow()
    _timer_call(f, b_allow=ALLOW_NO_UPDATE)
    f.at(60)
    _refresh(f, "A", "INVITE", offer=OFFER, answer=ANSWER)
    f.at(100)
    f.bye("A")
    assert _run(f) == []


def test_refresh_with_changed_sdp_version():
    f = Flow()
    _timer_call(f, b_allow=ALLOW_NO_UPDATE)
    f.at(60)
    _refresh(f, "A", "INVITE", offer=sdp(addr="10.0.0.2", version=2), answer=ANSWER)
    f.at(100)
    f.bye("A")
    (a,) = _run(f)
    assert a.anomaly == "refresh_with_changed_sdp_version" and a.severity == "low"
    assert a.fields["o_version_before"] == 1 and a.fields["o_version_after"] == 2


# -- traps -------------------------------------------------------------------------------------


def test_hold_and_resume_reinvites_refresh_too():
    f = Flow()
    _timer_call(f)
    f.at(50)
    _refresh(
        f,
        "B",
        "INVITE",
        asked="uas",
        answered="uas",
        offer=sdp(addr="10.0.0.3", session_id="2002", version=2, direction="sendonly"),
        answer=sdp(addr="10.0.0.2", version=2, direction="recvonly"),
    )
    f.at(100)
    _refresh(
        f,
        "B",
        "INVITE",
        asked="uas",
        answered="uas",
        offer=sdp(addr="10.0.0.3", session_id="2002", version=3),
        answer=sdp(addr="10.0.0.2", version=3),
    )
    f.at(200)
    f.bye("A")
    flows = [f]
    _tick(flows, 600)
    assert _run(*flows) == []


def test_b2bua_legs_run_independent_timers():
    leg_a = Flow("leg-a@test")
    _timer_call(leg_a, se=120)
    leg_b = Flow("leg-b@test", a=("10.0.0.5", 5060), b=("10.0.0.6", 5060))
    leg_b.at(0.2)
    _timer_call(leg_b, se=1800, asked=None, answered="uas")
    for t in (60, 120, 180):  # leg A refreshed by its caller; leg B by the far UAS once
        leg_a.at(t)
        _refresh(leg_a)
    leg_b.at(900)
    _refresh(leg_b, "B", se=1800, asked="uac", answered="uac")
    leg_a.at(200)
    leg_a.bye("A")
    leg_b.at(1000)
    leg_b.bye("A")
    flows = [leg_a, leg_b]
    _tick(flows, 4000)
    assert _run(*flows) == []


def test_timer_state_survives_an_engine_checkpoint():
    f = Flow()
    _timer_call(f)
    f.at(60)
    _refresh(f, "A", "INVITE", offer=OFFER, answer=ANSWER)
    flows = [f]
    _tick(flows, 600)
    obs = sorted((o for fl in flows for o in fl.obs), key=lambda o: o.ts_us)
    eng = Engine(EngineConfig(), detectors=[SessionTimerDetector()])
    records = []
    for o in obs[:8]:
        records += eng.feed(o)
    eng = pickle.loads(pickle.dumps(eng))
    for o in obs[8:]:
        records += eng.feed(o)
    records += eng.flush()
    names = sorted(r.anomaly for r in records if r.kind == "anomaly")
    assert names == ["refresh_missed", "reinvite_refresh_preferred_update"]


def test_out_copy_left_unparsed_only_without_session_expires() -> None:
    from consumers.detectors.session_timer import _no_session_expires

    head = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n"
    assert _no_session_expires(head + b"Require: timer\r\n\r\n")
    for line in (b"Session-Expires: 90", b"SESSION-EXPIRES :90", b"x: 90", b"X\t: 90"):
        assert not _no_session_expires(head + line + b"\r\n\r\n"), line
