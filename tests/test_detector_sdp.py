"""C.11: SDP-level violations (and hold_legacy_0000); SDP events only as session-change intents."""

from __future__ import annotations

import pytest
from sipflow import Flow, Sent, sdp

from consumers.detectors.sdp_changes import SdpChangeDetector
from consumers.detectors.session_changes import SessionChangeDetector
from consumers.engine import Engine, EngineConfig
from consumers.records import AnomalyRecord, Record, SessionChangeRecord

A_IP = "10.0.0.2"
B_IP = "10.0.0.3"
PROXY_IP = "10.0.0.1"
REL = ["Require: 100rel", "RSeq: 1"]
VIDEO = "m=video 42000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"


def a_sdp(version: int, **kw: object) -> str:
    return sdp(version=version, addr=A_IP, **kw)  # type: ignore[arg-type]


def b_sdp(version: int, **kw: object) -> str:
    return sdp(version=version, addr=B_IP, session_id="2002", **kw)  # type: ignore[arg-type]


def _records(flow: Flow) -> list[Record]:
    dets = [SessionChangeDetector(), SdpChangeDetector()]
    return flow.engine_records(Engine(EngineConfig(), detectors=dets))  # type: ignore[arg-type]


def _anomalies(flow: Flow) -> list[AnomalyRecord]:
    return [r for r in _records(flow) if isinstance(r, AnomalyRecord)]


def _names(flow: Flow) -> list[str]:
    return sorted(a.anomaly for a in _anomalies(flow))


def _intents(flow: Flow) -> list[str]:
    return [r.intent for r in _records(flow) if isinstance(r, SessionChangeRecord)]


def _call(offer: str | None = None, answer: str | None = None) -> Flow:
    f = Flow()
    f.setup(offer=offer or a_sdp(1), answer=answer or b_sdp(1))
    f.wait(2)
    return f


def _reinvite(f: Flow, body: str, answer: str, sender: str = "A", status: int = 200) -> Sent:
    re_inv = f.request(sender, "INVITE", body=body)
    f.wait(0.05)
    f.response(re_inv, status, body=answer if status < 300 else "")
    if status < 300:
        f.ack(re_inv)
    else:
        f.hop_ack(re_inv)
    f.wait(1)
    return re_inv


def _rewrite_out(f: Flow, start: int, old: str, new: str) -> None:
    """The proxy's out-copies from index `start` on carry a rewritten SDP (rtpengine)."""
    for i, o in enumerate(f.obs[start:], start):
        if o.src_ip != PROXY_IP:
            continue
        head, sep, body = o.payload.decode().partition("\r\n\r\n")
        if old not in body:
            continue
        body = body.replace(old, new)
        head = "\r\n".join(
            f"Content-Length: {len(body)}" if h.startswith("Content-Length:") else h
            for h in head.split("\r\n")
        )
        f.obs[i] = o.replace(payload=(head + sep + body).encode())


def _out_first(f: Flow, start: int) -> None:
    for i, o in enumerate(f.obs[start:], start):
        if o.src_ip == PROXY_IP and f.obs[i - 1].dst_ip == PROXY_IP:
            f.obs[i] = o.replace(ts_us=f.obs[i - 1].ts_us - 100)


# -- events are intents, not anomalies -----------------------------------------------------


@pytest.mark.parametrize(
    ("held", "answer"),
    [("sendonly", "recvonly"), ("inactive", "inactive")],
)
def test_clean_hold_and_resume(held: str, answer: str):
    f = _call()
    _reinvite(f, a_sdp(2, direction=held), b_sdp(2, direction=answer))
    f.wait(30)
    _reinvite(f, a_sdp(3), b_sdp(3))
    f.bye()
    assert _names(f) == []
    assert _intents(f) == ["hold", "resume"]


def test_session_level_direction_is_overridden_by_media_level():
    def session_level(version: int, media_dir: str | None) -> str:
        text = a_sdp(version, direction=media_dir)
        return text.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")

    f = _call()
    _reinvite(f, session_level(2, "sendrecv"), b_sdp(2))  # media-level sendrecv wins
    _reinvite(f, session_level(3, None), b_sdp(3, direction="recvonly"))  # session-level hold
    assert _intents(f) == ["no_change", "hold"]
    assert _names(f) == []


