"""C.3 detector: re-INVITE in an early dialog, its answer and what the sender did next."""

from __future__ import annotations

from sipflow import Flow, Sent, sdp

from consumers.detectors.early_reinvite import EarlyReinviteDetector
from consumers.detectors.glare import GlareDetector
from consumers.detectors.overlap import OverlapDetector
from consumers.engine import Engine, EngineConfig
from consumers.observation import Observation
from consumers.records import AnomalyRecord, Record

NAME = "reinvite_in_early_dialog"


def run(flow: Flow, *, all_three: bool = False) -> list[AnomalyRecord]:
    dets = [EarlyReinviteDetector()]
    if all_three:
        dets += [GlareDetector(), OverlapDetector()]
    return flow.anomalies(Engine(EngineConfig(), detectors=dets))


def feed(observations: list[Observation]) -> list[AnomalyRecord]:
    """Feed copies in the given arrival order (not sorted by capture time)."""
    eng = Engine(EngineConfig(), detectors=[EarlyReinviteDetector()])
    out: list[Record] = []
    for o in observations:
        out += eng.feed(o)
    out += eng.flush()
    return [r for r in out if r.kind == "anomaly"]


def ringing(f: Flow, *, to_tag: str = "b1") -> Sent:
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.05)
    f.response(inv, 180, to_tag=to_tag)
    f.wait(0.2)
    return inv


def answer(f: Flow, inv: Sent, *, to_tag: str = "b1") -> None:
    f.response(inv, 200, to_tag=to_tag, body=sdp(session_id="2002"))
    inv.to_tag = to_tag
    f.wait(0.05)
    f.ack(inv)


def test_caller_reinvite_in_early_dialog_answered_500():
    f = Flow()
    inv = ringing(f)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(y, 500, headers=["Retry-After: 4"])
    f.hop_ack(y)
    f.wait(15)
    answer(f, inv)
    recs = run(f)
    assert [r.anomaly for r in recs] == [NAME]
    (r,) = recs
    assert r.severity == "medium" and r.direction == "caller_to_callee" and r.cseq == y.cseq
    assert r.dialog_state == "early" and r.callee_tag == "b1"
    fields = r.fields
    assert fields["response_status"] == 500 and fields["retry_after_s"] == 4
    assert fields["expected_status"] == 500 and fields["initial_invite_cseq"] == inv.cseq
    assert fields["to_tag_known_in_1xx"] is True and fields["torn_down"] is False
    assert fields["early_since"] == round((1_700_000_000.0 + 0.051) * 1e6)
    assert len(r.evidence) >= 3  # the re-INVITE, its answer, the 180 that made the dialog


def test_callee_reinvite_in_early_dialog_answered_491_by_the_caller():
    f = Flow()
    inv = ringing(f)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(y, 491)
    f.hop_ack(y)
    f.wait(1)
    answer(f, inv)
    recs = run(f, all_three=True)  # C.1 leaves this 491 to C.3: no spurious_491 either
    assert [r.anomaly for r in recs] == [NAME]
    assert recs[0].direction == "callee_to_caller"
    assert recs[0].fields["response_status"] == 491 and recs[0].fields["expected_status"] == 491


def test_accepted_early_reinvite_is_reported_at_once_as_medium():
    f = Flow()
    inv = ringing(f)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(y, 200, body=sdp(version=2, session_id="2002"))
    f.ack(y)
    f.wait(0.5)
    answer(f, inv)
    eng = Engine(EngineConfig(), detectors=[EarlyReinviteDetector()])
    live = []
    for o in sorted(f.obs, key=lambda o: o.ts_us):
        live += [r for r in eng.feed(o) if r.kind == "anomaly"]
    assert [r.anomaly for r in live] == [NAME]  # before the input ended
    assert live[0].severity == "medium" and live[0].fields["response_status"] == 200


def test_failed_early_reinvite_then_teardown_by_the_sender_is_high():
    f = Flow()
    inv = ringing(f)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(y, 500, headers=["Retry-After: 2"])
    f.hop_ack(y)
    f.wait(1)
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.response(cancel, 200)
    f.response(inv, 487)
    f.hop_ack(inv)
    (r,) = run(f)
    assert r.severity == "high" and r.fields["torn_down"] is True


