"""C.2 detector: overlapping re-INVITE / UPDATE, the 500 + Retry-After answer, resends."""

from __future__ import annotations

from sipflow import Flow, Sent, sdp

from consumers.detectors.early_reinvite import EarlyReinviteDetector
from consumers.detectors.glare import GlareDetector
from consumers.detectors.overlap import OverlapDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

C2 = {"overlapping_invite", "overlap_500_without_retry_after", "overlap_not_500"}
C2 |= {"retry_after_violated"}


def run(flow: Flow, *, all_three: bool = False) -> list[AnomalyRecord]:
    dets = [OverlapDetector()]
    if all_three:
        dets += [GlareDetector(), EarlyReinviteDetector()]
    return flow.anomalies(Engine(EngineConfig(), detectors=dets))


def names(recs: list[AnomalyRecord]) -> list[str]:
    return sorted(r.anomaly for r in recs)


def of(recs: list[AnomalyRecord], name: str) -> list[AnomalyRecord]:
    return [r for r in recs if r.anomaly == name]


def established() -> Flow:
    f = Flow()
    f.setup()
    f.wait(2)
    return f


def finish(f: Flow, req: Sent, status: int = 200, body: str = "") -> None:
    f.response(req, status, body=body)
    if req.method == "INVITE":
        if status < 300:
            f.ack(req)
        else:
            f.hop_ack(req)


def two_reinvites(f: Flow, *, answer: int, headers: tuple[str, ...] = ()) -> tuple[Sent, Sent]:
    """The caller sends a second re-INVITE 50 ms after the first, before its answer."""
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.05)
    y = f.request("A", "INVITE", body=sdp(version=3))
    f.wait(0.01)
    f.response(y, answer, headers=list(headers))
    f.hop_ack(y)
    f.wait(0.5)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    return x, y


# -- overlapping re-INVITE -------------------------------------------------------------------


def test_overlapping_reinvite_answered_500_with_retry_after():
    f = established()
    x, y = two_reinvites(f, answer=500, headers=("Retry-After: 3",))
    f.wait(4)
    finish(f, f.request("A", "INVITE", body=sdp(version=3)), body=sdp(version=3))
    recs = run(f)
    assert names(recs) == ["overlapping_invite"]
    (r,) = recs
    assert r.severity == "medium" and r.direction == "caller_to_callee"
    assert r.cseq == y.cseq and r.status == 0  # the record is about the second INVITE
    assert r.fields["first_cseq"] == x.cseq and r.fields["second_cseq"] == y.cseq
    assert r.fields["gap_ms"] == 50 and r.fields["retry_after_s"] == 3
    assert r.fields["response_status"] == 500 and r.fields["overlap_kind"] == "invite"


def test_overlapping_reinvite_answered_500_without_retry_after():
    f = established()
    two_reinvites(f, answer=500)
    recs = run(f)
    assert names(recs) == ["overlap_500_without_retry_after", "overlapping_invite"]
    (r,) = of(recs, "overlap_500_without_retry_after")
    assert r.direction == "callee_to_caller" and r.severity == "low" and r.status == 500
    assert r.fields["retry_after_s"] is None


def test_overlapping_reinvite_accepted_is_overlap_not_500():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.05)
    y = f.request("A", "INVITE", body=sdp(version=3))
    f.wait(0.01)
    finish(f, y, body=sdp(version=3, session_id="2002"))
    f.wait(0.5)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    recs = run(f)
    assert names(recs) == ["overlap_not_500", "overlapping_invite"]
    assert of(recs, "overlap_not_500")[0].fields["response_status"] == 200


def test_491_to_the_overlap_is_accepted():
    f = established()
    two_reinvites(f, answer=491)
    assert names(run(f)) == ["overlapping_invite"]