def test_legacy_hold_with_0000():
    f = _call()
    _reinvite(f, a_sdp(2).replace(f"c=IN IP4 {A_IP}", "c=IN IP4 0.0.0.0"), b_sdp(2))
    f.wait(10)
    _reinvite(f, a_sdp(3), b_sdp(3))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.family) == ("hold_legacy_0000", "low", "C.11")
    assert a.fields["media_index"] == 0 and a.fields["conn_addr_after"] == "0.0.0.0"
    assert a.fields["conn_addr_before"] == A_IP
    assert _intents(f) == ["hold", "resume"]


def test_0000_for_a_stream_not_accepted_yet_is_no_hold():
    # RFC 6141 Figure 3 style: the answerer parks a new video stream on 0.0.0.0 first.
    parked = "m=video 43000 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n"
    live = "m=video 43000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    f = _call()
    _reinvite(f, a_sdp(2, extra_media=VIDEO), b_sdp(2, extra_media=parked))
    f.wait(3)
    up = f.request("B", "UPDATE", body=b_sdp(3, extra_media=live))
    f.response(up, 200, body=a_sdp(3, extra_media=VIDEO))
    assert _names(f) == []
    assert _intents(f) == ["add_stream", "address_change"]


def test_0000_on_a_new_offered_stream_or_a_held_one_is_no_new_legacy_hold():
    parked = "m=video 42000 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n"
    held = a_sdp(2).replace(f"c=IN IP4 {A_IP}", "c=IN IP4 0.0.0.0")
    f = _call()
    _reinvite(f, a_sdp(2, extra_media=parked), b_sdp(2, extra_media=VIDEO))
    g = _call()
    _reinvite(g, held, b_sdp(2))
    _reinvite(g, held.replace(" 2 IN IP4", " 3 IN IP4"), b_sdp(3))  # still held: same fact
    assert _names(f) == []
    assert _names(g) == ["hold_legacy_0000"]


def test_0000_in_the_initial_offer_is_no_hold():
    f = _call(offer=a_sdp(1).replace(f"c=IN IP4 {A_IP}", "c=IN IP4 0.0.0.0"))
    _reinvite(f, a_sdp(2), b_sdp(2))
    assert _names(f) == []


# -- o= line -------------------------------------------------------------------------------


def test_changed_sdp_with_the_same_version():
    f = _call()
    _reinvite(f, a_sdp(1, direction="sendonly"), b_sdp(2, direction="recvonly"))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction) == (
        "sdp_version_not_incremented",
        "medium",
        "caller_to_callee",
    )
    assert a.fields["differs_in"] == ["directions"]
    assert (a.fields["o_version_before"], a.fields["o_version_after"]) == (1, 1)


def test_identical_sdp_with_the_same_version_is_a_legal_refresh():
    f = _call()
    for _ in range(3):
        _reinvite(f, a_sdp(1), b_sdp(1))
        f.wait(900)
    assert _names(f) == []
    assert _intents(f) == ["no_change"] * 3


def test_version_jump():
    f = _call()
    _reinvite(f, a_sdp(3, direction="sendonly"), b_sdp(2, direction="recvonly"))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.fields["increment"]) == ("sdp_version_jump", "low", 2)


def test_version_after_a_rejected_offer_may_count_from_either():
    f = _call()
    _reinvite(f, a_sdp(2, codecs=("99",)), "", status=488)
    _reinvite(f, a_sdp(3, codecs=("8",)), b_sdp(2, codecs=("8",)))  # +1 from the rejected one
    g = _call()
    _reinvite(g, a_sdp(2, codecs=("99",)), "", status=488)
    _reinvite(g, a_sdp(2, codecs=("8",)), b_sdp(2, codecs=("8",)))  # +1 from the session
    assert _names(f) == [] and _names(g) == []


def test_origin_changed():
    f = _call()
    _reinvite(f, sdp(version=2, addr=A_IP, session_id="777"), b_sdp(2))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity) == ("sdp_origin_changed", "medium")
    assert a.fields["origin_before"] == ["user", "1001"]
    assert a.fields["origin_after"] == ["user", "777"]


