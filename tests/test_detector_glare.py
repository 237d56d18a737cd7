"""C.1 detector: 491 glare, spurious 491, retry timers, no retry, repeated glare."""

from __future__ import annotations

import pickle

from sipflow import T0, Flow, Sent, sdp

from consumers.detectors.early_reinvite import EarlyReinviteDetector
from consumers.detectors.glare import GlareDetector
from consumers.detectors.overlap import OverlapDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

C1 = {
    "glare_491",
    "spurious_491",
    "glare_retry_too_early",
    "glare_retry_late",
    "glare_no_retry",
    "glare_repeat",
}


def run(flow: Flow, *, all_three: bool = False) -> list[AnomalyRecord]:
    dets = [GlareDetector()]
    if all_three:
        dets += [OverlapDetector(), EarlyReinviteDetector()]
    return flow.anomalies(Engine(EngineConfig(), detectors=dets))


def names(recs: list[AnomalyRecord]) -> list[str]:
    return sorted(r.anomaly for r in recs)


def of(recs: list[AnomalyRecord], name: str) -> list[AnomalyRecord]:
    return [r for r in recs if r.anomaly == name]


def crossing(f: Flow, *, a_offer: bool = True, b_offer: bool = True) -> tuple[Sent, Sent]:
    """Both sides send a re-INVITE at about the same time and both get 491."""
    x = f.request("A", "INVITE", body=sdp(version=2) if a_offer else "")
    f.wait(0.005)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002") if b_offer else "")
    f.wait(0.01)
    f.response(x, 491)
    f.response(y, 491)
    f.wait(0.01)
    f.hop_ack(x)
    f.hop_ack(y)
    return x, y


def reinvite_ok(f: Flow, sender: str, version: int = 3) -> Sent:
    req = f.request(sender, "INVITE", body=sdp(version=version))
    f.wait(0.02)
    f.response(req, 200, body=sdp(version=version, session_id="9"))
    f.wait(0.02)
    f.ack(req)
    return req


def established() -> Flow:
    f = Flow()
    f.setup()
    f.wait(2)
    return f


# -- the glare event -------------------------------------------------------------------------


def test_crossing_reinvites_give_one_glare_491_per_491():
    f = established()
    x, y = crossing(f)
    f.wait(1.0)
    reinvite_ok(f, "B")  # non-owner retries inside 0-2 s
    f.wait(1.5)
    reinvite_ok(f, "A")  # owner retries inside 2.1-4 s
    f.wait(5)
    f.bye()
    recs = run(f)
    assert names(recs) == ["glare_491", "glare_491"]
    by_dir = {r.direction: r for r in recs}
    to_a = by_dir["caller_to_callee"]  # the 491 the caller got (its X crossed B's Y)
    assert to_a.fields["glare_peer_method"] == "INVITE"
    assert to_a.fields["glare_peer_cseq"] == y.cseq
    assert (to_a.fields["expected_min_ms"], to_a.fields["expected_max_ms"]) == (2100, 4000)
    assert to_a.fields["owner_known"] is True and to_a.fields["retry_count"] == 0
    assert to_a.cseq == x.cseq and to_a.status == 491 and to_a.severity == "info"
    to_b = by_dir["callee_to_caller"]
    assert (to_b.fields["expected_min_ms"], to_b.fields["expected_max_ms"]) == (0, 2000)
    assert to_b.fields["glare_peer_cseq"] == x.cseq


