"""C.10: session-change records for mid-dialog INVITE/UPDATE/PRACK and their outcome anomalies."""

from __future__ import annotations

import re

import pytest
from sipflow import Flow, Sent, sdp

from consumers.detectors.dialog_sanity import DialogSanityDetector
from consumers.detectors.sdp_changes import SdpChangeDetector
from consumers.detectors.session_changes import SessionChangeDetector, status_class
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord, Record, SessionChangeRecord

A_SDP = "10.0.0.2"
B_SDP = "10.0.0.3"
REL = ["Require: 100rel", "RSeq: 1"]


def a_sdp(version: int, **kw: object) -> str:
    return sdp(version=version, addr=A_SDP, **kw)  # type: ignore[arg-type]


def b_sdp(version: int, **kw: object) -> str:
    return sdp(version=version, addr=B_SDP, session_id="2002", **kw)  # type: ignore[arg-type]


def _records(flow: Flow, *, all_detectors: bool = False) -> list[Record]:
    dets = [SessionChangeDetector()]
    if all_detectors:
        dets += [SdpChangeDetector(), DialogSanityDetector()]
    return flow.engine_records(Engine(EngineConfig(), detectors=dets))  # type: ignore[arg-type]


def _changes(flow: Flow) -> list[SessionChangeRecord]:
    return [r for r in _records(flow) if isinstance(r, SessionChangeRecord)]


def _anomalies(flow: Flow, *, all_detectors: bool = False) -> list[AnomalyRecord]:
    return [r for r in _records(flow, all_detectors=all_detectors) if isinstance(r, AnomalyRecord)]


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _anomalies(flow))


def _reinvite(
    f: Flow,
    sender: str = "A",
    body: str = "",
    status: int = 200,
    answer: str = "",
    headers: tuple[str, ...] = (),
    ack: bool = True,
) -> Sent:
    re_inv = f.request(sender, "INVITE", body=body, headers=list(headers))
    f.wait(0.08)
    f.response(re_inv, status, body=answer)
    f.wait(0.02)
    if ack and status < 300:
        f.ack(re_inv)
    elif ack:
        f.hop_ack(re_inv)
    f.wait(1)
    return re_inv


def _call() -> Flow:
    f = Flow()
    f.setup()
    f.wait(2)
    return f


# -- clean flows and the record ------------------------------------------------------------


def test_hold_and_resume_give_records_and_no_anomaly():
    f = _call()
    _reinvite(f, body=a_sdp(2, direction="sendonly"), answer=b_sdp(2, direction="recvonly"))
    f.wait(20)
    _reinvite(f, body=a_sdp(3), answer=b_sdp(3))
    f.bye()
    recs = _changes(f)
    assert [(r.cseq, r.intent, r.status_class) for r in recs] == [
        (2, "hold", "success"),
        (3, "resume", "success"),
    ]
    assert _anomalies(f, all_detectors=True) == []


def test_record_fields():
    f = _call()
    re_inv = f.request("B", "INVITE", body=b_sdp(2, direction="inactive"))
    f.obs.append(f.obs[-2])  # a transport duplicate is not a retransmission
    f.wait(2.5)  # past the dedup window: a retransmission the tracker sees
    f.request("B", "INVITE", cseq=1, branch=re_inv.branch, body=b_sdp(2, direction="inactive"))
    f.wait(0.5)
    f.response(re_inv, 200, body=a_sdp(2, direction="inactive"))
    f.ack(re_inv)
    (rec,) = _changes(f)
    assert rec.method == "INVITE" and rec.cseq == 1 and rec.direction == "callee_to_caller"
    assert rec.dialog_state == "established"
    assert rec.status == 200 and rec.status_class == "success"
    assert rec.time_to_final_ms == pytest.approx(3000.0)
    assert rec.intent == "hold" and rec.offer_in == "request"
    assert (rec.sdp_version_before, rec.sdp_version_after) == (1, 2)
    assert rec.retransmissions == 1 and rec.had_reliable_1xx is False
    assert (rec.ua_sender, rec.ua_peer) == ("UA-B/1.0", "UA-A/1.0")
    assert rec.fields["inner_update_count"] == 0 and len(rec.evidence) == 2
    again = _changes(f)[0]
    assert again.id == rec.id  # deterministic


