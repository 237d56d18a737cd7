"""C.14: dialog-level sanity (CSeq order, requests after BYE, unknown dialogs, forked 2xx,
callee BYE on an early dialog)."""

from __future__ import annotations

from sipflow import Flow, sdp

from consumers.detectors.dialog_sanity import DialogSanityDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

ANSWER = sdp(addr="10.0.0.3", session_id="2002")


def _anomalies(flow: Flow) -> list[AnomalyRecord]:
    return flow.anomalies(Engine(EngineConfig(), detectors=[DialogSanityDetector()]))


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _anomalies(flow))


def _call() -> Flow:
    f = Flow()
    f.setup()
    f.wait(2)
    return f


def _transaction(f: Flow, sender: str, method: str, status: int = 200, **kw: object) -> None:
    req = f.request(sender, method, **kw)  # type: ignore[arg-type]
    f.wait(0.05)
    f.response(req, status)
    if method == "INVITE" and status < 300:
        f.ack(req)
    elif method == "INVITE":
        f.hop_ack(req)
    f.wait(1)


# -- clean ---------------------------------------------------------------------------------


def test_clean_call_with_reinvite_update_cancel_and_gaps():
    f = _call()
    _transaction(f, "A", "INVITE", body=sdp(version=2))
    _transaction(f, "B", "UPDATE")
    _transaction(f, "A", "INFO", cseq=9)  # gaps are normal (a challenged request was resent)
    re_inv = f.request("B", "INVITE")
    f.wait(0.5)
    cancel = f.request("B", "CANCEL", cseq=re_inv.cseq, branch=re_inv.branch)  # same CSeq
    f.response(cancel, 200)
    f.response(re_inv, 487)
    f.hop_ack(re_inv)  # the ACK reuses the INVITE's CSeq too
    f.wait(1)
    _transaction(f, "B", "INVITE")
    f.bye("B")
    assert _names(f) == []


# -- CSeq ----------------------------------------------------------------------------------


def test_cseq_regression():
    f = _call()
    _transaction(f, "B", "UPDATE", cseq=20)
    _transaction(f, "B", "INFO", cseq=7)
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction, a.cseq) == (
        "cseq_regression",
        "medium",
        "callee_to_caller",
        7,
    )
    assert a.fields["last_cseq"] == 20 and a.fields["last_method"] == "UPDATE"
    assert a.confidence == 1.0


def test_caller_cseq_below_the_initial_invite():
    f = Flow()
    f.cseq["A"] = 41
    f.setup()  # the initial INVITE has CSeq 42
    f.wait(2)
    _transaction(f, "A", "INVITE", cseq=3, body=sdp(version=2))
    (a,) = _anomalies(f)
    assert a.anomaly == "cseq_regression" and a.fields["last_cseq"] == 42


def test_late_ack_of_the_initial_invite_is_no_regression():
    # RFC 5407 §3.1.4: the re-INVITE crosses the 2xx retransmission; the late ACK has CSeq 1.
    f = Flow()
    inv = f.setup(ack=False)
    f.wait(0.3)
    _transaction(f, "A", "INVITE", body=sdp(version=2))
    f.ack(inv)
    f.wait(1)
    f.bye()
    assert _names(f) == []


def test_reordered_lower_cseq_has_lower_confidence():
    f = _call()
    f.request("A", "INFO", cseq=5)
    f.wait(0.02)
    f.request("A", "INFO", cseq=4)
    (a,) = _anomalies(f)
    assert a.anomaly == "cseq_regression" and a.confidence == 0.5
    assert a.fields["possibly_reordered"] is True


# -- after BYE -----------------------------------------------------------------------------


def test_request_after_own_bye_answered_481():
    f = _call()
    f.bye("A")
    f.wait(1)
    _transaction(f, "A", "INFO", status=481)
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity) == ("in_dialog_request_after_bye", "info")
    assert a.fields["response_status"] == 481 and a.fields["crossing"] is False
    assert len(a.evidence) == 2


