"""C.12: leg summaries (first stage) and the leg correlator (second keyed stage).

The calls are built as one Kamailio sees them when it sits on both sides of an SBC: the
A-leg UA-A -> P -> SBC and the B-leg SBC -> P -> UA-B, two `Flow`s with their own Call-ID,
tags and Call-ID owner, mirrored by the same node.
"""

from __future__ import annotations

import pickle

from sipflow import Flow, Sent, sdp

from consumers.detectors.leg_summary import LegSummaryDetector
from consumers.engine import Engine, EngineConfig
from consumers.legs import LegCorrelator, LegCorrelatorConfig, correlate
from consumers.records import AnomalyRecord, LegRecord, Record

UA_A = ("10.0.0.2", 5060)
SBC_A = ("10.0.0.10", 5060)  # the SBC's side towards the A-leg
SBC_B = ("10.0.0.10", 5080)  # and towards the B-leg
UA_B = ("10.0.0.3", 5060)
ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK"
ALLOW_NO_UPDATE = "Allow: INVITE, ACK, BYE, CANCEL, PRACK"
SID_A = "a" * 31 + "1"
SID_B = "b" * 31 + "2"
SID_C = "c" * 31 + "3"
NIL = "0" * 32

C12 = {
    "update_to_reinvite",
    "reinvite_to_update",
    "update_absorbed",
    "update_stripped_from_allow",
    "timer_terminated_locally",
}


class B2bua:
    """An A-leg and a B-leg through one SBC, both mirrored by proxy node `node`."""

    def __init__(
        self,
        *,
        a_call_id: str = "leg-a@test",
        b_call_id: str = "leg-b@sbc",
        node: str = "p1",
        b_node: str | None = None,
    ) -> None:
        self.a = Flow(
            a_call_id, caller_tag="a1", callee_tag="s1", a=UA_A, b=SBC_A, node=node,
            a_ua="UA-A/1.0", b_ua="SBC/1.0",
        )  # fmt: skip
        self.b = Flow(
            b_call_id, caller_tag="s2", callee_tag="b2", a=SBC_B, b=UA_B,
            node=b_node or node, a_ua="SBC/1.0", b_ua="UA-B/1.0",
        )  # fmt: skip
        self.inv_a: Sent | None = None
        self.inv_b: Sent | None = None

    def setup(
        self,
        *,
        a_invite: tuple[str, ...] = (ALLOW,),
        b_invite: tuple[str, ...] = (ALLOW,),
        a_answer: tuple[str, ...] = (ALLOW,),
        b_answer: tuple[str, ...] = (ALLOW,),
        b_delay: float = 0.02,
        b_start: bool = True,
    ) -> B2bua:
        """A-leg INVITE, the SBC's B-leg INVITE, B answers, the SBC answers the A-leg."""
        a, b = self.a, self.b
        a.at(0)
        self.inv_a = a.request("A", "INVITE", in_dialog=False, body=sdp(addr=UA_A[0]),
                               headers=list(a_invite))  # fmt: skip
        a.wait(0.001)
        a.response(self.inv_a, 100, proxy=True)
        if b_start:
            b.at(b_delay)
            self.inv_b = b.request("A", "INVITE", in_dialog=False, body=sdp(addr=SBC_B[0]),
                                   headers=list(b_invite))  # fmt: skip
            b.wait(0.001)
            b.response(self.inv_b, 100, proxy=True)
            b.at(0.5)
            b.response(self.inv_b, 200, body=sdp(addr=UA_B[0], session_id="2002"),
                       headers=list(b_answer))  # fmt: skip
            self.inv_b.to_tag = "b2"
            b.wait(0.01)
            b.ack(self.inv_b)
        a.at(0.52)
        a.response(self.inv_a, 200, body=sdp(addr=SBC_A[0], session_id="3003"),
                   headers=list(a_answer))  # fmt: skip
        self.inv_a.to_tag = "s1"
        a.wait(0.01)
        a.ack(self.inv_a)
        return self

    def observations(self) -> list:
        obs = []
        for flow in (self.a, self.b):
            for i, o in enumerate(flow.obs):
                obs.append(o.replace(ref=f"{flow.call_id}#{i}"))
        return sorted(obs, key=lambda o: o.ts_us)

    def records(self) -> list[Record]:
        engine = Engine(EngineConfig(), detectors=[LegSummaryDetector()])
        out: list[Record] = []
        for o in self.observations():
            out += engine.feed(o)
        return out + engine.flush()

    def anomalies(self, config: LegCorrelatorConfig | None = None) -> list[AnomalyRecord]:
        return [a for a in correlate(self.records(), config) if a.anomaly in C12]

    def end(self, t: float) -> None:
        self.a.at(t)
        self.a.bye("A")
        self.b.at(t + 0.01)
        self.b.bye("A")