def test_update_with_offer_crossing_reinvite_is_glare():
    # RFC 5407 §3.3.2: UPDATE with SDP crossing a re-INVITE, both 491.
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.005)
    u = f.request("B", "UPDATE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(x, 491)
    f.response(u, 491)
    f.hop_ack(x)
    f.wait(0.8)
    reinvite_ok(f, "B")
    recs = run(f)
    assert names(recs) == ["glare_491", "glare_491"]
    peers = sorted(r.fields["glare_peer_method"] for r in recs)
    assert peers == ["INVITE", "UPDATE"]


def test_reinvites_without_sdp_still_glare():
    # RFC 6141 §3.5: the 3261 glare rules cover re-INVITEs even without offers.
    f = established()
    crossing(f, a_offer=False, b_offer=False)
    f.wait(0.5)
    reinvite_ok(f, "B")
    assert names(run(f)) == ["glare_491", "glare_491"]


# -- spurious 491 ----------------------------------------------------------------------------


def test_491_with_nothing_outstanding_is_spurious():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.02)
    f.response(x, 491)
    f.hop_ack(x)
    f.wait(3)
    reinvite_ok(f, "A")
    recs = run(f)
    assert names(recs) == ["spurious_491"]
    (r,) = recs
    assert r.direction == "callee_to_caller"  # the responder is the offender
    assert r.severity == "medium" and r.confidence == 0.9
    assert r.fields["glare_peer_method"] == ""


def test_update_without_sdp_crossing_reinvite_must_not_get_491():
    # RFC 5407 §3.3.2: an UPDATE without SDP (session refresh) crossing a re-INVITE
    # succeeds; the 491 to it is spurious even though a re-INVITE was in flight.
    f = established()
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.005)
    u = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.01)
    f.response(u, 491)
    f.response(y, 200, body=sdp(version=2))
    f.ack(y)
    f.wait(3)
    u2 = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.response(u2, 200)
    recs = run(f)
    assert names(recs) == ["spurious_491"]
    (r,) = recs
    assert r.fields["x_has_offer"] is False
    assert r.fields["glare_peer_method"] == "INVITE" and r.fields["glare_peer_cseq"] == y.cseq


def test_update_without_sdp_crossing_reinvite_answered_200_is_clean():
    f = established()
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.005)
    u = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.01)
    f.response(u, 200, headers=["Session-Expires: 1800;refresher=uac"])
    f.response(y, 200, body=sdp(version=2))
    f.ack(y)
    assert run(f) == []


def test_rfc5407_3_1_5_reinvite_before_ack_of_2xx_offer():
    # Initial INVITE without SDP: the 2xx carries the offer, the (late) ACK the answer. A
    # re-INVITE arriving before that ACK legitimately gets 491.
    f = Flow()
    inv = f.setup(offer="", answer=sdp(session_id="2002"), ack=False)
    f.wait(0.05)
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(x, 491)
    f.hop_ack(x)
    f.wait(0.3)
    f.ack(inv, body=sdp())
    f.wait(2.5)
    reinvite_ok(f, "A")
    recs = run(f)
    assert names(recs) == ["glare_491"]
    assert recs[0].fields["crossing"] == "rfc5407_2xx_not_acked"


def test_rfc5407_3_1_4_reinvite_before_ack_may_get_491_or_200():
    for answer in (491, 200):
        f = Flow()
        inv = f.setup(ack=False)
        f.wait(0.05)
        x = f.request("A", "INVITE", body=sdp(version=2))
        f.wait(0.01)
        if answer == 491:
            f.response(x, 491)
            f.hop_ack(x)
        else:
            f.response(x, 200, body=sdp(version=2, session_id="2002"))
        f.wait(0.2)
        f.ack(inv)
        if answer == 200:
            f.ack(x)
        f.wait(2.5)
        reinvite_ok(f, "A", version=4)
        recs = run(f)
        assert "spurious_491" not in names(recs)
        assert names(recs) == (["glare_491"] if answer == 491 else [])


def test_491_to_an_overlapping_request_of_the_same_side_is_left_to_c2():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    u = f.request("A", "UPDATE", body=sdp(version=3))
    f.wait(0.01)
    f.response(u, 491)
    f.response(x, 200, body=sdp(version=2, session_id="2002"))
    f.ack(x)
    assert of(run(f), "spurious_491") == []


# -- retry timers ----------------------------------------------------------------------------


