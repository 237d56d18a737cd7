"""C.7 missing ACK after a 2xx to INVITE / re-INVITE: rules, traps and clean flows."""

from __future__ import annotations

import pickle

from sipflow import T0, Flow, sdp

from consumers.detectors.missing_ack import MissingAckDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord

# When a UAS that never gets the ACK retransmits its 2xx (T1 = 0.5 s doubling, capped at 4 s).
RETRANSMIT_AT = (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5)


def _run(flow: Flow, t1_ms: int = 500) -> list[AnomalyRecord]:
    eng = Engine(EngineConfig(), detectors=[MissingAckDetector(t1_ms=t1_ms)])
    return [a for a in flow.anomalies(eng) if a.anomaly == "missing_ack"]


def _retransmit(flow: Flow, start_line: bytes, cseq: int, after: tuple[float, ...]) -> None:
    """Repeat both copies of the latest response (start line + CSeq) `after` seconds later."""
    tag = f"CSeq: {cseq} INVITE".encode()
    match = [o for o in flow.obs if o.payload.startswith(start_line) and tag in o.payload]
    first = match[-2:]
    base = min(o.ts_us for o in first)
    for dt in after:
        for o in first:
            ts = base + round(dt * 1e6) + (o.ts_us - base)
            flow.obs.append(o.replace(ts_us=ts, ref=f"{o.ref}+{dt}"))


def _reinvite(flow: Flow, sender: str = "A", version: int = 2):
    re = flow.request(sender, "INVITE", body=sdp(version=version))
    flow.wait(0.001)
    flow.response(re, 100, proxy=True)
    flow.wait(0.2)
    flow.response(re, 200, body=sdp(version=version, addr="10.0.0.3", session_id="2002"))
    return re


def _tick(flow: Flow, at: float) -> None:
    """An unrelated message so that stream time reaches `at` seconds."""
    other = Flow("other@test")
    other.at(at)
    other.request("A", "OPTIONS", in_dialog=False)
    flow.obs.extend(other.obs)


# -- clean flows -----------------------------------------------------------------------------


def test_clean_call_with_reinvite_has_no_missing_ack():
    f = Flow()
    f.setup()
    f.wait(2)
    re = _reinvite(f)
    f.wait(0.05)
    f.ack(re)
    f.wait(40)
    f.bye("A")
    _tick(f, 200)
    assert _run(f) == []


def test_ack_after_retransmissions_within_64_t1_is_fine():
    f = Flow()
    inv = f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT[:4])
    f.at(8.0)
    f.ack(inv)
    _tick(f, 100)
    assert _run(f) == []


# -- rules -----------------------------------------------------------------------------------


def test_initial_invite_without_ack_is_high_with_retransmission_count():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    _tick(f, 100)
    (a,) = _run(f)
    assert a.severity == "high"
    assert a.direction == "caller_to_callee"  # the UAC is the offender
    assert a.fields["2xx_retransmissions"] == len(RETRANSMIT_AT)
    assert a.fields["ack_seen"] is False and a.fields["ack_delay_ms"] is None
    assert a.fields["bye_after_ms"] is None
    assert a.fields["record_routed"] is True
    assert a.fields["initial_invite"] is True
    assert a.fields["t_2xx_last"] - a.fields["t_2xx_first"] == 31_500_000
    assert a.confidence < 1.0  # no end-to-end ACK was ever seen on this node
    assert a.status == 200 and a.method == "INVITE"


def test_uas_bye_after_64_t1_makes_it_critical():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    f.at(0.6 + 32.05)
    bye = f.bye("B")
    _tick(f, 100)
    (a,) = _run(f)
    assert a.severity == "critical"
    assert 31_900 < a.fields["bye_after_ms"] < 32_200
    assert a.fields["bye_by"] == "uas"
    assert bye.cseq == 1


def test_reinvite_without_ack_uses_t1():
    f = Flow()
    f.setup()
    f.wait(2)
    _reinvite(f, "B")
    _retransmit(f, b"SIP/2.0 200", 1, (0.1, 0.3, 0.7, 1.5))
    _tick(f, 20)
    # T1 = 100 ms: 64*T1 = 6.4 s
    (a,) = _run(f, t1_ms=100)
    assert a.severity == "high"
    assert a.direction == "callee_to_caller"
    assert a.fields["initial_invite"] is False
    assert a.fields["2xx_retransmissions"] == 4
    assert a.confidence == 1.0  # the initial ACK was seen, the UAS retransmitted


def test_late_ack_after_the_deadline_is_reported_as_seen():
    f = Flow()
    inv = f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    f.at(0.6 + 33)
    f.ack(inv)
    _tick(f, 100)
    (a,) = _run(f)
    assert a.fields["ack_seen"] is True
    assert 32_900 < a.fields["ack_delay_ms"] < 33_100


def test_forked_2xx_each_needs_its_ack():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 180, to_tag="x1")
    f.response(inv, 180, to_tag="x2")
    f.wait(0.5)
    f.response(inv, 200, to_tag="x1", body=sdp(addr="10.0.0.3"))
    f.response(inv, 200, to_tag="x2", body=sdp(addr="10.0.0.4"))
    f.wait(0.05)
    f.ack(inv, to_tag="x1")
    _tick(f, 100)
    (a,) = _run(f)
    assert a.callee_tag == "x2"


def test_uac_bye_before_the_deadline_lowers_to_low():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    f.at(5)
    f.bye("A")
    _tick(f, 100)
    (a,) = _run(f)
    assert a.severity == "low"
    assert a.fields["bye_by"] == "uac"


# -- traps -----------------------------------------------------------------------------------