def _legs(records: list[Record]) -> list[LegRecord]:
    return [r for r in records if isinstance(r, LegRecord)]


def _names(anoms: list[AnomalyRecord]) -> list[str]:
    return sorted(a.anomaly for a in anoms)


def _x_cid(call: B2bua) -> tuple[str, ...]:
    return (ALLOW, f"X-CID: {call.a.call_id}")


def _relay_update_as(call: B2bua, b_method: str, t: float = 5.0, delay: float = 0.02) -> None:
    """UA-A's hold offer in an UPDATE; the SBC relays it on the B-leg as `b_method`."""
    a, b = call.a, call.b
    a.at(t)
    up = a.request("A", "UPDATE", body=sdp(version=2, direction="sendonly", addr=UA_A[0]))
    b.at(t + delay)
    req = b.request("A", b_method, body=sdp(version=2, direction="sendonly", addr=SBC_B[0]))
    b.wait(0.05)
    b.response(req, 200, body=sdp(version=2, direction="recvonly", addr=UA_B[0],
                                  session_id="2002"))  # fmt: skip
    if b_method == "INVITE":
        b.wait(0.01)
        b.ack(req)
    a.wait(delay + 0.07)
    a.response(up, 200, body=sdp(version=2, direction="recvonly", addr=SBC_A[0],
                                 session_id="3003"))  # fmt: skip


def _absorbed_update(call: B2bua, t: float = 5.0, direction: str = "sendonly", **kw) -> None:
    a = call.a
    a.at(t)
    up = a.request("A", "UPDATE", body=sdp(version=2, direction=direction, **kw))
    a.wait(0.01)
    a.response(up, 200, body=sdp(version=2, addr=SBC_A[0], session_id="3003"))


def _refresh(flow: Flow, sender: str, t: float, answer_after: float) -> Sent:
    flow.at(t)
    up = flow.request(sender, "UPDATE", headers=["Session-Expires: 1800;refresher=uac"])
    flow.wait(answer_after)
    flow.response(up, 200, headers=["Session-Expires: 1800;refresher=uac", "Require: timer"])
    return up


# -- first stage --------------------------------------------------------------------------


def test_leg_summaries_are_few_and_carry_the_keys():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "UPDATE")
    # a retransmission of the A-leg UPDATE (same branch, 2.5 s later) adds nothing
    up = next(o for o in call.a.obs if b"UPDATE sip:" in o.payload[:20])
    call.a.obs.append(up.replace(ts_us=up.ts_us + 2_500_000))
    call.end(9)
    legs = _legs(call.records())
    by_call: dict[str, list[str]] = {}
    for r in legs:
        by_call.setdefault(r.call_id, []).append(r.fact)
    assert by_call == {
        "leg-a@test": ["setup", "request", "final"],
        "leg-b@sbc": ["setup", "request", "final"],
    }
    setup_b = next(r for r in legs if r.call_id == "leg-b@sbc" and r.fact == "setup")
    assert setup_b.x_cid == "leg-a@test"
    assert setup_b.caller_allow is not None and "UPDATE" in setup_b.caller_allow
    assert setup_b.status == 200 and setup_b.direction == "callee_to_caller"
    assert setup_b.invite_time_us and setup_b.from_user == "a" and setup_b.to_user == "b"
    req = next(r for r in legs if r.call_id == "leg-a@test" and r.fact == "request")
    assert (req.method, req.offer, req.purpose, req.sdp_change) == (
        "UPDATE", True, "change", "direction",
    )  # fmt: skip
    fin = next(r for r in legs if r.call_id == "leg-a@test" and r.fact == "final")
    assert fin.status == 200 and fin.answered_by == "peer" and fin.response_ms is not None