def test_owner_retry_too_early_measured_from_491_out_copy():
    f = established()
    crossing(f)
    t491 = f.t - 0.01  # the 491s were sent 10 ms before the ACKs; out-copies 0.2 ms later
    f.wait(1.0)
    t_retry = f.t
    retry = reinvite_ok(f, "A")
    recs = run(f)
    (early,) = of(recs, "glare_retry_too_early")
    assert early.direction == "caller_to_callee" and early.severity == "medium"
    assert early.cseq == retry.cseq
    assert early.fields["t_491"] == round((t491 + 0.0002) * 1e6)
    assert early.fields["t_retry"] == round(t_retry * 1e6)
    assert early.fields["retry_delay_ms"] == 1009  # 1010 ms minus the 0.2 ms hop
    assert early.fields["retry_count"] == 1 and early.fields["owner_known"] is True
    assert early.call_id_owner == "self"


def test_retry_within_tolerance_is_fine():
    f = established()
    crossing(f)
    f.wait(2.05)  # owner: 2.1 s minus less than the 100 ms tolerance
    reinvite_ok(f, "A")
    g = established()
    crossing(g)
    g.wait(2.08)  # non-owner: 2.0 s plus less than the tolerance
    reinvite_ok(g, "B")
    assert names(run(f)) == ["glare_491", "glare_491"]
    assert names(run(g)) == ["glare_491", "glare_491"]


def test_non_owner_retry_late():
    f = established()
    crossing(f)
    f.wait(2.5)
    reinvite_ok(f, "B")
    recs = run(f)
    (late,) = of(recs, "glare_retry_late")
    assert late.direction == "callee_to_caller" and late.severity == "low"
    assert late.fields["expected_max_ms"] == 2000 and late.fields["retry_delay_ms"] == 2509


def test_owner_retry_late():
    f = established()
    crossing(f)
    f.wait(4.3)
    reinvite_ok(f, "A")
    (late,) = of(run(f), "glare_retry_late")
    assert late.direction == "caller_to_callee" and late.fields["expected_max_ms"] == 4000


def test_ack_for_the_491_is_not_the_retry():
    # The hop-by-hop ACK has the INVITE's CSeq; taken as a retry it would be "too early".
    f = established()
    x, _ = crossing(f)
    f.wait(0.3)
    f.hop_ack(x)  # the same ACK seen again later (a second trace point)
    f.wait(2.5)
    reinvite_ok(f, "A")
    assert names(run(f)) == ["glare_491", "glare_491"]


def test_udp_retransmissions_are_not_new_transactions_or_new_491s():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.005)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    x_obs = [o for o in f.obs if f"branch={x.branch}" in o.payload.decode()]
    f.wait(0.01)
    f.response(x, 491)
    r491 = [o for o in f.obs if o.payload.startswith(b"SIP/2.0 491")]
    f.response(y, 491)
    f.hop_ack(x)
    f.hop_ack(y)
    # X again 0.5 s (a transport copy) and 3 s later (a tracker retransmission), and the
    # 491 again after 0.5 s and 3 s: none of them is a new transaction or a second glare.
    for dt in (0.5, 3.0):
        for o in x_obs + r491:
            f.obs.append(o.replace(ts_us=o.ts_us + int(dt * 1e6), ref=f"rt{dt}"))
    f.wait(0.5)
    reinvite_ok(f, "B")
    f.wait(2.5)
    reinvite_ok(f, "A")
    assert names(run(f)) == ["glare_491", "glare_491"]


# -- no retry --------------------------------------------------------------------------------


def test_no_retry_when_the_dialog_went_on():
    f = established()
    crossing(f)
    f.wait(40)
    u = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.response(u, 200)
    f.wait(20)
    f.bye()
    recs = run(f)
    no = of(recs, "glare_no_retry")
    assert sorted(r.direction for r in no) == ["callee_to_caller", "caller_to_callee"]
    assert all(r.severity == "low" and r.fields["t_retry"] is None for r in no)