def test_request_on_an_early_dialog_ended_by_a_failure_is_not_after_bye():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 183, body=ANSWER)
    f.wait(1)
    f.response(inv, 486)
    f.hop_ack(inv)
    f.wait(0.01)
    _transaction(f, "A", "UPDATE", status=481)  # crossed the 486
    assert _names(f) == []


def test_request_after_bye_answered_200_is_low():
    f = _call()
    f.bye("B")
    f.wait(2)
    _transaction(f, "A", "INVITE", body=sdp(version=2))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction) == (
        "in_dialog_request_after_bye",
        "low",
        "caller_to_callee",
    )


def test_reinvite_crossing_a_bye_is_reported_as_crossing():
    f = _call()
    bye = f.request("B", "BYE")
    f.wait(0.01)
    re_inv = f.request("A", "INVITE", body=sdp(version=2))
    f.response(bye, 200)
    f.response(re_inv, 481)
    f.hop_ack(re_inv)
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.fields["crossing"]) == (
        "in_dialog_request_after_bye",
        "info",
        True,
    )


def test_notify_of_a_refer_subscription_may_follow_the_bye():
    f = _call()
    _transaction(f, "A", "REFER", status=202, headers=["Refer-To: <sip:c@example.com>"])
    f.bye("A")
    f.wait(0.5)
    _transaction(f, "B", "NOTIFY", headers=["Event: refer", "Subscription-State: terminated"])
    assert _names(f) == []


def test_unanswered_request_after_bye_is_reported_at_the_end():
    f = _call()
    f.bye("A")
    f.wait(1)
    f.request("B", "OPTIONS")
    (a,) = _anomalies(f)
    assert a.anomaly == "in_dialog_request_after_bye" and a.fields["response_status"] == 0


# -- unknown dialogs -----------------------------------------------------------------------


def test_unknown_dialog_request_answered_481():
    f = _call()
    _transaction(f, "A", "BYE", status=481, to_tag="zz9")
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.fields["cause"]) == (
        "unknown_dialog_request",
        "low",
        "peer_has_no_dialog",
    )
    assert a.callee_tag == "zz9"


def test_unknown_dialog_answered_2xx_is_a_capture_gap():
    f = _call()
    _transaction(f, "A", "INFO", to_tag="zz9")
    (a,) = _anomalies(f)
    assert (a.severity, a.confidence, a.fields["cause"]) == ("info", 0.3, "capture_gap")


def test_hop_by_hop_ack_of_a_failure_is_no_unknown_dialog():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 486, to_tag="x7")
    f.hop_ack(inv, to_tag="x7")
    assert _names(f) == []


def test_capture_started_mid_call_is_not_unknown():
    f = Flow()
    _transaction(f, "A", "INVITE", body=sdp(version=2))
    f.bye()
    assert _names(f) == []


# -- forking and early BYE -----------------------------------------------------------------


def test_multiple_2xx_from_forks():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 180, to_tag="x1")
    f.response(inv, 180, to_tag="x2")
    f.wait(1)
    f.response(inv, 200, to_tag="x1", body=ANSWER)
    f.ack(inv, to_tag="x1")
    f.wait(0.1)
    f.response(inv, 200, to_tag="x2", body=ANSWER)
    f.ack(inv, to_tag="x2")
    f.wait(4)  # a 2xx retransmission on x2 is the same dialog
    f.response(inv, 200, to_tag="x2", body=ANSWER)
    f.request("A", "BYE", to_tag="x2")
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.callee_tag) == ("multiple_2xx_forked", "info", "x2")
    assert a.fields["to_tags"] == ["x1", "x2"] and len(a.evidence) == 2


def test_early_bye_by_callee():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 183, body=ANSWER)
    f.wait(2)
    f.request("B", "BYE")
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction, a.dialog_state) == (
        "early_bye_by_callee",
        "medium",
        "callee_to_caller",
        "early",
    )


def test_caller_may_bye_an_early_dialog():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 183, body=ANSWER)
    f.wait(2)
    bye = f.request("A", "BYE")
    f.response(bye, 200)
    assert _names(f) == []
