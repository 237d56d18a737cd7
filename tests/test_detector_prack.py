"""C.13: reliable provisional responses, PRACK, and early UPDATE offers (RFC 3262, 3311 §5.1)."""

from __future__ import annotations

from sipflow import Flow, Sent, sdp

from consumers.detectors.prack import PrackDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

OFFER = sdp()
ANSWER = sdp(addr="10.0.0.3", session_id="2002")


def _run(flow: Flow) -> list[AnomalyRecord]:
    return flow.anomalies(Engine(EngineConfig(), detectors=[PrackDetector()]))


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _run(flow))


def _invite(f: Flow, *, offer: bool = True, supported: bool = True) -> Sent:
    headers = ["Supported: 100rel, timer"] if supported else ["Supported: timer"]
    inv = f.request("A", "INVITE", in_dialog=False, body=OFFER if offer else "", headers=headers)
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.05)
    return inv


def _rel(f: Flow, inv: Sent, rseq: int, status: int = 183, body: str = "", **kw: object) -> Sent:
    hdrs = ["Require: 100rel", f"RSeq: {rseq}"]
    sent = f.response(inv, status, body=body, headers=hdrs, **kw)  # type: ignore[arg-type]
    f.wait(0.05)
    return sent


def _prack(f: Flow, rseq: int, *, body: str = "", answer_200: bool = True, **kw: object) -> Sent:
    pr = f.request("A", "PRACK", headers=[f"RAck: {rseq} 1 INVITE"], body=body, **kw)  # type: ignore[arg-type]
    f.wait(0.02)
    if answer_200:
        f.response(pr, 200)
        f.wait(0.02)
    return pr


def _answer(f: Flow, inv: Sent, body: str = "", to_tag: str | None = None) -> None:
    f.response(inv, 200, body=body, to_tag=to_tag)
    inv.to_tag = to_tag or f.tags["B"]
    f.wait(0.05)
    f.ack(inv)
    f.wait(1)


# -- clean ---------------------------------------------------------------------------------


def test_clean_100rel_call_with_early_updates():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    _prack(f, 1)
    upd = f.request("B", "UPDATE", body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.response(upd, 200, body=sdp(version=2))
    upd = f.request("A", "UPDATE", body=sdp(version=3))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=3))
    _rel(f, inv, 2, status=180)
    _prack(f, 2)
    _answer(f, inv)
    f.bye()
    assert _names(f) == []


def test_retransmitted_reliable_1xx_is_not_a_new_one():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    f.obs += [o.replace(ts_us=o.ts_us + 2_500_000, ref=o.ref + "r") for o in f.obs[-2:]]
    f.wait(3)
    _prack(f, 1)
    _answer(f, inv)
    assert _names(f) == []


# -- rules ---------------------------------------------------------------------------------


def test_reliable_1xx_without_supported_once_per_invite():
    f = Flow()
    inv = _invite(f, supported=False)
    _rel(f, inv, 1, body=ANSWER)
    _prack(f, 1)
    _rel(f, inv, 2, status=180)
    _prack(f, 2)
    _answer(f, inv)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("reliable_1xx_without_supported", "medium")
    assert a.direction == "callee_to_caller" and a.status == 183
    assert a.fields["invite_supported"] == ["timer"]


def test_require_100rel_in_the_invite_is_enough():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=OFFER, headers=["Require: 100rel"])
    f.wait(0.05)
    _rel(f, inv, 1, body=ANSWER)
    _prack(f, 1)
    _answer(f, inv)
    assert _names(f) == []


def test_rseq_gap():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 7, body=ANSWER)  # any first value is fine
    _prack(f, 7)
    _rel(f, inv, 9, status=180)
    _prack(f, 9)
    _answer(f, inv)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("rseq_gap", "low")
    assert a.fields == {"rseq": 9, "expected_rseq": 8}


def test_second_reliable_1xx_before_prack():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, status=180)
    _rel(f, inv, 2, body=ANSWER)
    _prack(f, 1)
    _prack(f, 2)
    _answer(f, inv)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("second_reliable_1xx_before_prack", "low")
    assert a.fields == {"rseq": 2, "unacked_rseq": 1} and len(a.evidence) == 2
    assert a.confidence == 0.6  # no PRACK seen yet on the dialog: maybe a tracing gap


def test_second_reliable_1xx_before_prack_once_pracks_are_seen():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, status=180)
    _prack(f, 1)
    _rel(f, inv, 2, body=ANSWER)
    _rel(f, inv, 3, status=181)
    _prack(f, 2)
    _prack(f, 3)
    _answer(f, inv)
    (a,) = _run(f)
    assert a.fields == {"rseq": 3, "unacked_rseq": 2} and a.confidence == 1.0


def test_2xx_before_prack_of_sdp_1xx():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    _answer(f, inv)
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("2xx_before_prack_of_sdp_1xx", "medium")
    assert a.status == 200 and a.direction == "callee_to_caller"
    assert a.confidence == 0.6  # no PRACK at all was captured: maybe a tracing gap


def test_2xx_before_prack_of_a_1xx_without_sdp_is_allowed():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, status=180)
    _answer(f, inv, body=ANSWER)
    assert _names(f) == []


def test_2xx_on_another_fork_is_not_before_prack():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER, to_tag="x1")
    _answer(f, inv, body=ANSWER, to_tag="x2")
    assert _names(f) == []