def test_refresh_and_late_offer_purposes():
    call = B2bua().setup()
    _refresh(call.a, "A", 3, 0.01)
    call.a.at(4)
    inv = call.a.request("A", "INVITE")
    call.a.wait(0.05)
    call.a.response(inv, 200, body=sdp(version=2, addr=SBC_A[0], session_id="3003"))
    call.a.ack(inv, body=sdp(version=2, addr=UA_A[0]))
    call.a.at(6)
    same = call.a.request("A", "INVITE", body=sdp(version=2, addr=UA_A[0]))
    call.a.wait(0.05)
    call.a.response(same, 200, body=sdp(version=2, addr=SBC_A[0], session_id="3003"))
    reqs = [r for r in _legs(call.records()) if r.fact == "request"]
    assert [(r.method, r.purpose) for r in reqs] == [
        ("UPDATE", "refresh"),
        ("INVITE", "late_offer"),
        ("INVITE", "refresh"),
    ]
    fin = [r for r in _legs(call.records()) if r.fact == "final" and r.cseq == inv.cseq]
    assert fin[0].offer_in_response is True


# -- clean --------------------------------------------------------------------------------


def test_update_passed_through_as_update_is_clean():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "UPDATE")
    call.end(9)
    assert call.anomalies() == []


def test_reinvite_passed_through_as_reinvite_is_clean():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    a, b = call.a, call.b
    a.at(5)
    inv = a.request("A", "INVITE", body=sdp(version=2, direction="sendonly", addr=UA_A[0]))
    b.at(5.02)
    inv_b = b.request("A", "INVITE", body=sdp(version=2, direction="sendonly", addr=SBC_B[0]))
    b.wait(0.05)
    b.response(inv_b, 200, body=sdp(version=2, addr=UA_B[0], session_id="2002"))
    b.ack(inv_b)
    a.at(5.1)
    a.response(inv, 200, body=sdp(version=2, addr=SBC_A[0], session_id="3003"))
    a.ack(inv)
    call.end(9)
    assert call.anomalies() == []


def test_relayed_refresh_is_clean():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    a, b = call.a, call.b
    a.at(10)
    up = a.request("A", "UPDATE")
    b.at(10.01)
    up_b = b.request("A", "UPDATE")
    b.wait(0.02)
    b.response(up_b, 200)
    a.at(10.04)
    a.response(up, 200)
    call.end(20)
    assert call.anomalies() == []


# -- the anomalies ------------------------------------------------------------------------


def test_update_to_reinvite():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE", delay=0.03)
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_to_reinvite" and an.severity == "info" and an.family == "C.12"
    f = an.fields
    assert f["leg_a_call_id"] == "leg-a@test" and f["leg_b_call_id"] == "leg-b@sbc"
    assert f["correlation_method"] == "x_cid" and f["correlation_score"] == 1.0
    assert (f["leg_a_method"], f["leg_b_method"]) == ("UPDATE", "INVITE")
    assert abs(f["translation_delay_ms"] - 30) < 1
    # fired on the SBC's re-INVITE: the B-leg, whose Call-ID the SBC owns
    assert an.call_id == "leg-b@sbc" and an.method == "INVITE" and an.ua_sender == "SBC/1.0"
    assert an.call_id_owner == "self" and an.direction == "caller_to_callee"
    assert an.x_cid == "leg-a@test" and len(an.evidence) == 2


def test_reinvite_to_update_from_the_callee():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    a, b = call.a, call.b
    b.at(5)
    inv = b.request("B", "INVITE", body=sdp(version=2, direction="sendonly", addr=UA_B[0],
                                            session_id="2002"))  # fmt: skip
    a.at(5.02)
    up = a.request("B", "UPDATE", body=sdp(version=2, direction="sendonly", addr=SBC_A[0],
                                           session_id="3003"))  # fmt: skip
    a.wait(0.03)
    a.response(up, 200, body=sdp(version=2, direction="recvonly", addr=UA_A[0]))
    b.at(5.06)
    b.response(inv, 200, body=sdp(version=2, direction="recvonly", addr=SBC_B[0]))
    b.wait(0.01)
    b.ack(inv)
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "reinvite_to_update"
    assert (an.fields["leg_a_method"], an.fields["leg_b_method"]) == ("UPDATE", "INVITE")
    assert an.fields["origin_leg"] == "b"
    # the SBC's UPDATE on the A-leg, where the SBC is the callee (not the Call-ID owner)
    assert an.call_id == "leg-a@test" and an.call_id_owner == "peer"


