"""C.4 (UPDATE to a peer that did not advertise it) and C.5 (405/501 to UPDATE)."""

from __future__ import annotations

from sipflow import Flow, sdp

from consumers.detectors.update_support import UpdateSupportDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

WITH = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, PRACK"
WITHOUT = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"
C4_C5 = {
    "update_despite_allow",
    "update_without_allow_info",
    "405_update_allow_said_no",
    "405_update_allow_said_yes",
    "405_update_no_info",
    "405_missing_allow",
    "no_fallback_refresh",
}


def _run(flow: Flow) -> list[AnomalyRecord]:
    engine = Engine(EngineConfig(), detectors=[UpdateSupportDetector()])
    found = flow.anomalies(engine)
    assert {a.anomaly for a in found} <= C4_C5
    return found


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _run(flow))


def _setup(
    f: Flow,
    *,
    a: tuple[str, ...] = (WITH,),
    b180: tuple[str, ...] = (WITH,),
    b200: tuple[str, ...] = (WITH,),
) -> None:
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp(), headers=list(a))
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.05)
    f.response(inv, 180, headers=list(b180))
    f.wait(0.5)
    f.response(inv, 200, body=sdp(addr="10.0.0.3", session_id="2002"), headers=list(b200))
    inv.to_tag = f.tags["B"]
    f.wait(0.05)
    f.ack(inv)
    f.wait(1)


def _update(f: Flow, sender: str = "A", status: int = 200, **kw: object) -> None:
    upd = f.request(sender, "UPDATE", body=sdp(version=2), **kw)  # type: ignore[arg-type]
    f.wait(0.02)
    if status:
        f.response(upd, status, headers=[WITHOUT] if status == 405 else [])
    f.wait(1)


# -- clean flows ---------------------------------------------------------------------------


def test_clean_update_after_allow_with_update():
    f = Flow()
    _setup(f)
    _update(f, "A")
    _update(f, "B")
    f.bye()
    assert _names(f) == []


def test_1xx_allow_of_the_same_dialog_carries_into_the_confirmed_dialog():
    f = Flow()
    _setup(f, b180=(WITH,), b200=())
    _update(f, "A")
    assert _names(f) == []


# -- C.4 -----------------------------------------------------------------------------------


def test_update_despite_allow_answered_200_is_medium():
    f = Flow()
    _setup(f, b180=(WITHOUT,), b200=(WITHOUT,))
    _update(f, "A")
    (a,) = _run(f)
    assert a.anomaly == "update_despite_allow" and a.severity == "medium"
    assert a.method == "UPDATE" and a.direction == "caller_to_callee"
    assert a.fields["allow_state"] == "allow_without_update"
    assert a.fields["peer_allow"] == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert a.fields["peer_allow_source"] == "200 INVITE 1"
    assert len(a.evidence) >= 2  # the UPDATE and the 200 whose Allow it ignored


def test_update_despite_allow_that_breaks_a_hold_is_high():
    f = Flow()
    _setup(f, b180=(WITHOUT,), b200=(WITHOUT,))
    _update(f, "A", status=405)
    found = {a.anomaly: a for a in _run(f)}
    assert set(found) == {"update_despite_allow", "405_update_allow_said_no"}
    assert found["update_despite_allow"].severity == "high"


def test_update_without_allow_info_is_info_then_low_when_refused():
    f = Flow()
    _setup(f, b180=(), b200=())
    _update(f, "A")
    (a,) = _run(f)
    assert (a.anomaly, a.severity) == ("update_without_allow_info", "info")
    assert a.fields["allow_state"] == "no_allow_seen" and a.fields["peer_allow"] is None

    f = Flow()
    _setup(f, b180=(), b200=())
    _update(f, "A", status=405)
    found = {a.anomaly: a for a in _run(f)}
    assert found["update_without_allow_info"].severity == "low"
    assert found["405_update_no_info"].severity == "low"