def test_not_record_routed_ack_bypasses_the_proxy():
    f = Flow(record_route=False)
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    f.at(2)
    _reinvite(f)
    _tick(f, 100)
    assert _run(f) == []


def test_ack_captured_before_the_2xx_copy_counts():
    f = Flow()
    f.setup()
    f.wait(2)
    re = _reinvite(f)
    ok_ts = f.obs[-2].ts_us
    f.ack(re)
    # The ACK's copies carry earlier stamps than the 2xx's (another Kamailio worker).
    for i in (-2, -1):
        f.obs[i] = f.obs[i].replace(ts_us=ok_ts - 150 + (i + 2) * 10)
    _tick(f, 100)
    assert _run(f) == []


def test_initial_ack_captured_before_the_2xx_without_early_dialog():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.5)
    f.response(inv, 200, body=sdp(addr="10.0.0.3"))
    ok_ts = f.obs[-2].ts_us
    inv.to_tag = "b1"
    f.ack(inv)
    for i in (-2, -1):
        f.obs[i] = f.obs[i].replace(ts_us=ok_ts - 150 + (i + 2) * 10)
    _tick(f, 100)
    assert _run(f) == []


def test_hop_by_hop_ack_for_non_2xx_is_not_this_case():
    f = Flow()
    f.setup()
    f.wait(2)
    re = f.request("A", "INVITE", body=sdp(version=2))
    f.response(re, 488)
    f.hop_ack(re)
    f.wait(3)
    re2 = f.request("A", "INVITE", body=sdp(version=2))
    f.response(re2, 491)  # no ACK captured at all for this one: still not C.7
    _tick(f, 100)
    assert _run(f) == []


def test_newer_reinvite_before_the_deadline_suppresses(rfc6141_5_4: None = None):
    f = Flow()
    f.setup()
    f.wait(2)
    _reinvite(f)  # no ACK: the UAC lost its contact
    _retransmit(f, b"SIP/2.0 200", 2, (0.5, 1.5, 3.5))
    f.wait(5)
    re3 = _reinvite(f, version=3)
    f.ack(re3)
    _tick(f, 100)
    assert _run(f) == []


def test_ack_in_mortal_state_counts():
    # RFC 5407 §3.2.3: the 200 to the re-INVITE arrives after the UAC sent BYE; it ACKs.
    f = Flow()
    f.setup()
    f.wait(2)
    re = f.request("A", "INVITE", body=sdp(version=2))
    f.wait(0.1)
    bye = f.request("A", "BYE")
    f.wait(0.05)
    f.response(re, 200, body=sdp(version=2, addr="10.0.0.3"))
    f.wait(0.02)
    f.ack(re)
    f.response(bye, 200)
    _tick(f, 100)
    assert _run(f) == []


def test_capture_end_before_64_t1_claims_nothing():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT[:6])
    _tick(f, 20)
    assert _run(f) == []


def test_retransmissions_that_stop_early_mean_an_untraced_ack():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT[:3])
    _tick(f, 100)
    assert _run(f) == []


def test_retransmissions_folded_as_copies_are_counted():
    f = Flow()
    f.setup(ack=False)
    # 0.5 and 1.5 s fall in the first copy's dedup window (2 s): copies, not new messages.
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    eng = Engine(EngineConfig(), detectors=[MissingAckDetector()])
    _tick(f, 100)
    (a,) = [x for x in f.anomalies(eng) if x.anomaly == "missing_ack"]
    assert a.fields["2xx_retransmissions"] == 10
    assert a.event_time_us > T0 * 1e6


def test_no_retransmission_and_no_traced_ack_is_read_as_a_trace_gap():
    f = Flow()
    f.setup(ack=False)  # a single 2xx: the UAS evidently got an ACK the mirror missed
    _tick(f, 100)
    assert _run(f) == []


def test_single_2xx_is_claimed_at_half_confidence_when_acks_are_traced():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.5)
    f.response(inv, 200, to_tag="x1", body=sdp(addr="10.0.0.3"))
    f.response(inv, 200, to_tag="x2", body=sdp(addr="10.0.0.4"))
    f.wait(0.05)
    f.ack(inv, to_tag="x1")
    _tick(f, 100)
    (a,) = _run(f)
    assert a.callee_tag == "x2" and a.confidence == 0.5


def test_pending_state_survives_an_engine_checkpoint():
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    _tick(f, 100)
    obs = sorted(f.obs, key=lambda o: o.ts_us)
    eng = Engine(EngineConfig(), detectors=[MissingAckDetector()])
    records = []
    for o in obs[: len(obs) // 2]:
        records += eng.feed(o)
    eng = pickle.loads(pickle.dumps(eng))
    for o in obs[len(obs) // 2 :]:
        records += eng.feed(o)
    records += eng.flush()
    assert [r.anomaly for r in records if r.kind == "anomaly"] == ["missing_ack"]


def test_initial_ack_captured_before_the_2xx_with_early_dialog():
    f = Flow()
    inv = f.setup(ack=False)
    ok_ts = f.obs[-2].ts_us
    f.ack(inv)
    for i in (-2, -1):
        f.obs[i] = f.obs[i].replace(ts_us=ok_ts - 150 + (i + 2) * 10)
    _tick(f, 100)
    assert _run(f) == []


def test_uas_bye_just_before_the_deadline_then_capture_end():
    # The UAS gives up at its own 64*T1 (a few ms before ours) and the capture ends.
    f = Flow()
    f.setup(ack=False)
    _retransmit(f, b"SIP/2.0 200", 1, RETRANSMIT_AT)
    f.at(0.6 + 32.0)
    f.bye("B")
    (a,) = _run(f)
    assert a.severity == "critical" and a.fields["bye_by"] == "uas"
