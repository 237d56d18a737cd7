"""C.6: 481 to UPDATE in an early dialog, and 481 to re-INVITE/UPDATE/BYE on confirmed ones."""

from __future__ import annotations

from sipflow import Flow, Sent, sdp

from consumers.detectors.dialog_481 import Dialog481Detector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

RELIABLE = ("Require: 100rel", "RSeq: 1")


def _run(flow: Flow) -> list[AnomalyRecord]:
    return flow.anomalies(Engine(EngineConfig(), detectors=[Dialog481Detector()]))


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _run(flow))


def _early(f: Flow, *, reliable: bool = False, to_tag: str = "b1") -> Sent:
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp(), headers=["Supported: 100rel"])
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.05)
    f.response(
        inv,
        183,
        to_tag=to_tag,
        body=sdp(addr="10.0.0.3", session_id="2002"),
        headers=list(RELIABLE) if reliable else [],
    )
    f.wait(0.5)
    return inv


def test_early_update_481_from_an_unreliable_1xx():
    f = Flow()
    _early(f)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.wait(0.02)
    f.response(upd, 481)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("early_update_481", "high")
    assert a.dialog_state == "early" and a.direction == "callee_to_caller"
    assert a.fields == {
        "to_tag_origin": "183 unreliable",
        "early_dialog_count": 1,
        "ms_since_final": None,
        "crossing_message": None,
    }
    assert len(a.evidence) == 2  # the 481 and the UPDATE


def test_early_update_481_crossing_the_2xx():
    f = Flow()
    inv = _early(f, reliable=True)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.wait(0.01)
    f.response(inv, 200, body=sdp(addr="10.0.0.3", session_id="2002"))
    f.wait(0.01)
    f.response(upd, 481)
    (a,) = _run(f)
    assert a.anomaly == "early_update_481"
    assert a.fields["to_tag_origin"] == "183 reliable"
    assert a.fields["crossing_message"] == "200 INVITE"
    assert a.fields["ms_since_final"] == -10


def test_early_update_481_after_cancel():
    f = Flow()
    inv = _early(f)
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.response(cancel, 200)
    f.wait(0.01)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.wait(0.01)
    f.response(upd, 481)
    (a,) = _run(f)
    assert a.anomaly == "early_update_481" and a.fields["crossing_message"] == "CANCEL"


def test_early_update_481_on_a_fork_after_another_fork_answered():
    f = Flow()
    inv = _early(f, to_tag="x1")
    f.response(inv, 180, to_tag="x2")
    f.wait(0.2)
    f.response(inv, 200, to_tag="x2", body=sdp(addr="10.0.0.3"))
    f.ack(inv, to_tag="x2")
    f.wait(0.3)
    upd = f.request("A", "UPDATE", to_tag="x1", body=sdp(version=2))
    f.wait(0.01)
    f.response(upd, 481)
    (a,) = _run(f)
    assert a.anomaly == "early_update_481" and a.callee_tag == "x1"
    assert a.fields["early_dialog_count"] == 2
    assert a.fields["crossing_message"] == "200 INVITE (other fork tag=x2)"
    assert a.fields["ms_since_final"] == 300


def test_confirmed_dialog_481s():
    f = Flow()
    f.setup()
    f.wait(1)
    re = f.request("A", "INVITE", body=sdp(version=2))
    f.response(re, 481)
    f.hop_ack(re)
    f.wait(1)
    upd = f.request("B", "UPDATE")
    f.response(upd, 481)
    f.wait(1)
    bye = f.request("A", "BYE")
    f.response(bye, 481)
    found = {a.anomaly: a for a in _run(f)}
    assert {k: v.severity for k, v in found.items()} == {
        "reinvite_481": "high",
        "update_481": "high",
        "bye_481": "medium",
    }
    assert found["reinvite_481"].direction == "callee_to_caller"
    assert found["update_481"].direction == "caller_to_callee"
    assert found["reinvite_481"].fields["to_tag_origin"] == "180 unreliable"


def test_reinvite_crossing_a_bye_from_the_other_side_is_the_benign_race():
    f = Flow()
    f.setup()
    f.wait(1)
    re = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.005)
    bye = f.request("B", "BYE")  # crossing the re-INVITE on the wire
    f.wait(0.01)
    f.response(re, 481)
    f.hop_ack(re)
    f.response(bye, 200)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("481_after_bye_race", "info")
    assert a.method == "INVITE" and a.fields["crossing_message"] == "BYE"


def test_crossing_byes_answered_481_are_the_race():
    f = Flow()
    f.setup()
    f.wait(1)
    bye_a = f.request("A", "BYE")
    f.wait(0.002)
    bye_b = f.request("B", "BYE")
    f.wait(0.01)
    f.response(bye_a, 200)
    f.response(bye_b, 481)
    assert _names(f) == ["481_after_bye_race"]


def test_not_c6_prack_cancel_unknown_dialog_and_own_bye():
    f = Flow()
    inv = _early(f, reliable=True)
    pr = f.request("A", "PRACK", headers=["RAck: 1 1 INVITE"])
    f.response(pr, 481)
    f.wait(0.1)
    f.response(inv, 200, body=sdp(addr="10.0.0.3", session_id="2002"))
    f.ack(inv)
    f.wait(1)
    ghost = f.request("A", "UPDATE", to_tag="nope")
    f.response(ghost, 481)
    f.wait(1)
    bye = f.request("A", "BYE")
    f.response(bye, 200)
    late = f.request("A", "INFO")
    f.response(late, 481)
    again = f.request("A", "UPDATE")  # after its own BYE: C.14's business
    f.response(again, 481)
    assert _names(f) == []


def test_retransmitted_481_is_reported_once_and_proxy_481_has_low_confidence():
    f = Flow()
    f.setup()
    f.wait(1)
    upd = f.request("A", "UPDATE")
    f.response(upd, 481)
    f.obs += [o.replace(ts_us=o.ts_us + 3_000_000, ref=o.ref + "r") for o in f.obs[-2:]]
    f.wait(5)
    re = f.request("B", "INVITE", relay=False)
    f.response(re, 481, proxy=True)
    found = _run(f)
    assert [a.anomaly for a in found] == ["update_481", "reinvite_481"]
    assert [a.confidence for a in found] == [1.0, 0.6]


def test_clean_call_with_early_update_yields_nothing():
    f = Flow()
    inv = _early(f, reliable=True)
    pr = f.request("A", "PRACK", headers=["RAck: 1 1 INVITE"])
    f.response(pr, 200)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.response(inv, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.ack(inv)
    f.wait(5)
    f.bye()
    assert _names(f) == []


def test_481_to_a_bye_or_reinvite_on_an_early_dialog_is_not_c6():
    f = Flow()
    _early(f)
    re = f.request("B", "INVITE", body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.response(re, 481)  # C.3's business
    f.wait(0.1)
    bye = f.request("A", "BYE")  # the caller may BYE an early dialog
    f.response(bye, 481)
    assert _names(f) == []


def test_request_sent_after_answering_the_peers_bye_is_not_a_race():
    f = Flow()
    f.setup()
    f.wait(1)
    bye = f.request("B", "BYE")
    f.response(bye, 200)
    f.wait(0.5)
    re = f.request("A", "INVITE", body=sdp(version=2))  # ignored the BYE: C.14's business
    f.response(re, 481)
    assert _names(f) == []