def test_allow_of_the_invite_describes_the_caller_not_the_callee():
    # The caller lists UPDATE, the callee says nothing: the caller's own Allow must not
    # count as the callee's; the callee's UPDATE toward the caller is sanctioned.
    f = Flow()
    _setup(f, a=(WITH,), b180=(), b200=())
    _update(f, "B")
    assert _names(f) == []
    f = Flow()
    _setup(f, a=(WITH,), b180=(), b200=())
    _update(f, "A")
    assert _names(f) == ["update_without_allow_info"]
    # And the other way round: the caller's Allow without UPDATE binds only the callee.
    f = Flow()
    _setup(f, a=(WITHOUT,), b180=(WITH,), b200=(WITH,))
    _update(f, "A")
    assert _names(f) == []
    f = Flow()
    _setup(f, a=(WITHOUT,), b180=(WITH,), b200=(WITH,))
    _update(f, "B")
    assert _names(f) == ["update_despite_allow"]


def test_allow_in_a_1xx_of_another_fork_does_not_count():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp(), headers=[WITH])
    f.wait(0.05)
    f.response(inv, 183, to_tag="x1", headers=[WITHOUT])
    f.response(inv, 183, to_tag="x2", headers=[WITH])
    f.wait(0.5)
    upd = f.request("A", "UPDATE", to_tag="x2", body=sdp(version=2))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", version=2))
    f.wait(0.5)
    upd = f.request("A", "UPDATE", to_tag="x1", body=sdp(version=3))
    f.response(upd, 200, body=sdp(addr="10.0.0.3", version=2))
    (a,) = _run(f)
    assert a.anomaly == "update_despite_allow" and a.callee_tag == "x1"
    assert a.fields["peer_allow_source"] == "183 INVITE 1"


def test_mid_dialog_options_answer_teaches_support():
    f = Flow()
    _setup(f, b180=(WITHOUT,), b200=(WITHOUT,))
    opt = f.request("A", "OPTIONS")
    f.response(opt, 200, headers=[WITH])
    f.wait(1)
    _update(f, "A")
    assert _names(f) == []


def test_method_tokens_are_case_sensitive():
    f = Flow()
    _setup(f, b180=(), b200=("Allow: INVITE, ACK, BYE, update",))
    _update(f, "A")
    (a,) = _run(f)
    assert a.anomaly == "update_despite_allow" and a.confidence == 0.5


def test_retransmitted_update_is_reported_once():
    f = Flow()
    _setup(f, b180=(WITHOUT,), b200=(WITHOUT,))
    f.request("A", "UPDATE", body=sdp(version=2))
    copies = [o.replace(ts_us=o.ts_us + 2_500_000, ref=o.ref + "r") for o in f.obs[-2:]]
    f.obs += copies
    f.wait(40)
    f.bye()
    found = _run(f)
    assert [a.anomaly for a in found] == ["update_despite_allow"]
    assert found[0].severity == "medium"


def test_unanswered_update_is_reported_at_capture_end():
    f = Flow()
    _setup(f, b180=(WITHOUT,), b200=(WITHOUT,))
    f.request("A", "UPDATE", body=sdp(version=2))
    assert _names(f) == ["update_despite_allow"]


def test_no_claim_of_missing_allow_when_the_call_setup_was_not_captured():
    f = Flow()
    _update(f, "A")
    assert _names(f) == []


def test_proxy_generated_allow_teaches_nothing():
    f = Flow()
    _setup(f, b180=(), b200=())
    opt = f.request("A", "OPTIONS")
    f.response(opt, 200, headers=[WITH], proxy=True)  # the proxy answering for itself
    f.wait(1)
    _update(f, "A")
    assert _names(f) == ["update_without_allow_info"]


# -- C.5 -----------------------------------------------------------------------------------


def test_405_after_allow_said_yes_and_learning_from_the_405():
    f = Flow()
    _setup(f)
    _update(f, "A", status=405)
    _update(f, "A", status=405)
    found = _run(f)
    first = next(a for a in found if a.anomaly == "405_update_allow_said_yes")
    assert first.severity == "high" and first.direction == "callee_to_caller"
    assert first.status == 405
    assert first.fields["prior_allow_state"] == "allow_has_update"
    assert first.fields["responder_allow"] == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert first.fields["update_purpose"] == "offer"
    assert first.fields["new_allow_lacks_update"] is True
    # The 405's Allow is the callee's latest word: the second UPDATE ignored it.
    assert sorted(a.anomaly for a in found) == [
        "405_update_allow_said_no",
        "405_update_allow_said_yes",
        "update_despite_allow",
    ]


