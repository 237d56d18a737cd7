"""Dedup (C.0.1-3), the dialog state table, transactions, offer/answer and bounded memory."""

from __future__ import annotations

import pickle

from sipflow import Flow, sdp

from consumers.engine import Engine, EngineConfig
from consumers.tracking.states import TRANSITIONS, DialogEvent, DialogState, next_state
from consumers.tracking.tracker import TrackerConfig


def _messages(flow: Flow, **kw: object) -> list:
    eng = Engine(EngineConfig(**kw), detectors=[])
    return [r for r in flow.engine_records(eng) if r.kind == "message"]


def _dialogs(flow: Flow) -> list:
    eng = Engine(EngineConfig(), detectors=[])
    return [r for r in flow.engine_records(eng) if r.kind == "dialog"]


def test_in_and_out_copies_fold_into_one_message_with_hops():
    f = Flow()
    f.setup()
    msgs = _messages(f)
    invite = next(m for m in msgs if m.method == "INVITE" and m.status == 0)
    assert [o.hop for o in invite.observations] == ["in", "out"]
    assert invite.origin == "endpoint"
    trying = [m for m in msgs if m.status == 100]
    assert len(trying) == 1 and trying[0].origin == "proxy"
    assert len(msgs) == 5  # INVITE, 100, 180, 200, ACK


def test_transport_duplicate_counts_a_copy_not_a_message():
    f = Flow()
    f.setup()
    f.obs.append(f.obs[0].replace(ref="dup"))
    msgs = _messages(f)
    invite = next(m for m in msgs if m.method == "INVITE" and m.status == 0)
    assert invite.observations[0].copies == 2
    assert len(msgs) == 5


def test_dialog_states_through_a_call():
    f = Flow()
    f.setup()
    f.wait(1)
    f.bye("A")
    states = [(m.method, m.status, m.dialog_state) for m in _messages(f)]
    assert states == [
        ("INVITE", 0, "pre"),
        ("INVITE", 100, "pre"),
        ("INVITE", 180, "pre"),
        ("INVITE", 200, "early"),
        ("ACK", 0, "moratorium"),
        ("BYE", 0, "established"),
        ("BYE", 200, "mortal"),
    ]
    (d,) = _dialogs(f)
    assert d.state == "terminated" and d.end_reason == "bye" and d.record_routed is True


def test_forked_early_dialogs_and_one_answer():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.1)
    f.response(inv, 180, to_tag="x1")
    f.response(inv, 180, to_tag="x2")
    f.wait(0.5)
    f.response(inv, 200, to_tag="x2", body=sdp(addr="10.0.0.3"))
    f.wait(0.05)
    f.ack(inv, to_tag="x2")
    dialogs = {d.callee_tag: d for d in _dialogs(f)}
    assert set(dialogs) == {"x1", "x2"}
    assert dialogs["x2"].state == "established"
    assert dialogs["x1"].state == "early"


def test_rejected_attempt_terminates_early_dialogs():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.response(inv, 183, to_tag="x1")
    f.wait(1)
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.response(cancel, 200, to_tag="x1")
    f.response(inv, 487, to_tag="x1")
    f.hop_ack(inv, to_tag="x1")
    (d,) = _dialogs(f)
    assert d.state == "terminated" and d.end_reason == "cancelled" and d.initial_status == 487


def test_retransmitted_request_and_2xx_are_flagged():
    f = Flow()
    inv = f.setup(ack=False)
    f.wait(0.5)
    ok = [o for o in f.obs if o.payload.startswith(b"SIP/2.0 200")]
    for o in ok:
        f.obs.append(o.replace(ts_us=o.ts_us + 4_000_000, ref="rt"))
    f.wait(5)
    f.ack(inv)
    msgs = _messages(f)
    oks = [m for m in msgs if m.status == 200]
    assert [m.retransmission for m in oks] == [False, True]


def test_offer_answer_roles():
    f = Flow()
    f.setup()
    f.wait(1)
    re = f.request("B", "INVITE")  # re-INVITE without SDP: offer in 2xx, answer in ACK
    f.response(re, 200, body=sdp(version=2))
    f.ack(re, body=sdp(version=2, addr="10.0.0.3"))
    roles = [(m.method, m.status, m.sdp_role) for m in _messages(f) if m.sdp_role]
    assert roles == [
        ("INVITE", 0, "offer"),
        ("INVITE", 200, "answer"),
        ("INVITE", 200, "offer"),
        ("ACK", 0, "answer"),
    ]