def test_early_media_preview_is_not_compared():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, body=a_sdp(1))
    f.wait(0.05)
    f.response(inv, 183, body=sdp(version=5, addr="10.9.9.9", user="ms", session_id="1"))
    f.wait(3)
    f.response(inv, 200, body=b_sdp(1))
    inv.to_tag = "b1"
    f.ack(inv)
    f.wait(2)
    _reinvite(f, a_sdp(2), b_sdp(2))
    assert _names(f) == []


# -- m= lines and payload types ------------------------------------------------------------


def test_offer_with_fewer_mlines():
    f = _call(offer=a_sdp(1, extra_media=VIDEO), answer=b_sdp(1, extra_media=VIDEO))
    _reinvite(f, a_sdp(2), b_sdp(2))
    names = _names(f)
    assert "mline_count_decreased" in names
    a = next(x for x in _anomalies(f) if x.anomaly == "mline_count_decreased")
    assert a.severity == "medium" and a.fields["context"] == "offer"
    assert (a.fields["mlines_before"], a.fields["mlines_after"]) == (2, 1)


def test_answer_with_fewer_mlines_than_its_offer():
    f = _call()
    _reinvite(f, a_sdp(2, extra_media=VIDEO), b_sdp(2))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.direction, a.fields["context"]) == (
        "mline_count_decreased",
        "callee_to_caller",
        "answer",
    )


def test_removed_stream_keeps_its_slot():
    f = _call(offer=a_sdp(1, extra_media=VIDEO), answer=b_sdp(1, extra_media=VIDEO))
    gone = "m=video 0 RTP/AVP 96\r\n"
    _reinvite(f, a_sdp(2, extra_media=gone), b_sdp(2, extra_media=gone))
    assert _names(f) == []


def test_dynamic_payload_type_remapped():
    f = _call(
        offer=a_sdp(1, codecs=("0", "101"), rtpmap=("101 telephone-event/8000",)),
        answer=b_sdp(1, codecs=("0", "101"), rtpmap=("101 telephone-event/8000",)),
    )
    _reinvite(
        f,
        a_sdp(2, codecs=("0", "101"), rtpmap=("101 opus/48000",)),
        b_sdp(2, codecs=("0",)),
    )
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.fields["payload_type"]) == ("pt_remapped", "medium", 101)
    assert (a.fields["codec_before"], a.fields["codec_after"]) == (
        "TELEPHONE-EVENT/8000",
        "OPUS/48000",
    )


def test_slot_reused_for_another_media_type_may_rebind():
    video = "m=video 42000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    text = "m=text 0 RTP/AVP 96\r\n"
    text_live = "m=text 44000 RTP/AVP 96\r\na=rtpmap:96 t140/1000\r\n"
    f = _call(offer=a_sdp(1, extra_media=video), answer=b_sdp(1, extra_media=video))
    _reinvite(f, a_sdp(2, extra_media=text), b_sdp(2, extra_media=text))
    _reinvite(f, a_sdp(3, extra_media=text_live), b_sdp(3, extra_media=text_live))
    assert _names(f) == []


# -- answers -------------------------------------------------------------------------------


def test_sendonly_answered_with_inactive():
    f = _call()
    _reinvite(f, a_sdp(2, direction="sendonly"), b_sdp(2, direction="inactive"))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.direction) == (
        "held_answered_with_held",
        "low",
        "callee_to_caller",
    )
    assert a.fields["answerer_direction_before"] == "sendrecv"
    assert (a.fields["direction_before"], a.fields["direction_after"]) == ("sendonly", "inactive")


def test_answerer_on_hold_itself_may_answer_inactive():
    f = _call()
    _reinvite(f, b_sdp(2, direction="sendonly"), a_sdp(2, direction="recvonly"), sender="B")
    _reinvite(f, b_sdp(3, direction="inactive"), a_sdp(3, direction="inactive"), sender="B")
    _reinvite(f, a_sdp(4, direction="sendonly"), b_sdp(4, direction="inactive"))
    assert _names(f) == []