def test_only_mid_dialog_invite_update_prack_are_recorded():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=a_sdp(1), headers=["Supported: 100rel"])
    f.wait(0.05)
    f.response(inv, 183, body=b_sdp(1), headers=REL)
    f.wait(0.05)
    pr = f.request("A", "PRACK", headers=["RAck: 1 1 INVITE"])
    f.response(pr, 200)
    f.wait(0.5)
    f.response(inv, 200, body=b_sdp(1))
    inv.to_tag = "b1"
    f.ack(inv)
    f.wait(1)
    info = f.request("A", "INFO")
    f.response(info, 200)
    f.wait(1)
    up = f.request("B", "UPDATE")
    f.response(up, 200)
    f.wait(1)
    f.bye()
    recs = _changes(f)
    assert [(r.method, r.dialog_state, r.intent) for r in recs] == [
        ("PRACK", "early", "no_sdp"),
        ("UPDATE", "established", "no_sdp"),
    ]


@pytest.mark.parametrize(
    ("body", "answer", "intent"),
    [
        (a_sdp(2, codecs=("8",)), b_sdp(2, codecs=("8",)), "codec_change"),
        (a_sdp(2, port=41000), b_sdp(2), "address_change"),
        (
            a_sdp(2, extra_media="m=video 42000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
            b_sdp(2, extra_media="m=video 43000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
            "add_stream",
        ),
        (a_sdp(1), b_sdp(1), "no_change"),
        (a_sdp(2), b_sdp(2), "no_change"),  # a version bump alone changes nothing
    ],
)
def test_intent_from_the_sdp_diff(body: str, answer: str, intent: str):
    f = _call()
    _reinvite(f, body=body, answer=answer)
    assert _changes(f)[0].intent == intent


def test_remove_stream_intent():
    video = "m=video 42000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    gone = "m=video 0 RTP/AVP 96\r\n"
    f = Flow()
    f.setup(offer=a_sdp(1, extra_media=video), answer=b_sdp(1, extra_media=video))
    f.wait(2)
    _reinvite(f, body=a_sdp(2, extra_media=gone), answer=b_sdp(2, extra_media=gone))
    assert _changes(f)[0].intent == "remove_stream"


def test_codec_change_is_judged_by_the_answer_not_the_offer_list():
    f = _call()  # the callee answered 0 8: it committed PCMU first
    _reinvite(f, "B", body=b_sdp(2, codecs=("8", "0", "18")), answer=a_sdp(2, codecs=("0", "8")))
    f.wait(5)
    _reinvite(f, "B", body=b_sdp(3, codecs=("8", "0")), answer=a_sdp(3, codecs=("8",)))
    assert [r.intent for r in _changes(f)] == ["no_change", "codec_change"]


def test_no_sdp_and_offer_in_the_response():
    f = _call()
    re_inv = f.request("B", "INVITE")
    f.response(re_inv, 200, body=a_sdp(2, direction="sendonly"))
    f.ack(re_inv, body=b_sdp(2, direction="recvonly"))
    (rec,) = _changes(f)
    assert rec.intent == "no_sdp" and rec.offer_in == "response"
    assert rec.fields["response_offer_changes"] == ["hold"]


def test_target_refresh_intent_and_rejection():
    f = _call()
    moved = ("Contact: <sip:a@192.0.2.7:5080>",)
    _reinvite(f, headers=moved, status=488)
    f.wait(3)
    _reinvite(f, body=a_sdp(1), answer=b_sdp(1), headers=moved)
    f.wait(3)
    _reinvite(f, body=a_sdp(1), answer=b_sdp(1), headers=moved)
    recs = _changes(f)
    assert [r.intent for r in recs] == ["target_refresh", "target_refresh", "no_change"]
    assert recs[0].fields["target_refresh"] is True
    assert _names(f) == ["target_refresh_rejected"]


def test_target_refresh_taken_by_a_reliable_1xx_is_not_rejected():
    f = _call()
    re_inv = f.request("A", "INVITE", body=a_sdp(2), headers=["Contact: <sip:a@192.0.2.7>"])
    f.response(re_inv, 183, body=b_sdp(2), headers=REL)
    pr = f.request("A", "PRACK", headers=["RAck: 1 2 INVITE"])
    f.response(pr, 200)
    f.wait(1)
    f.response(re_inv, 500)
    f.hop_ack(re_inv)
    assert "target_refresh_rejected" not in _names(f)


def out_copies_first(f: Flow, start: int = 0) -> None:
    """Stamp proxy out-copies before their in-copies (another Kamailio worker was faster)."""
    for i, o in enumerate(f.obs[start:], start):
        if o.src_ip == "10.0.0.1" and i and f.obs[i - 1].dst_ip == "10.0.0.1":
            f.obs[i] = o.replace(ts_us=f.obs[i - 1].ts_us - 100)


@pytest.mark.parametrize("out_first", [False, True])
def test_nat_fixed_contact_in_the_out_copy_is_no_target_refresh(out_first: bool):
    f = _call()
    setup = len(f.obs)
    _reinvite(f, body=a_sdp(1), answer=b_sdp(1))
    for i, o in enumerate(f.obs):  # the proxy rewrote every Contact it forwarded
        if o.src_ip == "10.0.0.1":
            text = re.sub(
                r"Contact: <sip:(\w)@[^>]*>", r"Contact: <sip:\1@198.51.100.1>", o.payload.decode()
            )
            f.obs[i] = o.replace(payload=text.encode())
    if out_first:  # only the re-INVITE's copies: ev.msg is then the rewritten one
        out_copies_first(f, setup)
    assert [r.intent for r in _changes(f)] == ["no_change"]


@pytest.mark.parametrize(
    ("status", "klass"),
    [
        (488, "offer_rejected"),
        (491, "glare"),
        (500, "overlap"),
        (481, "dialog_lost"),
        (408, "timeout"),
        (405, "method_refused"),
        (501, "method_refused"),
        (487, "cancelled"),
        (403, "other_4xx"),
        (503, "other_5xx"),
        (603, "other_6xx"),
    ],
)
def test_status_classes(status: int, klass: str):
    assert status_class(status) == klass
    f = _call()
    up = f.request("A", "UPDATE", body=a_sdp(2))
    f.response(up, status)
    (rec,) = _changes(f)
    assert (rec.status, rec.status_class) == (status, klass)


def test_no_final_response_when_the_call_ends():
    f = _call()
    f.request("A", "INVITE", body=a_sdp(2))
    f.wait(40)
    (rec,) = _changes(f)
    assert (rec.status, rec.status_class, rec.time_to_final_ms) == (0, "no_final", None)


def test_proxy_generated_408_is_a_timeout_by_the_proxy():
    f = _call()
    re_inv = f.request("A", "INVITE", body=a_sdp(2))
    f.wait(32)
    f.response(re_inv, 408, proxy=True)
    (rec,) = _changes(f)
    assert rec.status_class == "timeout" and rec.fields["final_by_proxy"] is True


def test_inner_update_count():
    f = _call()
    re_inv = f.request("A", "INVITE")
    f.wait(0.2)
    for _ in range(2):
        up = f.request("B", "UPDATE")
        f.response(up, 200)
        f.wait(0.2)
    f.response(re_inv, 200, body=b_sdp(2))
    f.ack(re_inv, body=a_sdp(2))
    invite = next(r for r in _changes(f) if r.method == "INVITE")
    assert invite.fields["inner_update_count"] == 2


# -- fatal and non-fatal errors ------------------------------------------------------------


def test_dialog_continued_after_481():
    f = _call()
    _reinvite(f, body=a_sdp(2), status=481)
    f.wait(2)
    up = f.request("A", "UPDATE")
    f.response(up, 200)
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction) == (
        "dialog_continued_after_fatal",
        "low",
        "caller_to_callee",
    )
    assert a.fields["fatal_status"] == 481 and a.fields["continued_with"] == "UPDATE"


def test_uac_answering_2xx_after_a_proxy_408_continues_the_dialog():
    f = _call()
    re_inv = f.request("A", "INVITE", body=a_sdp(2))
    f.wait(32)
    f.response(re_inv, 408, proxy=True)
    f.wait(3)
    info = f.request("B", "INFO")
    f.response(info, 200)
    assert _names(f) == ["dialog_continued_after_fatal"]


def test_bye_after_fatal_error_is_right():
    f = _call()
    _reinvite(f, body=a_sdp(2), status=481)
    f.bye("A")
    assert _names(f) == []


def test_request_crossing_the_fatal_error_is_not_continuing():
    f = _call()
    re_inv = f.request("A", "INVITE", body=a_sdp(2))
    f.wait(0.1)
    f.response(re_inv, 481)
    f.wait(0.02)  # sent before the 481 could have reached A
    up = f.request("A", "UPDATE")
    f.response(up, 481)
    assert _names(f) == []


def test_dialog_ended_right_after_488():
    f = _call()
    _reinvite(f, body=a_sdp(2, codecs=("99",)), status=488)
    f.bye("A")
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity) == ("dialog_ended_after_nonfatal", "info")
    assert a.fields["error_status"] == 488 and a.fields["bye_by"] == "uac"