def test_no_retry_is_fine_after_bye():
    f = established()
    crossing(f)
    f.wait(1.0)
    f.bye("B")
    f.wait(60)
    other = Flow("other@test")
    other.at(f.t - T0)
    other.setup()
    f.obs += other.obs  # stream time runs on past the horizon
    assert names(run(f)) == ["glare_491", "glare_491"]


def test_no_retry_is_fine_when_the_peer_retried():
    # RFC 5407 §3.3.1: after the non-owner's retry succeeded the owner may drop its change.
    f = established()
    crossing(f)
    f.wait(0.7)
    reinvite_ok(f, "B")
    f.wait(60)
    f.bye()
    assert names(run(f)) == ["glare_491", "glare_491"]


def test_no_retry_is_never_claimed_because_the_capture_ended():
    for tail in (1.0, 5.0, 20.0):
        f = established()
        crossing(f)
        f.wait(tail)
        other = Flow(f"other-{tail}@test")
        other.at(f.t - T0)
        other.setup()  # stream time reaches `tail` s after the 491, then the input ends
        f.obs += other.obs
        assert of(run(f), "glare_no_retry") == [], tail


def test_no_retry_disabled_when_the_proxy_is_not_in_the_route_set():
    f = Flow(record_route=False)
    f.setup()
    f.wait(2)
    crossing(f)
    f.wait(40)
    f.bye()
    recs = run(f)
    assert of(recs, "glare_no_retry") == []


# -- repeated glare --------------------------------------------------------------------------


def test_repeated_glare_is_reported_once():
    f = established()
    crossing(f)
    f.wait(2.5)
    crossing(f)  # both retried at the same moment and collided again
    f.wait(2.5)
    crossing(f)
    f.wait(1.0)
    reinvite_ok(f, "B")
    recs = run(f)
    (rep,) = of(recs, "glare_repeat")
    assert rep.severity == "high" and rep.fields["retry_count"] == 1
    assert len(rep.evidence) == 2
    assert len(of(recs, "glare_491")) == 6


def test_glare_then_success_then_glare_is_not_a_repeat():
    f = established()
    crossing(f)
    f.wait(1.0)
    reinvite_ok(f, "B")  # the caller drops its change after this (RFC 5407 §3.3.1)
    f.wait(30)
    crossing(f)
    f.wait(0.5)
    reinvite_ok(f, "B", version=5)
    f.wait(2.6)
    reinvite_ok(f, "A", version=6)
    recs = run(f)
    assert of(recs, "glare_repeat") == []
    assert len(of(recs, "glare_491")) == 4


# -- owners ----------------------------------------------------------------------------------


def test_b2bua_legs_have_their_own_call_id_owner():
    # The B2BUA is the callee of leg 1 and the caller (owner) of leg 2: a 0.5 s retry is
    # right on leg 1 and too early on leg 2.
    leg1 = Flow("leg1@test", b=("10.0.0.9", 5060))
    leg2 = Flow("leg2@test", a=("10.0.0.9", 5060), b=("10.0.0.3", 5060))
    for leg in (leg1, leg2):
        leg.setup()
        leg.wait(2)
        crossing(leg)
        leg.wait(0.5)
    reinvite_ok(leg1, "B")  # B2BUA on leg 1 (non-owner)
    reinvite_ok(leg2, "A")  # B2BUA on leg 2 (owner)
    leg2.obs += leg1.obs
    recs = run(leg2)
    early = of(recs, "glare_retry_too_early")
    assert [r.call_id for r in early] == ["leg2@test"]