def test_answer_codec_not_in_offer():
    f = _call()
    _reinvite(f, a_sdp(2, codecs=("0", "8")), b_sdp(2, codecs=("18",)))
    (a,) = _anomalies(f)
    assert (a.anomaly, a.severity, a.fields["codecs_not_offered"]) == (
        "answer_codec_not_in_offer",
        "medium",
        ["G729"],
    )
    assert a.fields["codecs_before"] == ["PCMU", "PCMA"]
    assert len(a.evidence) == 2


@pytest.mark.parametrize("out_first", [False, True])
def test_offer_rewritten_by_the_proxy_is_compared_as_received(out_first: bool):
    # A transcoding rtpengine offers G.729 to B and answers A with PCMA: both sides are legal.
    f = _call()
    start = len(f.obs)
    _reinvite(f, a_sdp(2, codecs=("0", "8")), b_sdp(2, codecs=("18",)))
    _rewrite_out(f, start, "RTP/AVP 18\r\n", "RTP/AVP 8\r\n")  # the answer toward A
    _rewrite_out(f, start, "RTP/AVP 0 8\r\n", "RTP/AVP 18\r\n")  # the offer toward B
    if out_first:
        _out_first(f, start)
    assert _names(f) == []


@pytest.mark.parametrize("out_first", [False, True])
def test_answer_with_a_codec_the_proxy_removed_is_flagged(out_first: bool):
    f = _call()
    start = len(f.obs)
    _reinvite(f, a_sdp(2, codecs=("0", "18")), b_sdp(2, codecs=("18",)))
    _rewrite_out(f, start, "RTP/AVP 0 18\r\n", "RTP/AVP 0\r\n")
    if out_first:
        _out_first(f, start)
    assert _names(f) == ["answer_codec_not_in_offer"]


def test_bare_dynamic_number_listed_in_the_offer_counts_as_offered():
    f = _call()
    offer = a_sdp(2, codecs=("0", "101"), rtpmap=("101 telephone-event/8000",))
    _reinvite(f, offer, b_sdp(2, codecs=("0", "101")))
    assert _names(f) == []


# -- where SDP travels ---------------------------------------------------------------------


def test_multipart_body():
    boundary = "xyz"

    def multipart(text: str) -> str:
        return (
            f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{text}"
            f"--{boundary}\r\nContent-Type: application/isup;version=itu-t92+\r\n"
            f"Content-Disposition: signal;handling=optional\r\n\r\nxx\r\n--{boundary}--\r\n"
        )

    f = _call()
    re_inv = f.request(
        "A",
        "INVITE",
        body=multipart(a_sdp(1, direction="sendonly")),
        content_type=f"multipart/mixed;boundary={boundary}",
    )
    f.response(re_inv, 200, body=b_sdp(2, direction="recvonly"))
    f.ack(re_inv)
    assert _names(f) == ["sdp_version_not_incremented"]
    assert _intents(f) == ["hold"]


def test_sdp_in_prack_update_and_ack():
    f = Flow()
    inv = f.request("A", "INVITE", in_dialog=False, headers=["Supported: 100rel"])
    f.wait(0.05)
    f.response(inv, 183, body=b_sdp(1), headers=REL)  # the offer in a reliable 1xx
    pr = f.request("A", "PRACK", body=a_sdp(1), headers=["RAck: 1 1 INVITE"])  # the answer
    f.response(pr, 200)
    f.wait(0.5)
    up = f.request("A", "UPDATE", body=a_sdp(2, codecs=("8",)))
    f.response(up, 200, body=b_sdp(2, codecs=("8",)))
    f.wait(0.5)
    f.response(inv, 200)
    inv.to_tag = "b1"
    f.ack(inv)
    f.wait(2)
    late = f.request("B", "INVITE")  # offer in the 2xx, answer in the ACK
    f.response(late, 200, body=a_sdp(3, codecs=("8",)))
    f.ack(late, body=b_sdp(3, codecs=("8", "0")))
    assert _names(f) == ["answer_codec_not_in_offer"]  # the ACK's answer added PCMU
    assert _intents(f) == ["initial", "codec_change", "no_sdp"]