def test_unanswered_overlapping_invite_is_still_reported():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.05)
    f.request("A", "INVITE", body=sdp(version=3))  # the input ends before any answer
    recs = run(f)
    assert names(recs) == ["overlapping_invite"]
    assert recs[0].fields["response_status"] is None and recs[0].fields["first_cseq"] == x.cseq


def test_second_invite_crossing_the_first_answer_does_not_blame_the_uas():
    # The UAS sent its 200 to X before Y reached it (the messages crossed at the proxy):
    # the sender still started Y while X was in progress, but the UAS was right to accept.
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.3)
    y = f.request("A", "INVITE", body=sdp(version=3))
    f.wait(0.001)
    f.response(x, 200, body=sdp(version=2, session_id="2002"))
    f.ack(x)
    f.wait(0.02)
    finish(f, y, body=sdp(version=3, session_id="2002"))
    assert names(run(f)) == ["overlapping_invite"]


# -- overlapping UPDATE and pending offers ---------------------------------------------------


def test_second_update_before_the_first_is_answered():
    f = established()
    u1 = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.05)
    u2 = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.01)
    f.response(u2, 500)
    f.wait(0.2)
    f.response(u1, 200)
    recs = run(f)
    assert names(recs) == ["overlap_500_without_retry_after"]  # no sender rule for UPDATE
    assert recs[0].fields["overlap_kind"] == "update"
    assert recs[0].fields["first_cseq"] == u1.cseq and recs[0].fields["second_cseq"] == u2.cseq


def test_update_offer_while_own_reinvite_offer_unanswered():
    for answer, expected in ((500, []), (200, ["overlap_not_500"])):
        f = established()
        x = f.request("A", "INVITE", body=sdp(version=2))
        f.wait(0.05)
        u = f.request("A", "UPDATE", body=sdp(version=3))
        f.wait(0.01)
        f.response(u, answer, headers=["Retry-After: 2"] if answer == 500 else [])
        f.wait(0.3)
        finish(f, x, body=sdp(version=2, session_id="2002"))
        recs = run(f)
        assert names(recs) == expected
        if recs:
            assert recs[0].fields["overlap_kind"] == "offer_pending"


def test_update_offer_while_own_2xx_offer_awaits_the_ack():
    # B answered A's offerless re-INVITE with an offer in the 2xx; before A's ACK brings
    # the answer, B sends an UPDATE with a new offer. A must answer 500 [3311 §5.2].
    f = established()
    x = f.request("A", "INVITE")
    f.wait(0.02)
    f.response(x, 200, body=sdp(version=2, session_id="2002"))
    f.wait(0.005)
    u = f.request("B", "UPDATE", body=sdp(version=3, session_id="2002"))
    f.wait(0.01)
    f.response(u, 200, body=sdp(version=3))
    f.wait(0.2)
    f.ack(x, body=sdp(version=2))
    recs = run(f)
    assert names(recs) == ["overlap_not_500"]
    assert recs[0].direction == "caller_to_callee"


def test_update_without_sdp_during_own_reinvite_is_fine():
    # Non-INVITE transactions may overlap an INVITE transaction [3261 §14.1].
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.05)
    u = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.response(u, 200)
    f.wait(0.3)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    assert run(f) == []


# -- Retry-After honoured or not -------------------------------------------------------------


def test_resend_before_retry_after_elapsed():
    f = established()
    two_reinvites(f, answer=500, headers=("Retry-After: 5",))
    f.wait(0.5)  # 1.0 s after the 500
    z = f.request("A", "INVITE", body=sdp(version=3))
    finish(f, z, body=sdp(version=3, session_id="2002"))
    recs = run(f)
    (r,) = of(recs, "retry_after_violated")
    assert r.cseq == z.cseq and r.direction == "caller_to_callee"
    assert r.fields["retry_after_s"] == 5 and r.fields["resend_after_ms"] == 999


