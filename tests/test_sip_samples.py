"""The session-modification sample messages (tests/sipsamples.py) parse with the fields the
dialog tracker and the detectors need."""

from __future__ import annotations

import pytest
import sipsamples as s

from consumers.sip import codecs, effective_direction, parse_message


@pytest.mark.parametrize("name", sorted(s.ALL))
def test_every_sample_is_well_formed(name: str) -> None:
    m = parse_message(s.ALL[name])
    assert not m.malformed, m.malformed_reasons
    assert m.call_id == s.CALL_ID
    assert m.from_tag == s.ALICE_TAG
    assert m.top_via_branch is not None and m.top_via_branch.startswith("z9hG4bK")
    if m.sdp is not None:
        assert not m.sdp.malformed, m.sdp.malformed_reasons


def test_initial_invite_with_offer() -> None:
    m = parse_message(s.INVITE)
    assert m.method == "INVITE" and m.to_tag is None  # initial INVITE: no To tag
    assert m.cseq is not None and (m.cseq.number, m.cseq.method) == (314159, "INVITE")
    assert [v.host for v in m.vias] == ["198.51.100.1", "192.0.2.10"]
    assert m.vias[1].received == "192.0.2.10" and m.vias[1].rport == 5060
    assert m.record_route[0].lr and m.record_route[0].uri.params["ftag"] == s.ALICE_TAG
    assert m.contact[0].uri.host_port == "192.0.2.10:5060" and m.contact[0].expires == 3600
    assert m.allow is not None and "UPDATE" in m.allow and "PRACK" in m.allow
    assert m.supported == frozenset({"100rel", "timer", "replaces"})
    assert m.session_expires is not None and (
        m.session_expires.delta,
        m.session_expires.refresher,
    ) == (1800, "uac")
    assert m.min_se == 90 and m.max_forwards == 69
    assert m.user_agent == "ExamplePhone/5.2.1 (build 1142)"
    assert m.x_cid == "b2bua-aleg-7781@192.0.2.10"
    assert m.sdp is not None and m.sdp.origin is not None and m.sdp.origin.version == 1
    audio = m.sdp.media[0]
    assert effective_direction(audio) == "sendrecv" and codecs(audio) == [
        "PCMU",
        "PCMA",
        "telephone-event",
    ]


def test_200_ok_answer() -> None:
    m = parse_message(s.OK_200)
    assert m.status_code == 200 and m.to_tag == s.BOB_TAG
    assert m.allow == frozenset({"INVITE", "ACK", "CANCEL", "BYE", "UPDATE"})
    assert m.require == frozenset({"timer"})
    assert m.session_expires is not None and m.session_expires.refresher == "uac"
    assert m.server == "ExampleGW/1.0"
    assert m.sdp is not None and codecs(m.sdp.media[0]) == ["PCMU", "telephone-event"]


def test_183_reliable_provisional() -> None:
    m = parse_message(s.SESSION_PROGRESS_183)
    assert m.status_code == 183 and m.rseq == 813520
    assert m.require == frozenset({"100rel"})
    assert m.sdp is not None


def test_prack() -> None:
    m = parse_message(s.PRACK)
    assert m.method == "PRACK" and m.rack is not None
    assert (m.rack.rseq, m.rack.cseq, m.rack.method) == (813520, 314159, "INVITE")
    assert m.route[0].lr and m.sdp is None


def test_reinvite_hold() -> None:
    m = parse_message(s.REINVITE_HOLD)
    assert m.method == "INVITE" and m.to_tag == s.BOB_TAG  # in-dialog
    assert m.top_via is not None and m.top_via.has_rport and m.top_via.rport is None
    assert m.sdp is not None and m.sdp.origin is not None and m.sdp.origin.version == 2
    assert effective_direction(m.sdp.media[0]) == "sendonly"


def test_reinvite_legacy_hold() -> None:
    m = parse_message(s.REINVITE_LEGACY_HOLD)
    assert m.sdp is not None and m.sdp.media[0].legacy_hold


def test_update_refresh_without_sdp() -> None:
    m = parse_message(s.UPDATE)
    assert m.method == "UPDATE" and m.top_via is not None and m.top_via.transport == "TCP"
    assert m.session_expires is not None and m.session_expires.refresher == "uas"  # compact x
    assert m.sdp is None and m.content_length == 0 and m.body == b""


def test_422_carries_min_se() -> None:
    m = parse_message(s.RESPONSE_422)
    assert m.status_code == 422 and m.min_se == 1800


def test_491_retry_after_and_reason() -> None:
    m = parse_message(s.RESPONSE_491)
    assert m.status_code == 491 and m.reason_phrase == "Request Pending"
    assert m.retry_after is not None
    assert (m.retry_after.seconds, m.retry_after.comment, m.retry_after.duration) == (
        3,
        "glare",
        60,
    )
    assert [(r.protocol, r.cause) for r in m.reason] == [("SIP", 491), ("Q.850", 16)]


def test_405_allow_without_update() -> None:
    m = parse_message(s.RESPONSE_405)
    assert m.status_code == 405 and m.cseq is not None and m.cseq.method == "UPDATE"
    assert m.allow == frozenset({"INVITE", "ACK", "CANCEL", "BYE"}) and "UPDATE" not in m.allow
    assert m.warning[0].code == 399


def test_500_retry_after() -> None:
    m = parse_message(s.RESPONSE_500_RETRY)
    assert m.status_code == 500 and m.retry_after is not None and m.retry_after.seconds == 5


def test_raw_is_kept() -> None:
    for data in s.ALL.values():
        assert parse_message(data).raw is data