def test_owner_unknown_relaxes_the_windows():
    # Capture starts mid-call: nobody is known to own the Call-ID, so a 0.5 s retry is
    # not "too early" for either side; 4.5 s is late for both.
    f = Flow()
    f.at(10)
    crossing(f)
    f.wait(0.5)
    reinvite_ok(f, "A")
    recs = run(f)
    assert names(recs) == ["glare_491", "glare_491"]
    assert all(r.fields["owner_known"] is False for r in recs)
    assert all(
        (r.fields["expected_min_ms"], r.fields["expected_max_ms"]) == (0, 4000) for r in recs
    )
    g = Flow()
    g.at(10)
    crossing(g)
    g.wait(4.5)
    reinvite_ok(g, "A")
    (late,) = of(run(g), "glare_retry_late")
    assert late.fields["owner_known"] is False and late.confidence < 1.0
    assert late.call_id_owner == "unknown"


# -- scope and state -------------------------------------------------------------------------


def test_early_dialog_reinvite_491_belongs_to_c3():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.05)
    f.response(inv, 180)
    f.wait(0.2)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(y, 491)
    f.hop_ack(y)
    f.wait(1)
    f.response(inv, 200, body=sdp(session_id="2002"))
    inv.to_tag = "b1"
    f.ack(inv)
    recs = run(f, all_three=True)
    assert names(recs) == ["reinvite_in_early_dialog"]


def test_clean_session_modifications_yield_nothing():
    f = established()
    reinvite_ok(f, "A", version=2)  # hold
    f.wait(5)
    reinvite_ok(f, "A", version=3)  # resume
    f.wait(5)
    reinvite_ok(f, "B", version=2)
    u = f.request("B", "UPDATE", headers=["Session-Expires: 1800;refresher=uas"])
    f.response(u, 200)
    f.wait(60)
    f.bye()
    assert [r for r in run(f, all_three=True) if r.anomaly in C1] == []


def test_state_survives_a_checkpoint_between_491_and_retry():
    f = established()
    crossing(f)
    f.wait(1.0)
    reinvite_ok(f, "A")
    obs = sorted(f.obs, key=lambda o: o.ts_us)
    cut = next(i for i, o in enumerate(obs) if o.payload.startswith(b"ACK")) + 4
    eng = Engine(EngineConfig(), detectors=[GlareDetector()])
    recs = []
    for o in obs[:cut]:
        recs += eng.feed(o)
    eng = pickle.loads(pickle.dumps(eng))
    for o in obs[cut:]:
        recs += eng.feed(o)
    recs += eng.flush()
    assert "glare_retry_too_early" in [r.anomaly for r in recs if r.kind == "anomaly"]


def test_an_acked_2xx_does_not_excuse_a_later_491():
    f = established()
    reinvite_ok(f, "A", version=2)  # B's 2xx and its ACK: B holds nothing any more
    f.wait(1.0)
    x = f.request("A", "INVITE", body=sdp(version=3))
    f.wait(0.01)
    f.response(x, 491)
    f.hop_ack(x)
    f.wait(3)
    reinvite_ok(f, "A", version=3)
    assert names(run(f)) == ["spurious_491"]


def test_a_pending_update_without_sdp_does_not_excuse_a_491_to_a_reinvite():
    f = established()
    u = f.request("B", "UPDATE", headers=["Session-Expires: 1800;refresher=uas"])
    f.wait(0.005)
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(x, 491)
    f.response(u, 200)
    f.hop_ack(x)
    f.wait(3)
    reinvite_ok(f, "A")
    (r,) = run(f)
    assert r.anomaly == "spurious_491" and r.fields["glare_peer_method"] == "UPDATE"


def test_callee_reinvite_before_the_initial_ack_may_get_491():
    # The callee may not re-INVITE before its 2xx is ACKed [3261 §14.1]; the caller's 491
    # is then no fault of the caller's.
    f = Flow()
    inv = f.setup(ack=False)
    f.wait(0.005)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(y, 491)
    f.hop_ack(y)
    f.wait(0.05)
    f.ack(inv)
    f.wait(1.0)
    reinvite_ok(f, "B")
    recs = run(f)
    assert names(recs) == ["glare_491"]
    assert recs[0].fields["crossing"] == "initial_invite_not_confirmed"