def test_preconditions_inactive_is_no_hold():
    pre = "a=curr:qos local none\r\na=des:qos mandatory local sendrecv\r\n"
    met = "a=curr:qos local sendrecv\r\na=des:qos mandatory local sendrecv\r\n"
    f = Flow()
    inv = f.request(
        "A", "INVITE", in_dialog=False, body=a_sdp(1, direction="inactive", extra_media=pre)
    )
    f.response(inv, 183, body=b_sdp(1, direction="inactive", extra_media=pre), headers=REL)
    pr = f.request("A", "PRACK", headers=["RAck: 1 1 INVITE"])
    f.response(pr, 200)
    up = f.request("A", "UPDATE", body=a_sdp(2, extra_media=met))
    f.response(up, 200, body=b_sdp(2, extra_media=met))
    f.wait(1)
    f.response(inv, 200)
    inv.to_tag = "b1"
    f.ack(inv)
    f.wait(2)
    _reinvite(f, a_sdp(3, direction="inactive", extra_media=pre), b_sdp(3, direction="inactive"))
    assert _names(f) == []
    assert _intents(f) == ["no_sdp", "preconditions", "preconditions"]


def test_glare_offers_keep_their_own_answers():
    f = _call()
    ra = f.request("A", "INVITE", body=a_sdp(2, codecs=("8",)))
    f.wait(0.01)
    rb = f.request("B", "INVITE", body=b_sdp(2, codecs=("18",)))
    f.wait(0.01)
    f.response(ra, 491)
    f.hop_ack(ra)
    f.response(rb, 200, body=a_sdp(3, codecs=("18",)))  # A accepts B's offer after all
    f.ack(rb)
    assert _names(f) == []


def test_digest_ignores_the_origin_line_and_whitespace_only() -> None:
    from consumers.detectors.sdp_changes import _digest

    base = b"v=0\r\no=a 1 1 IN IP4 x\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    same = [
        base.replace(b"o=a 1 1", b"o=a 1 2"),  # another version
        base.replace(b"\r\n", b"\n"),
        base.replace(b"s=-\r\n", b"  s=- \t\r\n\r\n"),
        base.replace(b"o=a 1 1 IN IP4 x\r\n", b""),
        b"o=z 9 9 IN IP4 y\r\n" + base + b"o=again\r\n",
    ]
    for other in same:
        assert _digest(other) == _digest(base), other
    for other in (base.replace(b"1.2.3.4", b"1.2.3.5"), base + b"a=sendonly\r\n", b""):
        assert _digest(other) != _digest(base), other


def test_facts_remembered_per_bytes_are_the_facts_of_those_bytes() -> None:
    """A description's facts are built once per bytes; a message whose body is not a
    session description (another disposition) gets none even when the same bytes were."""
    from consumers.detectors.sdp_changes import _FACTS, facts_of
    from consumers.sip import parse_message

    body = a_sdp(1, direction="sendonly").encode()

    def msg(extra: str = "", payload: bytes = body) -> bytes:
        return (
            b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n"
            b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCSeq: 1 INVITE\r\n"
            + extra.encode()
            + b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )

    _FACTS.clear()
    first = facts_of(parse_message(msg()))
    assert first is not None and first.directions == ("sendonly",)
    again = facts_of(parse_message(msg("Max-Forwards: 69\r\n")))
    assert again is first
    assert facts_of(parse_message(msg("Content-Disposition: render\r\n"))) is None
    other = facts_of(parse_message(msg(payload=body.replace(b"sendonly", b"inactive"))))
    assert other is not None and other.directions == ("inactive",)
    _FACTS.clear()
    fresh = facts_of(parse_message(msg()))
    assert fresh is not None and fresh is not first
    assert _values(fresh) == _values(first)