def test_resend_after_retry_after_is_fine():
    for delay in (4.45, 8.0):  # 4.95 s after the 500 is within the 100 ms tolerance
        f = established()
        two_reinvites(f, answer=500, headers=("Retry-After: 5",))
        f.wait(delay)
        z = f.request("A", "INVITE", body=sdp(version=3))
        finish(f, z, body=sdp(version=3, session_id="2002"))
        assert names(run(f)) == ["overlapping_invite"], delay


# -- traps -----------------------------------------------------------------------------------


def test_retransmitted_invite_is_not_a_second_invite():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    x_obs = [o for o in f.obs if f"branch={x.branch}" in o.payload.decode()]
    for dt in (0.5, 2.5):  # a transport copy, then a transaction-layer retransmission
        for o in x_obs:
            f.obs.append(o.replace(ts_us=o.ts_us + int(dt * 1e6), ref=f"rt{dt}"))
    f.wait(3)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    assert run(f) == []


def test_reinvite_resent_after_401_is_not_an_overlap():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.02)
    f.response(x, 401, headers=['WWW-Authenticate: Digest realm="b", nonce="1"'])
    f.hop_ack(x)
    f.wait(0.01)
    y = f.request("A", "INVITE", body=sdp(version=2), headers=["Authorization: Digest x"])
    finish(f, y, body=sdp(version=2, session_id="2002"))
    assert run(f) == []


def test_lower_cseq_is_out_of_order_not_overlap():
    # [3261 §12.2.2]: a lower CSeq gets 500 for its own reason; left to C.14.
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2), cseq=10)
    f.wait(0.05)
    y = f.request("A", "INVITE", body=sdp(version=3), cseq=5)
    f.wait(0.01)
    f.response(y, 500)
    f.hop_ack(y)
    f.wait(0.2)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    assert run(f) == []


def test_proxy_generated_500_is_not_the_uas_answer():
    f = established()
    u1 = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.05)
    u2 = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.wait(0.01)
    f.response(u2, 500, proxy=True)
    f.wait(0.2)
    f.response(u1, 200)
    f.wait(0.01)
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.05)
    y = f.request("A", "INVITE", body=sdp(version=3))
    f.response(y, 500, proxy=True)
    f.hop_ack(y)
    f.wait(0.2)
    finish(f, x, body=sdp(version=2, session_id="2002"))
    assert names(run(f)) == ["overlapping_invite"]  # the sender's fault stands


def test_first_invite_timed_out_overlaps_nothing():
    f = established()
    f.request("A", "INVITE", body=sdp(version=2))  # never answered in the capture
    f.wait(40)
    y = f.request("A", "INVITE", body=sdp(version=2))
    finish(f, y, body=sdp(version=2, session_id="2002"))
    assert run(f) == []


def test_crossing_requests_of_both_sides_are_glare_not_overlap():
    f = established()
    x = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.005)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(x, 491)
    f.response(y, 491)
    f.hop_ack(x)
    f.hop_ack(y)
    assert run(f) == []


def test_reinvite_while_the_initial_invite_is_pending_is_c3():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.05)
    f.response(inv, 180)
    f.wait(0.2)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(y, 500)  # even without Retry-After: C.3 records this answer
    f.hop_ack(y)
    f.wait(1)
    f.response(inv, 200, body=sdp(session_id="2002"))
    inv.to_tag = "b1"
    f.ack(inv)
    recs = run(f, all_three=True)
    assert names(recs) == ["reinvite_in_early_dialog"]


def test_clean_flows_yield_nothing():
    f = established()
    for v in (2, 3, 4):
        x = f.request("A", "INVITE", body=sdp(version=v))
        f.wait(0.05)
        finish(f, x, body=sdp(version=v, session_id="2002"))
        f.wait(1)
    u = f.request("B", "UPDATE", body=sdp(version=2, session_id="2002"))
    f.response(u, 200, body=sdp(version=5))
    f.wait(1)
    u = f.request("A", "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    f.response(u, 200)
    f.wait(1)
    f.bye()
    assert [r for r in run(f, all_three=True) if r.anomaly in C2] == []