def test_update_refused_on_the_b_leg_and_retried_as_reinvite_is_a_conversion():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    a, b = call.a, call.b
    a.at(5)
    up = a.request("A", "UPDATE", body=sdp(version=2, direction="sendonly", addr=UA_A[0]))
    b.at(5.01)
    up_b = b.request("A", "UPDATE", body=sdp(version=2, direction="sendonly", addr=SBC_B[0]))
    b.wait(0.01)
    b.response(up_b, 405, headers=[ALLOW_NO_UPDATE])
    b.at(5.03)
    inv = b.request("A", "INVITE", body=sdp(version=2, direction="sendonly", addr=SBC_B[0]))
    b.wait(0.03)
    b.response(inv, 200, body=sdp(version=2, direction="recvonly", addr=UA_B[0],
                                  session_id="2002"))  # fmt: skip
    b.ack(inv)
    a.at(5.08)
    a.response(up, 200, body=sdp(version=2, direction="recvonly", addr=SBC_A[0],
                                 session_id="3003"))  # fmt: skip
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_to_reinvite" and an.evidence[1].startswith("leg-b@sbc")
    assert abs(an.fields["translation_delay_ms"] - 30) < 1


def test_update_absorbed_hold_is_low():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call)
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_absorbed" and an.severity == "low"
    assert an.call_id == "leg-a@test" and an.status == 200 and an.method == "UPDATE"
    assert an.direction == "callee_to_caller" and an.ua_sender == "SBC/1.0"
    assert an.fields["leg_a_method"] == "UPDATE" and an.fields["leg_b_method"] == ""
    assert an.fields["sdp_change"] == "direction"


def test_update_absorbed_address_change_is_info():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call, direction="sendrecv", addr="10.9.9.9")
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_absorbed" and an.severity == "info"
    assert an.fields["sdp_change"] == "media"


def test_update_stripped_from_allow_in_the_invite():
    call = B2bua()
    call.setup(b_invite=(ALLOW_NO_UPDATE, f"X-CID: {call.a.call_id}"))
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_stripped_from_allow" and an.severity == "low"
    assert an.call_id == "leg-b@sbc" and an.method == "INVITE" and an.status == 0
    assert an.src_ip == SBC_B[0] and an.fields["stripped_in"] == "invite"
    assert an.fields["leg_a_method"] == an.fields["leg_b_method"] == "INVITE"
    assert abs(an.fields["translation_delay_ms"] - 20) < 1


def test_update_stripped_from_allow_in_the_answer():
    call = B2bua()
    call.setup(b_invite=_x_cid(call), a_answer=(ALLOW_NO_UPDATE,))
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_stripped_from_allow" and an.fields["stripped_in"] == "answer"
    assert an.call_id == "leg-a@test" and an.status == 200 and an.src_ip == SBC_A[0]


def test_no_allow_on_the_relayed_message_is_no_information():
    call = B2bua()
    call.setup(b_invite=(f"X-CID: {call.a.call_id}",), a_answer=())
    call.end(9)
    assert call.anomalies() == []


def test_timer_terminated_locally():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _refresh(call.a, "A", 10, 0.005)  # UA-A refreshes; the SBC answers at once
    _refresh(call.b, "A", 40, 0.03)  # the SBC refreshes the B-leg on its own schedule
    _refresh(call.a, "A", 70, 0.005)
    call.end(90)
    (an,) = call.anomalies()
    assert an.anomaly == "timer_terminated_locally" and an.severity == "info"
    assert an.fields["answered_locally_on"] == "a"
    assert an.fields["leg_a_method"] == an.fields["leg_b_method"] == "UPDATE"


def test_update_rejected_by_the_sbc_is_not_absorbed():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    a = call.a
    a.at(5)
    up = a.request("A", "UPDATE", body=sdp(version=2, direction="sendonly"))
    a.wait(0.01)
    a.response(up, 488)
    call.end(9)
    assert call.anomalies() == []