def test_callee_tears_down_after_its_failed_early_reinvite():
    f = Flow()
    inv = ringing(f)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(y, 491)
    f.hop_ack(y)
    f.wait(0.5)
    f.response(inv, 500)
    f.hop_ack(inv)
    (r,) = run(f)
    assert r.severity == "high" and r.direction == "callee_to_caller"


def test_teardown_long_after_the_failure_is_not_blamed_on_it():
    f = Flow()
    inv = ringing(f)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.01)
    f.response(y, 500, headers=["Retry-After: 2"])
    f.hop_ack(y)
    f.wait(30)
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.response(cancel, 200)
    f.response(inv, 487)
    f.hop_ack(inv)
    (r,) = run(f)
    assert r.severity == "medium" and r.fields["torn_down"] is False


def test_unanswered_early_reinvite_is_reported_with_status_0():
    f = Flow()
    ringing(f)
    f.request("A", "INVITE", body=sdp(version=2))
    (r,) = run(f)
    assert r.fields["response_status"] == 0


def test_reinvite_after_2xx_before_ack_and_after_ack_is_not_early():
    f = Flow()
    inv = ringing(f)
    f.response(inv, 200, body=sdp(session_id="2002"))
    inv.to_tag = "b1"
    f.wait(0.01)
    y = f.request("A", "INVITE", body=sdp(version=2))  # RFC 5407 §3.1.4 territory, not C.3
    f.wait(0.01)
    f.response(y, 200, body=sdp(version=2, session_id="2002"))
    f.ack(inv)
    f.ack(y)
    f.wait(1)
    z = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.response(z, 200, body=sdp(version=3))
    f.ack(z)
    assert run(f) == []


def test_update_in_early_dialog_is_not_a_reinvite():
    f = Flow()
    inv = ringing(f)
    u = f.request("A", "UPDATE", body=sdp(version=2))
    f.response(u, 200, body=sdp(version=2, session_id="2002"))
    f.wait(1)
    answer(f, inv)
    assert run(f) == []


def test_capture_reordering_inside_the_window_is_not_an_early_reinvite():
    # The callee's 200 was captured 20 ms before the caller's re-INVITE but its HEP copy
    # arrived after it: the reorder window puts them back in capture order.
    f = Flow()
    inv = ringing(f)
    mark = len(f.obs)
    f.response(inv, 200, body=sdp(session_id="2002"))
    inv.to_tag = "b1"
    ok_obs = f.obs[mark:]
    f.wait(0.02)
    f.ack(inv)
    f.wait(0.01)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.response(y, 200, body=sdp(version=2, session_id="2002"))
    f.ack(y)
    arrival = [o for o in f.obs if o not in ok_obs]
    at = arrival.index(next(o for o in arrival if f"branch={y.branch}" in o.payload.decode()))
    arrival[at + 1 : at + 1] = ok_obs  # the 200 copies come in right after the re-INVITE
    assert feed(arrival) == []
    # Fed in capture order, the same calls are clean too (sanity of the flow itself).
    assert run(f) == []


def test_late_copy_of_the_2xx_beyond_the_window_withdraws_the_finding():
    f = Flow()
    inv = ringing(f)
    mark = len(f.obs)
    f.response(inv, 200, body=sdp(session_id="2002"))
    inv.to_tag = "b1"
    ok_obs = f.obs[mark:]
    f.wait(0.02)
    y = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.5)
    f.response(y, 200, body=sdp(version=2, session_id="2002"))
    arrival = [o for o in f.obs if o not in ok_obs]
    at = arrival.index(next(o for o in arrival if f"branch={y.branch}" in o.payload.decode()))
    arrival[at + 2 : at + 2] = [o.replace() for o in ok_obs]
    # A later message pushes stream time past the reorder window before the 200 arrives.
    arrival.insert(at + 2, arrival[at].replace(ts_us=arrival[at].ts_us + 400_000))
    assert feed(arrival) == []


