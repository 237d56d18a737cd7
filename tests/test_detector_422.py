"""C.9 422 chains (RFC 4028 §6-§9): rules, traps and clean flows."""

from __future__ import annotations

from sipflow import Flow, Sent, sdp

from consumers.detectors.min_se_422 import Min422Detector
from consumers.detectors.missing_ack import MissingAckDetector
from consumers.detectors.session_timer import SessionTimerDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK"


def _run(f: Flow, *, all_families: bool = False) -> list[AnomalyRecord]:
    detectors = [Min422Detector()]
    if all_families:
        detectors += [SessionTimerDetector(), MissingAckDetector()]
    eng = Engine(EngineConfig(), detectors=detectors)  # type: ignore[list-item]
    return f.anomalies(eng)


def _names(anomalies: list[AnomalyRecord]) -> list[str]:
    return sorted(a.anomaly for a in anomalies)


def _invite(
    f: Flow,
    *,
    se: int | None = 90,
    min_se: int | None = 90,
    timer: bool = True,
    cseq: int | None = None,
    extra: tuple[str, ...] = (),
) -> Sent:
    headers = [ALLOW, *extra]
    if timer:
        headers.append("Supported: timer")
    if se is not None:
        headers.append(f"Session-Expires: {se};refresher=uac")
    if min_se is not None:
        headers.append(f"Min-SE: {min_se}")
    return f.request("A", "INVITE", in_dialog=False, body=sdp(), headers=headers, cseq=cseq)


def _reject(f: Flow, inv: Sent, min_se: int | None, *, proxy: bool = False) -> None:
    f.wait(0.01)
    headers = [f"Min-SE: {min_se}"] if min_se is not None else []
    f.response(inv, 422, headers=headers, proxy=proxy)
    f.wait(0.001)
    f.hop_ack(inv, to_tag="b1")
    f.wait(0.1)


def _accept(f: Flow, inv: Sent, se: int) -> None:
    f.wait(0.05)
    f.response(inv, 180, headers=[ALLOW])
    f.wait(0.3)
    f.response(
        inv,
        200,
        body=sdp(addr="10.0.0.3", session_id="2002"),
        headers=[ALLOW, "Require: timer", f"Session-Expires: {se};refresher=uac"],
    )
    inv.to_tag = "b1"
    f.wait(0.05)
    f.ack(inv)


# -- clean flows -----------------------------------------------------------------------------


def test_testbed_session_timer_scenario_is_clean_for_c7_c8_c9():
    # i-session-timer: 422 (Min-SE 120), retry CSeq 2 with SE/Min-SE 120, 200, UPDATE, BYE.
    f = Flow()
    inv = _invite(f, se=90, min_se=90)
    _reject(f, inv, 120)
    retry = _invite(f, se=120, min_se=120)
    _accept(f, retry, 120)
    f.wait(3)
    upd = f.request(
        "A",
        "UPDATE",
        headers=[ALLOW, "Supported: timer", "Session-Expires: 120;refresher=uac", "Min-SE: 120"],
    )
    f.response(upd, 200, headers=["Require: timer", "Session-Expires: 120;refresher=uac"])
    f.wait(0.5)
    f.bye("A")
    assert retry.cseq == 2
    assert _run(f, all_families=True) == []


def test_two_proxies_raising_min_se_once_each_is_normal():
    f = Flow()
    inv = _invite(f, se=90, min_se=90)
    _reject(f, inv, 300, proxy=True)
    retry = _invite(f, se=300, min_se=300)
    _reject(f, retry, 600)
    retry2 = _invite(f, se=600, min_se=600)
    _accept(f, retry2, 600)
    assert _run(f) == []


def test_reauthentication_inside_the_chain_is_followed():
    f = Flow()
    inv = _invite(f, se=90, min_se=90)
    _reject(f, inv, 120)
    retry = _invite(f, se=120, min_se=120)
    f.response(retry, 407)
    f.hop_ack(retry, to_tag="b1")
    retry2 = _invite(f, se=120, min_se=120, extra=('Proxy-Authorization: Digest username="a"',))
    _accept(f, retry2, 120)
    assert _run(f) == []


# -- rules -----------------------------------------------------------------------------------