def test_rejected_offer_rolls_back():
    f = Flow()
    f.setup()
    f.wait(1)
    re = f.request("A", "INVITE", body=sdp(version=2))
    f.response(re, 488)
    f.hop_ack(re)
    f.wait(1)
    re2 = f.request("A", "INVITE", body=sdp(version=2))
    f.response(re2, 200, body=sdp(version=2, addr="10.0.0.3"))
    roles = [(m.cseq, m.status, m.sdp_role) for m in _messages(f) if m.method == "INVITE"]
    assert (3, 0, "offer") in roles and (3, 200, "answer") in roles


def test_state_table_is_total_for_unknown_pairs():
    assert next_state(DialogState.TERMINATED, DialogEvent.PROVISIONAL) is DialogState.TERMINATED
    for (state, event), new in TRANSITIONS.items():
        assert next_state(state, event) is new


def test_attempt_flood_is_capped_and_established_calls_survive():
    eng = Engine(EngineConfig(tracker=TrackerConfig(max_calls=50)), detectors=[])
    good = Flow("good@test")
    good.setup()
    for obs in good.obs:
        eng.feed(obs)
    for i in range(500):
        scan = Flow(f"scan-{i}@test")
        scan.at(1 + i * 0.01)
        scan.request("A", "INVITE", in_dialog=False)
        for obs in scan.obs:
            eng.feed(obs)
    assert len(eng.tracker) <= 50
    assert "good@test" in eng.tracker.calls
    assert eng.tracker.evicted.get("attempt", 0) >= 400  # the rest wait in the reorder window


def test_engine_state_pickles_and_resumes():
    f = Flow()
    f.setup()
    f.wait(1)
    f.bye("A")
    half = len(f.obs) // 2
    eng = Engine(EngineConfig(), detectors=[])
    first = []
    for obs in sorted(f.obs, key=lambda o: o.ts_us)[:half]:
        first += eng.feed(obs)
    eng2 = pickle.loads(pickle.dumps(eng))
    rest = []
    for obs in sorted(f.obs, key=lambda o: o.ts_us)[half:]:
        rest += eng2.feed(obs)
    rest += eng2.flush()
    dialogs = [r for r in first + rest if r.kind == "dialog"]
    assert len(dialogs) == 1 and dialogs[0].end_reason == "bye"


def test_record_routed_by_memoised_hosts_equals_the_full_parse():
    # The tracker keeps each Record-Route text's hosts; the answer must be what walking
    # the parsed entries gives, for every shape of the header.
    from consumers.sip import parse_message
    from consumers.tracking.model import Call
    from consumers.tracking.tracker import Tracker

    def reference(msg, proxies):
        rr = msg.record_route
        if not rr:
            return False
        if not proxies:
            return None
        return any(e.uri.host.strip("[]") in proxies for e in rr)

    values = [
        None,
        "<sip:10.0.0.1:5060;lr>",
        "<sip:10.0.0.9;lr>, <sip:10.0.0.1;lr>",
        "<sip:[2001:db8::1]:5060;lr>",
        "*",
        "",
        "<sip:proxy.example.com;lr>",
        "garbage <<",
        "sip:10.0.0.1;lr",
    ]
    for proxies in (set(), {"10.0.0.1"}, {"2001:db8::1"}, {"proxy.example.com"}):
        tracker = Tracker(TrackerConfig(proxy_ips=proxies))
        call = Call("c", "n", 0, "t", 0)
        for twice in range(2):  # the second read comes from the memo
            for value in values:
                rr = "" if value is None else f"Record-Route: {value}\r\n"
                head = f"SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{rr}"
                two = f"{head}Record-Route: <sip:10.0.0.1;lr>\r\n" if value else head
                for text in (head, two):
                    msg = parse_message(f"{text}Content-Length: 0\r\n\r\n".encode())
                    want = reference(parse_message(msg.raw), proxies)
                    assert tracker._record_routed(call, msg) is want, (twice, value, proxies)
