"""Tests of the end-to-end kit itself: real Kamailio and SIPp, HEP caught by `HepSink`.

For every scenario under `tests/e2e/scenarios/`, the capture must hold exactly what SIPp's
message logs say went on the wire: on loopback the proxy receives every message a SIPp side
sent (one in-copy, sender -> proxy) and sends every message a SIPp side received (one
out-copy, proxy -> that side), byte for byte, each mirrored once as HEPv3 from Kamailio's
SIP socket. The pcap `HepSink` writes must read back through `collector.replay` as the same
packets with the same times. The scenario files themselves (pairs, anomaly lists) are checked
without Kamailio.

The analyzer's own end-to-end tests (expected anomalies per scenario) build on the same
harness; these only prove the kit produces the traffic it claims.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import (
    PROXY_PORT,
    SCENARIO_DIR,
    UAC_PORT,
    UAS_PORT,
    HepDatagram,
    HepSink,
    KamailioProxy,
    ScenarioResult,
    expected_anomalies,
    group_members,
    run_and_capture,
    run_scenario,
    running_kit,
    scenario_names,
    skip_reason,
    udp_port_free,
    write_pcap,
)

from collector.hep.fast import decode
from collector.hep.model import PROTO_SIP
from collector.replay import iter_hep_packets

pytestmark = pytest.mark.e2e

# The anomaly names of PROTOCOL.md C (plus the names the kit's scenarios use for C.3, C.6,
# C.7), so a typo in a .anomalies file fails here rather than in the analyzer's tests.
CATALOGUE = frozenset(
    {
        "glare_491",
        "glare_retry_too_early",
        "glare_retry_late",
        "glare_no_retry",
        "glare_repeat",
        "spurious_491",
        "overlapping_invite",
        "overlap_500_without_retry_after",
        "overlap_not_500",
        "retry_after_violated",
        "reinvite_in_early_dialog",
        "update_despite_allow",
        "update_without_allow_info",
        "405_update_allow_said_no",
        "405_update_allow_said_yes",
        "405_update_no_info",
        "405_missing_allow",
        "no_fallback_refresh",
        "early_update_481",
        "reinvite_481",
        "update_481",
        "bye_481",
        "missing_ack",
        "refresh_missed",
        "session_expired_bye",
        "refresh_late",
        "refresh_by_non_refresher",
        "refresher_table_violation",
        "se_header_violation",
        "refresher_flapping",
        "reinvite_refresh_preferred_update",
        "refresh_with_changed_sdp_version",
        "422_retry_without_min_se",
        "422_retry_se_below_min_se",
        "422_loop",
        "422_to_non_timer_request",
        "422_missing_min_se",
        "422_retry_cseq",
        "dialog_continued_after_fatal",
        "dialog_ended_after_nonfatal",
        "error_after_executed_change",
        "no_resync_after_error",
        "target_refresh_rejected",
        "sdp_version_not_incremented",
        "sdp_version_jump",
        "sdp_origin_changed",
        "mline_count_decreased",
        "pt_remapped",
        "held_answered_with_held",
        "answer_codec_not_in_offer",
        "prack_481",
        "rseq_gap",
        "2xx_before_prack_of_sdp_1xx",
        "second_reliable_1xx_before_prack",
        "update_offer_before_prack",
        "reliable_1xx_without_supported",
        "cseq_regression",
        "in_dialog_request_after_bye",
        "unknown_dialog_request",
        "multiple_2xx_forked",
        "early_bye_by_callee",
        "proxy_not_in_route_set",
    }
)

SCENARIOS = scenario_names()
LOOPBACK = socket.inet_aton("127.0.0.1")


# --- scenario files (no Kamailio needed) ---------------------------------------------------------


def test_every_scenario_is_complete() -> None:
    assert len(SCENARIOS) >= 17
    for path in SCENARIO_DIR.glob("*.xml"):
        stem = path.name.rsplit("_", 1)[0]
        assert stem in SCENARIOS, f"{path.name} has no partner"
    for name in SCENARIOS:
        assert (SCENARIO_DIR / f"{name}.anomalies").is_file(), name


@pytest.mark.parametrize("name", SCENARIOS)
def test_anomaly_names_come_from_the_catalogue(name: str) -> None:
    expected = expected_anomalies(name)
    assert set(expected) <= CATALOGUE, f"{name}: unknown {set(expected) - CATALOGUE}"
    text = (SCENARIO_DIR / f"{name}.anomalies").read_text()
    assert "PROTOCOL.md" in text, f"{name}: say which catalogue section the lines come from"


def test_clean_and_faulty_flows() -> None:
    clean = {n for n in SCENARIOS if not expected_anomalies(n)}
    assert {
        "basic-call",
        "reinvite-hold",
        "update-confirmed",
        "update-early-prack",
        "session-timer-422",
        "reinvite-488",
    } <= clean
    assert expected_anomalies("glare-crossing") == Counter({"glare_491": 2})
    assert expected_anomalies("reinvite-491") == Counter({"spurious_491": 1})
    assert expected_anomalies("missing-ack") == Counter({"missing_ack": 1})


def test_pcap_round_trip_without_kamailio(tmp_path: Path) -> None:
    from collector.hep.fast import encode_v3
    from collector.hep.model import HepPacket

    grams = []
    for n in range(3):
        pkt = HepPacket(
            version=3,
            src_ip=LOOPBACK,
            dst_ip=LOOPBACK,
            src_port=5060 + n,
            dst_port=5070,
            ts_sec=1_700_000_000,
            ts_usec=n,
            capture_id=7,
            payload=b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nCall-ID: c%d\r\n\r\n" % n,
        )
        grams.append(HepDatagram(1_700_000_000.25 + n / 1000, ("127.0.0.1", 15060), encode_v3(pkt)))
    path = write_pcap(tmp_path / "x.pcap", grams, ("127.0.0.1", 19060))
    back = list(iter_hep_packets(path))
    assert [b for _, b in back] == [g.data for g in grams]
    assert all(abs(t - g.received) < 2e-6 for (t, _), g in zip(back, grams, strict=True))


# --- real Kamailio and SIPp ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HepSink, KamailioProxy]]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_kit(tmp_path_factory.mktemp("kamailio")) as kit:
        yield kit


def _expected_wire(result: ScenarioResult) -> Counter[tuple[int, int, bytes]]:
    """(src port, dst port, SIP bytes) the proxy's mirror must hold, from SIPp's logs."""
    proxy = result.ports["proxy"]
    out: Counter[tuple[int, int, bytes]] = Counter()
    for m in result.messages():
        side = result.ports[m.side]
        out[(side, proxy, m.data) if m.sent else (proxy, side, m.data)] += 1
    return out


def _check_capture(result: ScenarioResult, grams: list[HepDatagram], proxy: KamailioProxy) -> None:
    assert grams, "nothing mirrored"
    got: Counter[tuple[int, int, bytes]] = Counter()
    for d in grams:
        assert d.sender == proxy.address, "HEP comes from Kamailio's SIP socket"
        hep = decode(d.data)
        assert hep.version == 3
        assert hep.capture_id == proxy.capture_id
        assert hep.proto_type == PROTO_SIP
        assert (hep.src_ip, hep.dst_ip) == (LOOPBACK, LOOPBACK)
        stamp = hep.ts_sec + hep.ts_usec / 1e6
        assert result.started - 1 <= stamp <= result.started + result.elapsed + 1
        cid = hep.payload.split(b"\r\nCall-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        assert [cid] == result.call_ids, "one call per scenario, nothing else in the capture"
        got[(hep.src_port, hep.dst_port, hep.payload)] += 1
    expected = _expected_wire(result)
    missing = _summary(expected - got)
    extra = _summary(got - expected)
    assert not missing and not extra, f"missing {missing}, extra {extra}"


def _summary(wire: Counter[tuple[int, int, bytes]]) -> list[str]:
    out = []
    for src, dst, payload in wire.elements():
        first = payload.split(b"\r\n", 1)[0].decode("latin-1")
        out.append(f"{src}->{dst} {first}")
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_mirror_and_pcap(
    name: str, kit: tuple[HepSink, KamailioProxy], tmp_path: Path
) -> None:
    sink, proxy = kit
    mark = len(sink)
    result = run_scenario(name, proxy, run_dir=tmp_path / "sipp")
    assert result.uac_rc == 0 and result.uas_rc == 0
    assert result.call_ids and result.call_ids[0].startswith(f"e2e-{name}-")
    sink.wait_quiet(0.5, timeout=10)
    grams = sink.datagrams(mark)
    _check_capture(result, grams, proxy)

    pcap = sink.write_pcap(tmp_path / f"{name}.pcap", since=mark)
    back = list(iter_hep_packets(pcap))
    assert [b for _, b in back] == [d.data for d in grams]
    assert all(abs(t - d.received) < 2e-6 for (t, _), d in zip(back, grams, strict=True))


def test_auth_key_and_capture_id(tmp_path: Path) -> None:
    """The config's optional knobs: another capture id, the HEPv3 auth key chunk."""
    port = PROXY_PORT + 1  # the module's proxy may still hold PROXY_PORT
    reason = skip_reason((port, UAS_PORT, UAC_PORT))
    if reason:
        pytest.skip(reason)
    with (
        HepSink() as sink,
        KamailioProxy(
            sink.host,
            sink.port,
            port=port,
            workdir=tmp_path / "kamailio",
            capture_id=424242,
            auth_key="e2e-secret",
        ) as proxy,
    ):
        pid = proxy.pid
        assert pid is not None and group_members(pid)
        capture = run_and_capture("basic-call", sink, proxy, run_dir=tmp_path / "sipp")
    _check_capture(capture.result, capture.datagrams, proxy)
    for d in capture.datagrams:
        assert decode(d.data).auth_key == b"e2e-secret"
    # stopped cleanly: the main process and every worker gone, the port free again
    assert not group_members(pid)
    assert udp_port_free(port)