def test_422_without_min_se():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, None)
    retry = _invite(f, se=1800, min_se=90)
    _accept(f, retry, 1800)
    (a,) = _run(f)
    assert a.anomaly == "422_missing_min_se" and a.severity == "medium"
    assert a.direction == "callee_to_caller"
    assert a.fields["final_outcome_status"] == 200
    assert a.fields["min_se_values"] == [0] and a.fields["se_values"] == [90, 1800]


def test_422_to_a_request_without_supported_timer():
    f = Flow()
    inv = _invite(f, timer=False)
    _reject(f, inv, 120, proxy=True)
    retry = _invite(f, se=120, min_se=120, timer=False)
    _accept(f, retry, 120)
    (a,) = _run(f)
    assert a.anomaly == "422_to_non_timer_request" and a.severity == "medium"
    assert a.fields["issuer"] == "proxy"


def test_retry_without_min_se():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, 120)
    retry = _invite(f, se=120, min_se=None)
    _accept(f, retry, 120)
    (a,) = _run(f)
    assert a.anomaly == "422_retry_without_min_se" and a.severity == "medium"
    assert a.direction == "caller_to_callee"
    assert a.fields["required_min_se"] == 120 and a.fields["retry_min_se"] is None


def test_retry_with_a_lower_min_se_than_the_largest_received():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, 300)
    retry = _invite(f, se=300, min_se=300)
    _reject(f, retry, 600)
    retry2 = _invite(f, se=600, min_se=300)  # not the largest of all 422s
    _accept(f, retry2, 600)
    (a,) = _run(f)
    assert a.anomaly == "422_retry_without_min_se"
    assert a.fields["chain_len"] == 2 and a.fields["min_se_values"] == [300, 600]


def test_retry_session_expires_below_min_se():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, 120)
    retry = _invite(f, se=100, min_se=120)
    _accept(f, retry, 120)
    names = _names(_run(f))
    assert names == ["422_retry_se_below_min_se"]


def test_retry_cseq_not_plus_one():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, 120)
    retry = _invite(f, se=120, min_se=120, cseq=inv.cseq + 5)
    _accept(f, retry, 120)
    (a,) = _run(f)
    assert a.anomaly == "422_retry_cseq" and a.severity == "low"
    assert a.fields["expected_cseq"] == 2 and a.fields["retry_cseq"] == 6


def test_422_not_raising_above_what_the_retry_carried_is_a_loop():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, 120)
    retry = _invite(f, se=120, min_se=120)
    _reject(f, retry, 120)  # the issuer rejects the value it asked for
    f.wait(40)  # the caller gives up
    (a,) = _run(f)
    assert a.anomaly == "422_loop" and a.severity == "high"
    assert a.fields["final_outcome_status"] == 422
    assert a.fields["cause"] == "min_se_not_raised"


def test_more_than_three_422s_is_a_loop():
    f = Flow()
    inv = _invite(f)
    value = 100
    for _ in range(4):
        value += 100
        _reject(f, inv, value)
        inv = _invite(f, se=value, min_se=value)
    _accept(f, inv, value)
    (a,) = _run(f)
    assert a.anomaly == "422_loop" and a.fields["cause"] == "length"
    assert a.fields["chain_len"] == 4 and a.fields["final_outcome_status"] == 200


# -- traps -----------------------------------------------------------------------------------


def test_422_to_a_mid_dialog_refresh_is_info():
    f = Flow()
    inv = _invite(f, se=120, min_se=90)
    _accept(f, inv, 120)
    f.wait(60)
    headers = ["Supported: timer", "Session-Expires: 90;refresher=uac"]
    upd = f.request("A", "UPDATE", headers=headers)
    f.response(upd, 422, headers=["Min-SE: 120"])
    f.wait(0.1)
    f.request("A", "INFO")  # another request in between moves the CSeq base
    f.wait(0.1)
    upd2 = f.request(
        "A", "UPDATE", headers=["Supported: timer", "Session-Expires: 120", "Min-SE: 120"]
    )
    f.response(upd2, 200, headers=["Require: timer", "Session-Expires: 120;refresher=uac"])
    (a,) = _run(f)
    assert a.anomaly == "422_mid_dialog" and a.severity == "info"
    assert a.callee_tag == "b1"
    assert a.fields["final_outcome_status"] == 200


def test_capture_end_reports_the_chain_so_far():
    f = Flow()
    inv = _invite(f)
    _reject(f, inv, None)
    (a,) = _run(f)
    assert a.anomaly == "422_missing_min_se"
    assert a.fields["final_outcome_status"] == 422