def test_invite_with_replaces_has_no_to_tag_and_is_not_a_reinvite():
    f = Flow()
    inv = ringing(f)
    g = Flow("replacing@test", caller_tag="c1", callee_tag="b9")
    g.at(f.t - 1_700_000_000.0)
    rep = g.request(
        "A",
        "INVITE",
        in_dialog=False,
        body=sdp(),
        headers=["Replaces: flow-1@test;to-tag=b1;from-tag=a1;early-only"],
    )
    g.response(rep, 200, body=sdp(session_id="2002"))
    rep.to_tag = "b9"
    g.ack(rep)
    f.wait(0.5)
    f.response(inv, 487)
    f.hop_ack(inv)
    f.obs += g.obs
    assert run(f) == []


def test_forking_reinvite_to_the_confirmed_branch_is_fine_to_the_early_one_is_not():
    f = Flow()
    inv = ringing(f, to_tag="x1")
    f.response(inv, 180, to_tag="x2")
    f.wait(0.3)
    answer(f, inv, to_tag="x2")
    f.wait(0.5)
    ok = f.request("A", "INVITE", body=sdp(version=2), to_tag="x2")
    f.response(ok, 200, body=sdp(version=2, session_id="2002"), to_tag="x2")
    f.ack(ok, to_tag="x2")
    assert run(f) == []
    f.wait(0.5)
    bad = f.request("A", "INVITE", body=sdp(version=3), to_tag="x1")
    f.response(bad, 481, to_tag="x1")
    f.hop_ack(bad, to_tag="x1")
    (r,) = run(f)
    assert r.callee_tag == "x1" and r.cseq == bad.cseq
    assert r.fields["other_branch_confirmed"] is True and r.fields["response_status"] == 481


def test_reinvite_with_a_to_tag_never_seen_while_the_invite_is_pending():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.001)
    f.response(inv, 100, proxy=True)
    f.wait(0.3)  # no tagged 1xx was captured
    y = f.request("A", "INVITE", body=sdp(version=2), to_tag="zz")
    f.response(y, 500, to_tag="zz", headers=["Retry-After: 1"])
    f.hop_ack(y, to_tag="zz")
    (r,) = run(f)
    assert r.fields["to_tag_known_in_1xx"] is False and r.confidence < 1.0
    assert r.fields["early_since"] is None and r.fields["response_status"] == 500


def test_retransmitted_early_reinvite_is_one_finding():
    f = Flow()
    inv = ringing(f)
    y = f.request("A", "INVITE", body=sdp(version=2))
    y_obs = [o for o in f.obs if f"branch={y.branch}" in o.payload.decode()]
    for dt in (0.5, 2.5):
        for o in y_obs:
            f.obs.append(o.replace(ts_us=o.ts_us + int(dt * 1e6), ref=f"rt{dt}"))
    f.wait(3)
    f.response(y, 500, headers=["Retry-After: 2"])
    f.hop_ack(y)
    f.wait(12)
    answer(f, inv)
    assert [r.anomaly for r in run(f)] == [NAME]


def test_clean_call_yields_nothing():
    f = Flow()
    inv = ringing(f)
    answer(f, inv)
    f.wait(1)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.response(y, 200, body=sdp(version=2))
    f.ack(y)
    f.wait(1)
    f.bye("B")
    assert run(f, all_three=True) == []


def test_teardown_by_the_other_side_or_by_the_proxy_is_not_the_senders():
    f = Flow()
    inv = ringing(f)
    y = f.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    f.wait(0.01)
    f.response(y, 491)
    f.hop_ack(y)
    f.wait(0.5)
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.response(cancel, 200)
    f.response(inv, 487)
    f.hop_ack(inv)
    (r,) = run(f)
    assert r.severity == "medium" and r.fields["torn_down"] is False
    g = Flow()
    inv = ringing(g)
    y = g.request("B", "INVITE", body=sdp(version=2, session_id="2002"))
    g.wait(0.01)
    g.response(y, 491)
    g.hop_ack(y)
    g.wait(0.5)
    g.response(inv, 408, proxy=True)  # the proxy's own timeout, not the callee giving up
    (r,) = run(g)
    assert r.severity == "medium" and r.fields["torn_down"] is False