def test_remembered_codec_pairs_give_what_the_lists_give() -> None:
    """_negotiated and _not_offered are remembered per pair of codec lists: on random
    descriptions (removed streams, aux codecs, bare dynamic numbers, case) the remembered
    answer is the computed one."""
    import random

    from consumers.detectors import sdp_changes as sc

    rng = random.Random(11)
    names = ["PCMU", "PCMA", "G722", "OPUS", "TELEPHONE-EVENT", "CN", "101", "96"]

    def facts() -> sc.SdpFacts:
        f = sc.SdpFacts()
        n = rng.randint(1, 3)
        f.ports = tuple(
            rng.choice((0, 4000, 4002)) if rng.random() < 0.2 else 4000 for _ in range(n)
        )
        f.codecs = tuple(tuple(rng.sample(names, rng.randint(1, 4))) for _ in range(n))
        f.formats = tuple(
            tuple(c.lower() if c.isdigit() else str(i) for i, c in enumerate(cs)) for cs in f.codecs
        )
        return f

    sc._NEGOTIATED.clear()
    sc._NOT_OFFERED.clear()
    for _ in range(3000):
        offer, answer = facts(), facts()
        for _ in range(2):  # computed, then remembered
            assert sc._negotiated(offer, answer) == sc._negotiate(offer, answer)
            assert sc._not_offered(offer, answer) == sc._find_not_offered(offer, answer)
    assert sc._NEGOTIATED and sc._NOT_OFFERED


def test_remembered_codec_part_is_the_m_line_s() -> None:
    """An m= line's codec names, formats and dynamic bindings, remembered per format list
    and rtpmap entries, are those of the line on random descriptions, also after the
    parser's and the ledger's tables are emptied, and read again from the recent table."""
    import random

    from consumers.sip import codecs, parse_sdp
    from consumers.sip.memo import clear_all
    from consumers.sip.sdp import Media
    from consumers.tracking import sdpsummary

    rng = random.Random(3)
    encodings = ["PCMU", "pcma", "opus", "telephone-event", "G729", "AMR-WB", "CN"]

    def fresh(m: Media) -> tuple[object, ...]:
        dynamic = sorted(
            (pt, f"{rm.encoding.upper()}/{rm.clock_rate or ''}")
            for pt, rm in m.rtpmap.items()
            if pt.isdigit() and len(pt) <= 3 and 96 <= int(pt) <= 127
        )
        names = tuple(codecs(m))
        return (names, tuple(c.upper() for c in names), tuple(m.formats), tuple(dynamic))

    seen = 0
    for n in range(4000):
        if n % 500 == 0:
            clear_all()
            sdpsummary._CODEC_PARTS.clear()
        fmts = rng.sample(["0", "8", "9", "18", "96", "97", "101", "126", "127", "13"], 3)
        lines = [f"m=audio 4000 RTP/AVP {' '.join(fmts)}"]
        for f in fmts:
            if rng.random() < 0.6:
                rate = rng.choice(["8000", "16000", "48000/2"])
                lines.append(
                    f"a=rtpmap:{rng.choice([f, '96', '101'])} {rng.choice(encodings)}/{rate}"
                )
        body = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\n" + "\r\n".join(lines)
        for m in parse_sdp(body.encode()).media:
            part = sdpsummary.codec_part(m)
            assert part[:4] == fresh(m), body
            # read again (the ledger after the tracker): the part just made, by identity
            assert sdpsummary._RECENT[id(m)] == (m, part)
            assert sdpsummary.codec_part(m) is part
            seen += 1
    assert seen == 4000 and sdpsummary._CODEC_PARTS


def test_facts_from_the_trackers_summary_are_the_facts_read_from_the_sdp() -> None:
    """The ledger's facts built with the tracker's summary of the same description equal
    those read from the description alone (hold, 0.0.0.0, removed and added streams)."""
    from consumers.detectors import sdp_changes as sc
    from consumers.sip import parse_sdp
    from consumers.tracking.sdpsummary import summarize

    bodies = [
        sdp(version=1).encode(),
        sdp(version=2, direction="sendonly").encode(),
        sdp(version=3, addr="0.0.0.0").encode(),
        sdp(
            version=4, extra_media="m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        ).encode(),
        sdp(version=5, port=0, direction=None).encode(),
        b"v=0\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=curr:qos local none\r\n",
    ]
    for raw in bodies:
        parsed = parse_sdp(raw)
        a, b = sc._facts(parsed, raw), sc._facts(parsed, raw, summarize(parsed))
        assert a is not None and b is not None
        assert _values(a) == _values(b), raw


def _values(obj: object) -> dict[str, object]:
    """An object's attributes by name (a compiled class lists them in __mypyc_attrs__)."""
    names = getattr(type(obj), "__mypyc_attrs__", None) or type(obj).__slots__  # type: ignore[attr-defined]
    return {n: getattr(obj, n) for n in names}