def test_absence_of_prack_is_not_judged_when_the_proxy_is_not_in_the_route_set():
    f = Flow(record_route=False)
    inv = _invite(f)
    _rel(f, inv, 1, status=180)
    _rel(f, inv, 2, body=ANSWER)
    _answer(f, inv)
    assert _names(f) == []


def test_prack_481_matched_or_not():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    pr = _prack(f, 1, answer_200=False)
    f.response(pr, 481)
    f.wait(0.02)
    pr = _prack(f, 5, answer_200=False)
    f.response(pr, 481)
    f.wait(0.02)
    _answer(f, inv)
    found = [a for a in _run(f) if a.anomaly == "prack_481"]
    assert [a.severity for a in found] == ["medium", "medium"]
    assert [a.fields["matched_reliable_1xx"] for a in found] == [True, False]
    assert [a.direction for a in found] == ["callee_to_caller", "caller_to_callee"]
    assert found[1].fields["rack"] == "5 1 INVITE"


def test_retransmitted_prack_481_is_reported_once():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    pr = _prack(f, 3, answer_200=False)
    f.response(pr, 481)
    f.obs += [o.replace(ts_us=o.ts_us + 2_500_000, ref=o.ref + "r") for o in f.obs[-2:]]
    f.wait(3)
    _prack(f, 1)
    _answer(f, inv)
    assert _names(f) == ["prack_481"]


# -- RFC 3311 §5.1: UPDATE offers in the early dialog --------------------------------------


def _violations(f: Flow) -> list[str]:
    return [a.fields["violation"] for a in _run(f) if a.anomaly == "update_offer_before_prack"]


def test_update_offer_after_an_unreliable_answer():
    f = Flow()
    inv = _invite(f)
    f.response(inv, 183, body=ANSWER)
    f.wait(0.1)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("update_offer_before_prack", "medium")
    assert a.fields["violation"] == "answer_not_in_reliable_1xx"
    assert a.fields["sender_role"] == "caller" and a.fields["invite_had_offer"] is True


def test_offer_in_invite_callee_needs_the_prack_caller_does_not():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    upd = f.request("A", "UPDATE", body=sdp(version=2))  # caller: reliable answer suffices
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    upd = f.request("B", "UPDATE", body=sdp(addr="10.0.0.3", session_id="2002", version=3))
    f.response(upd, 200, body=sdp(version=3))
    assert _violations(f) == ["answer_1xx_not_pracked"]


def test_no_offer_in_invite_answer_must_be_in_the_prack_and_answered():
    f = Flow()
    inv = _invite(f, offer=False)
    _rel(f, inv, 1, body=ANSWER)  # the callee's offer
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 491)
    pr = _prack(f, 1, body=OFFER, answer_200=False)  # the answer, 200 not yet seen
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 491)
    f.response(pr, 200)
    upd = f.request("A", "UPDATE", body=sdp(version=2))  # now fine
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    upd = f.request("B", "UPDATE", body=sdp(addr="10.0.0.3", session_id="2002", version=3))
    f.response(upd, 200, body=sdp(version=3))
    assert _violations(f) == ["answer_not_in_prack", "prack_not_answered"]


def test_no_offer_in_invite_and_no_reliable_offer():
    f = Flow()
    inv = _invite(f, offer=False)
    f.response(inv, 183, body=ANSWER)
    upd = f.request("B", "UPDATE", body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.response(upd, 200, body=OFFER)
    (a,) = _run(f)
    assert a.fields["violation"] == "offer_not_in_reliable_1xx"
    assert a.fields["sender_role"] == "callee"


def test_update_without_sdp_and_confirmed_dialog_updates_are_not_checked():
    f = Flow()
    inv = _invite(f)
    f.response(inv, 180)
    upd = f.request("A", "UPDATE", headers=["Session-Expires: 1800"])
    f.response(upd, 200)
    _answer(f, inv, body=ANSWER)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    assert _names(f) == []


def test_prack_based_sequencing_not_judged_without_route_set():
    f = Flow(record_route=False)
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    upd = f.request("B", "UPDATE", body=sdp(addr="10.0.0.3", session_id="2002", version=2))
    f.response(upd, 200, body=sdp(version=2))
    assert _names(f) == []


def test_reliable_1xx_resent_with_other_bytes_is_still_a_retransmission():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, body=ANSWER)
    f.wait(2.5)  # past the dedup window: a new logical message
    hdrs = ["Require: 100rel", "RSeq: 1", "Server: UA-B/1.0 (resent)"]
    f.response(inv, 183, body=ANSWER, headers=hdrs)
    f.wait(0.1)
    _rel(f, inv, 2, status=180)
    _prack(f, 1)
    _prack(f, 2)
    _answer(f, inv)
    names = _names(f)
    assert "rseq_gap" not in names
    assert names == ["second_reliable_1xx_before_prack"]  # RSeq 2 came before PRACK 1


def test_prack_crossing_the_2xx_answered_481_is_a_low_confidence_race():
    f = Flow()
    inv = _invite(f)
    _rel(f, inv, 1, status=180)
    f.response(inv, 200, body=ANSWER)
    f.wait(0.005)
    pr = _prack(f, 1, answer_200=False)
    f.response(pr, 481)
    inv.to_tag = f.tags["B"]
    f.ack(inv)
    (a,) = _run(f)
    assert a.anomaly == "prack_481" and a.fields["after_final"] is True
    assert a.confidence == 0.5