def test_bye_long_after_491_or_after_a_retry_is_no_reaction():
    f = _call()
    _reinvite(f, body=a_sdp(2), status=491)
    f.wait(30)
    f.bye("A")
    g = _call()
    _reinvite(g, body=a_sdp(2), status=491)
    _reinvite(g, body=a_sdp(2), answer=b_sdp(2))
    g.bye("A")
    assert _names(f) == [] and _names(g) == []


# -- RFC 6141 ------------------------------------------------------------------------------


def _executed_then_error(f: Flow, status: int = 500, rel: bool = True, pre: str = "") -> None:
    re_inv = f.request("A", "INVITE", body=a_sdp(2, extra_media=pre), headers=["Supported: 100rel"])
    f.wait(0.05)
    f.response(re_inv, 183, body=b_sdp(2, extra_media=pre), headers=REL if rel else [])
    if rel:
        pr = f.request("A", "PRACK", headers=["RAck: 1 2 INVITE"])
        f.response(pr, 200)
    f.wait(1)
    f.response(re_inv, status)
    f.hop_ack(re_inv)


def test_error_after_answer_in_reliable_1xx_then_no_resync():
    f = _call()
    _executed_then_error(f)
    f.wait(40)
    f.bye()
    names = _names(f)
    assert names == ["error_after_executed_change", "no_resync_after_error"]
    a = next(x for x in _anomalies(f) if x.anomaly == "error_after_executed_change")
    assert a.severity == "medium" and a.direction == "callee_to_caller" and a.status == 500
    invite, prack = _changes(f)[1], _changes(f)[0]
    assert (invite.method, invite.had_reliable_1xx, invite.status_class) == (
        "INVITE",
        True,
        "overlap",
    )
    assert (prack.method, prack.intent) == ("PRACK", "no_sdp")