def test_405_without_allow_is_missing_allow():
    f = Flow()
    _setup(f)
    upd = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(upd, 405)
    assert _names(f) == ["405_missing_allow", "405_update_allow_said_yes"]
    (a,) = [a for a in _run(f) if a.anomaly == "405_missing_allow"]
    assert a.severity == "low" and a.fields["new_allow_lacks_update"] is None


def test_501_is_classified_without_a_missing_allow_claim():
    f = Flow()
    _setup(f, b180=(), b200=())
    upd = f.request("A", "UPDATE", headers=["Session-Expires: 1800"])
    f.response(upd, 501)
    found = {a.anomaly: a for a in _run(f)}
    assert set(found) == {"405_update_no_info", "update_without_allow_info"}
    assert found["405_update_no_info"].status == 501
    assert found["405_update_no_info"].fields["update_purpose"] == "refresh-no-SDP"


def test_proxy_generated_501_has_low_confidence():
    f = Flow()
    _setup(f)
    upd = f.request("A", "UPDATE", body=sdp(version=2), relay=False)
    f.response(upd, 501, proxy=True)
    (a,) = _run(f)
    assert a.anomaly == "405_update_allow_said_yes" and a.confidence == 0.5


def _timer_call(f: Flow) -> None:
    se = "Session-Expires: 90;refresher=uac"
    _setup(f, b200=(WITH, se, "Require: timer"))  # expiry at about 90.6 s


def _refresh_refused(f: Flow) -> None:
    f.at(45)
    upd = f.request("A", "UPDATE", headers=["Session-Expires: 90;refresher=uac"])
    f.wait(0.02)
    f.response(upd, 405, headers=[WITHOUT])


def test_no_fallback_refresh_when_nothing_follows_before_expiry():
    f = Flow()
    _timer_call(f)
    _refresh_refused(f)
    f.at(120)
    opt = f.request("B", "OPTIONS")
    f.response(opt, 200)
    found = {a.anomaly: a for a in _run(f)}
    assert set(found) == {"405_update_allow_said_yes", "no_fallback_refresh"}
    a = found["no_fallback_refresh"]
    assert a.severity == "high" and a.direction == "caller_to_callee"
    assert a.fields["update_purpose"] == "refresh-no-SDP"
    assert a.fields["session_expires_s"] == 90
    assert abs(a.fields["t_expiry"] - a.event_time_us) == 0


def test_no_fallback_refresh_seen_through_the_expiry_bye():
    f = Flow()
    _timer_call(f)
    _refresh_refused(f)
    f.at(80)  # the non-refresher's BYE, min(32, 90/3) = 30 s before expiry
    f.bye("B")
    assert "no_fallback_refresh" in _names(f)


def test_fallback_reinvite_before_expiry_is_fine():
    f = Flow()
    _timer_call(f)
    _refresh_refused(f)
    f.wait(0.5)
    re = f.request("A", "INVITE", body=sdp(version=1))
    f.response(re, 200, body=sdp(addr="10.0.0.3", session_id="2002"))
    f.ack(re)
    f.at(120)
    f.bye("A")
    assert _names(f) == ["405_update_allow_said_yes"]


def test_no_fallback_claim_when_capture_ends_before_expiry_or_call_ended_early():
    f = Flow()
    _timer_call(f)
    _refresh_refused(f)
    f.wait(5)
    f.request("B", "OPTIONS")
    assert _names(f) == ["405_update_allow_said_yes"]
    f = Flow()
    _timer_call(f)
    _refresh_refused(f)
    f.wait(5)
    f.bye("A")  # hung up long before the refresh was due
    f.at(200)
    f.request("B", "OPTIONS", in_dialog=False)
    assert _names(f) == ["405_update_allow_said_yes"]


def test_no_fallback_only_for_session_refreshes():
    f = Flow()
    _timer_call(f)
    f.at(45)
    _update(f, "A", status=405)  # an offer, not a refresh
    f.at(120)
    f.request("B", "OPTIONS")
    assert _names(f) == ["405_update_allow_said_yes"]