def test_b2bua_refreshing_both_legs_itself_answers_nothing_locally():
    """The SBC is the refresher on both legs: no endpoint refresh was answered by it."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _refresh(call.a, "B", 10, 0.02)  # the SBC is the callee of the A-leg
    _refresh(call.b, "A", 40, 0.02)  # and the caller of the B-leg
    call.end(60)
    assert call.anomalies() == []


# -- traps --------------------------------------------------------------------------------


def test_b2bua_own_refresh_beside_an_absorbed_change_is_no_conversion():
    """The SBC's own refresh re-INVITE (same SDP) lands 0.3 s after UA-A's hold UPDATE."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call)
    b = call.b
    b.at(5.3)
    inv = b.request("A", "INVITE", body=sdp(version=1, addr=SBC_B[0]))
    b.wait(0.05)
    b.response(inv, 200, body=sdp(version=1, addr=UA_B[0], session_id="2002"))
    b.ack(inv)
    call.end(9)
    names = _names(call.anomalies())
    assert "update_to_reinvite" not in names
    assert "update_absorbed" not in names  # the B-leg was not idle: no claim


def test_b2bua_own_refresh_coinciding_with_a_locally_answered_one():
    """Both legs refresh within 10 ms but the SBC answered UA-A before UA-B answered it."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _refresh(call.a, "A", 10, 0.005)
    _refresh(call.b, "A", 10.002, 0.03)
    call.end(20)
    assert _names(call.anomalies()) == ["timer_terminated_locally"]


def test_owner_unknown_on_one_leg_still_pairs_by_session_id():
    """The B-leg capture starts mid-call (UA-B's UPDATE first): its sides are guessed."""
    call = B2bua()
    sid_a = f"Session-ID: {SID_A};remote={NIL}"
    call.setup(a_invite=(ALLOW, sid_a), b_start=False)
    a, b = call.a, call.b
    b.at(5)
    up = b.request("B", "UPDATE", headers=[f"Session-ID: {SID_B};remote={SID_A}"],
                   body=sdp(version=2, direction="sendonly", addr=UA_B[0]))  # fmt: skip
    a.at(5.02)
    inv = a.request("B", "INVITE", headers=[f"Session-ID: {SID_B};remote={SID_A}"],
                    body=sdp(version=2, direction="sendonly", addr=SBC_A[0],
                             session_id="3003"))  # fmt: skip
    a.wait(0.04)
    a.response(inv, 200, body=sdp(version=2, direction="recvonly", addr=UA_A[0]))
    a.ack(inv)
    b.at(5.08)
    b.response(up, 200, body=sdp(version=2, direction="recvonly", addr=SBC_B[0]))
    a.at(9)
    a.bye("A")
    (an,) = call.anomalies()
    assert an.anomaly == "update_to_reinvite"
    assert an.fields["correlation_method"] == "session_id"
    assert an.confidence < 1.0


def test_no_absorption_claim_about_a_leg_whose_sides_are_guessed():
    """The A-leg capture starts mid-call: who sent the UPDATE to whom is not known."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    call.a.obs = [o for o in call.a.obs if o.ts_us >= call.a.obs[0].ts_us + 1_000_000]
    _absorbed_update(call)
    call.end(9)
    assert call.anomalies() == []


def test_no_absorption_claim_when_the_capture_ends_inside_the_window():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call)  # and the capture stops 10 ms later
    assert call.anomalies() == []


def test_heuristic_pairing_is_scored():
    call = B2bua()
    call.setup()
    _absorbed_update(call)
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_absorbed"
    assert an.fields["correlation_method"] == "heuristic"
    assert 0.6 <= an.fields["correlation_score"] < 1.0
    assert an.confidence == an.fields["correlation_score"]


def test_heuristic_contradicted_by_session_id_fires_nothing():
    call = B2bua()
    call.setup(
        a_invite=(ALLOW, f"Session-ID: {SID_A};remote={NIL}"),
        b_invite=(ALLOW, f"Session-ID: {SID_C};remote={NIL}"),
    )
    _absorbed_update(call)
    call.end(9)
    assert call.anomalies() == []
    correlator = LegCorrelator()
    for r in _legs(call.records()):
        correlator.feed(r)
    assert correlator.stats.heuristic_contradicted >= 1 and not correlator.stats.links


def test_heuristic_ambiguous_candidates_fire_nothing():
    call = B2bua()
    call.setup()
    _absorbed_update(call)
    call.end(9)
    # another caller's call from the same user to the same user, also to the SBC, 5 ms later:
    # either could be the A-leg of leg-b
    twin = Flow("leg-c@test", caller_tag="c1", callee_tag="s3", a=("10.0.0.4", 5060), b=SBC_A)
    twin.at(0.005)
    twin.setup(ack=False)
    twin_obs = [o.replace(ref=f"c#{i}") for i, o in enumerate(twin.obs)]
    records = _run(call.observations() + twin_obs)
    assert [a for a in correlate(records) if a.anomaly in C12] == []


def test_heuristic_prefers_the_call_that_reached_the_sbc():
    """A same-user call to another box 5 ms later is no rival: the SBC address chains A to B."""
    call = B2bua()
    call.setup()
    _absorbed_update(call)
    call.end(9)
    other = Flow("leg-c@test", caller_tag="c1", callee_tag="x3", a=("10.0.0.4", 5060),
                 b=("10.0.0.99", 5060))  # fmt: skip
    other.at(0.025)
    other.setup(ack=False)
    other_obs = [o.replace(ref=f"c#{i}") for i, o in enumerate(other.obs)]
    anoms = [a for a in correlate(_run(call.observations() + other_obs)) if a.anomaly in C12]
    assert [(a.anomaly, a.fields["leg_b_call_id"]) for a in anoms] == [
        ("update_absorbed", "leg-b@sbc")
    ]


def test_heuristic_needs_the_b_leg_invite_within_a_second():
    call = B2bua()
    call.setup(b_delay=0.3)
    call.b.obs = [o.replace(ts_us=o.ts_us + 1_500_000) for o in call.b.obs]
    _absorbed_update(call)
    call.end(9)
    assert call.anomalies() == []


def _run(obs: list) -> list[Record]:
    engine = Engine(EngineConfig(), detectors=[LegSummaryDetector()])
    out: list[Record] = []
    for o in sorted(obs, key=lambda o: o.ts_us):
        out += engine.feed(o)
    return out + engine.flush()


def _when(r: Record) -> int:
    if isinstance(r, LegRecord):
        return r.detected_at_us
    return getattr(r, "event_time_us", 0) or getattr(r, "end_time_us", 0)


def test_same_call_id_from_another_node_is_not_a_pair():
    """A second first stage (another node's mirror) summarises the A-leg again."""
    call = B2bua()
    sid = (ALLOW, f"Session-ID: {SID_A};remote={NIL}")
    call.setup(a_invite=sid, b_invite=sid)
    _absorbed_update(call)
    call.end(9)
    copy = [o.replace(node="p2", ref=f"p2#{i}") for i, o in enumerate(call.a.obs)]
    records = sorted(_run(call.observations()) + _run(copy), key=_when)
    anoms = [a for a in correlate(records) if a.anomaly in C12]
    assert [(a.anomaly, a.node) for a in anoms] == [("update_absorbed", "p1")]


def test_modifications_crossing_in_opposite_directions_are_no_conversion():
    """UA-A's UPDATE and UA-B's re-INVITE at the same time: each flows towards the SBC."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call)
    b = call.b
    b.at(5.02)
    inv = b.request("B", "INVITE", body=sdp(version=2, direction="sendonly", addr=UA_B[0],
                                            session_id="2002"))  # fmt: skip
    b.wait(0.02)
    b.response(inv, 200, body=sdp(version=2, direction="recvonly", addr=SBC_B[0]))
    b.ack(inv)
    call.end(9)
    assert call.anomalies() == []


def test_sbc_answering_first_then_reinviting_is_still_a_conversion():
    """The SBC answers UA-A's UPDATE at once, then sends its re-INVITE: not nested."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _absorbed_update(call)  # answered 10 ms later
    b = call.b
    b.at(5.2)
    inv = b.request("A", "INVITE", body=sdp(version=2, direction="sendonly", addr=SBC_B[0]))
    b.wait(0.05)
    b.response(inv, 200, body=sdp(version=2, direction="recvonly", addr=UA_B[0],
                                  session_id="2002"))  # fmt: skip
    b.ack(inv)
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_to_reinvite" and an.fields["nested"] is False
    assert an.confidence < 1.0


def test_b2bua_request_before_the_endpoint_one_is_not_its_relay():
    """The SBC re-INVITEs the B-leg (its own change) 100 ms before UA-A's hold UPDATE."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    b = call.b
    b.at(4.9)
    inv = b.request("A", "INVITE", body=sdp(version=2, addr="10.0.0.11"))
    b.wait(0.05)
    b.response(inv, 200, body=sdp(version=2, addr=UA_B[0], session_id="2002"))
    b.ack(inv)
    _absorbed_update(call)
    call.end(9)
    assert _names(call.anomalies()) == ["update_absorbed"]


# -- keys ---------------------------------------------------------------------------------


def _converted(call: B2bua) -> AnomalyRecord:
    _relay_update_as(call, "INVITE")
    call.end(9)
    (an,) = call.anomalies()
    assert an.anomaly == "update_to_reinvite"
    return an


def test_pairs_by_hep_correlation_id():
    call = B2bua()
    call.setup()
    _relay_update_as(call, "INVITE")
    call.end(9)
    for flow in (call.a, call.b):
        flow.obs = [o.replace(correlation_id="corr-77") for o in flow.obs]
    (an,) = call.anomalies()
    assert an.fields["correlation_method"] == "hep_cid" and an.hep_correlation_id == "corr-77"


def test_pairs_by_session_id():
    call = B2bua()
    call.setup(
        a_invite=(ALLOW, f"Session-ID: {SID_A};remote={NIL}"),
        b_invite=(ALLOW, f"Session-ID: {SID_A};remote={NIL}"),
        b_answer=(ALLOW, f"Session-ID: {SID_B};remote={SID_A}"),
        a_answer=(ALLOW, f"Session-ID: {SID_B};remote={SID_A}"),
    )
    an = _converted(call)
    assert an.fields["correlation_method"] == "session_id"
    assert an.session_id_pair == f"{SID_A},{SID_B}"


def test_pairs_by_x_cid():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    assert _converted(call).fields["correlation_method"] == "x_cid"


def test_pairs_by_icid():
    call = B2bua()
    pcv = "P-Charging-Vector: icid-value=ab12cd34;icid-generated-at=10.0.0.2"
    call.setup(a_invite=(ALLOW, pcv), b_invite=(ALLOW, pcv))
    an = _converted(call)
    assert an.fields["correlation_method"] == "icid" and an.icid == "ab12cd34"


def test_pairs_by_heuristic():
    call = B2bua()
    call.setup()
    an = _converted(call)
    assert an.fields["correlation_method"] == "heuristic"
    assert an.confidence < 1.0


def test_key_priority_session_id_over_x_cid():
    call = B2bua()
    sid = f"Session-ID: {SID_A};remote={NIL}"
    call.setup(a_invite=(ALLOW, sid), b_invite=(*_x_cid(call), sid))
    assert _converted(call).fields["correlation_method"] == "session_id"
    cfg = LegCorrelatorConfig(keys=("x_cid", "session_id"))
    (an,) = call.anomalies(cfg)
    assert an.fields["correlation_method"] == "x_cid"


# -- stream behaviour ---------------------------------------------------------------------


def test_window_is_configurable():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE", delay=1.2)
    call.end(9)
    assert _names(call.anomalies()) == ["update_to_reinvite"]
    assert call.anomalies(LegCorrelatorConfig(window_ms=1000)) == []


def test_records_of_another_partition_arriving_late_still_pair():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE")
    call.end(9)
    records = call.records()
    expected = [a.id for a in correlate(records) if a.anomaly in C12]
    assert len(expected) == 1

    def arrival(r: Record) -> int:
        t = r.detected_at_us if isinstance(r, LegRecord) else 0
        if isinstance(r, LegRecord) and r.call_id == "leg-a@test":
            t += 1_000_000  # the A-leg's partition lags one second
        return t

    legs = sorted(_legs(records), key=arrival)
    correlator = LegCorrelator()
    out = []
    for r in legs:
        out += correlator.feed(r)
    out += correlator.advance_to(max(r.detected_at_us for r in legs) + 10_000_000)
    out += correlator.flush()
    assert [a.id for a in out] == expected


def test_memory_is_bounded_and_counted():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    setup = next(r for r in _legs(call.records()) if r.fact == "setup")
    correlator = LegCorrelator(LegCorrelatorConfig(max_legs=2, leg_idle_s=10))
    for i in range(5):
        correlator.feed(setup.replace(call_id=f"c{i}", x_cid=""))
    assert len(correlator) == 2 and correlator.stats.evicted == 3
    correlator.advance_to(setup.detected_at_us + 11_000_000)
    assert len(correlator) == 0 and correlator.stats.expired == 2
    assert correlator.index == {}


def test_correlator_state_pickles():
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE")
    correlator = LegCorrelator()
    for r in _legs(call.records())[:-1]:
        correlator.feed(r)
    clone = pickle.loads(pickle.dumps(correlator))
    assert len(clone) == len(correlator) == 2