def test_error_after_update_inside_the_reinvite_and_a_resync():
    f = _call()
    re_inv = f.request("A", "INVITE")
    f.wait(0.2)
    up = f.request("B", "UPDATE", body=b_sdp(2, direction="sendonly"))
    f.response(up, 200, body=a_sdp(2, direction="recvonly"))
    f.wait(0.5)
    f.response(re_inv, 488)
    f.hop_ack(re_inv)
    f.wait(2)
    _reinvite(f, body=a_sdp(3), answer=b_sdp(3))
    f.wait(40)
    assert _names(f) == ["error_after_executed_change"]


def test_unreliable_1xx_answer_executes_nothing():
    f = _call()
    _executed_then_error(f, status=488, rel=False)
    f.wait(40)
    assert _names(f) == []


def test_preconditions_answer_executes_nothing():
    pre = "a=curr:qos local none\r\na=des:qos mandatory local sendrecv\r\n"
    f = _call()
    _executed_then_error(f, pre=pre)
    f.wait(40)
    assert _names(f) == []


def test_capture_ending_before_the_resync_window_claims_nothing():
    f = _call()
    _executed_then_error(f)
    f.wait(5)
    assert _names(f) == ["error_after_executed_change"]


def test_contact_key_by_the_contact_text() -> None:
    from consumers.detectors.session_changes import contact_key
    from consumers.sip import parse_message

    def msg(*contacts: str) -> bytes:
        head = "".join(f"Contact: {c}\r\n" for c in contacts)
        return (
            "BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: 1\r\n"
            f"CSeq: 2 BYE\r\n{head}Content-Length: 0\r\n\r\n"
        ).encode()

    first = contact_key(parse_message(msg("<sip:alice@Host.example:5070;transport=udp>")))
    again = contact_key(parse_message(msg("<sip:alice@Host.example:5070;transport=udp>")))
    assert first is not None and first == again
    assert first[1] == "sip:alice@host.example:5070"
    assert contact_key(parse_message(msg("<sips:bob@h>")))[1] == "sips:bob@h:5061"  # type: ignore[index]
    two = contact_key(parse_message(msg("<sip:x@a>", "<sip:y@b>")))
    assert two is not None and two[1] == "sip:x@a:5060"
    assert contact_key(parse_message(msg())) is None
    assert contact_key(parse_message(msg("*"))) is None
