"""`hepwatch analyze`: captures as HEP and as plain SIP, JSON and text output, the ladder,
rejection counters, the JSON-lines sink, errors for bad files."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dpkt
import pytest
from capture_build import make_calls, write_capture
from click.testing import CliRunner
from hepbuild import hep3
from sharedpath import shared_path
from sipflow import Flow, sdp

from consumers import analyze as analyze_mod
from consumers.analyze import analyze, iso_time, report_lines
from consumers.capture import read_capture
from consumers.detectors.base import Detector, Output
from consumers.ladder import columns, render
from consumers.observation import Observation
from consumers.records import MessageRecord, ObservationRow
from consumers.sinks import JsonLinesSink, Sink
from consumers.tracking.tracker import Event
from hepwatch import cli as cli_mod
from hepwatch.cli import cli

COLLECTOR = ("10.9.9.9", 9060)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# --- capture building ------------------------------------------------------------------------


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


def hep_frame(o: Observation) -> bytes:
    """The observation as Kamailio's mirror sends it to a collector, tapped on the wire."""
    sec, usec = divmod(o.ts_us, 1_000_000)
    pkt = hep3(
        o.payload, src=o.src_ip, dst=o.dst_ip, sport=o.src_port, dport=o.dst_port, ts=(sec, usec)
    )
    return udp_frame("10.0.0.1", COLLECTOR[0], 40000, COLLECTOR[1], pkt)


def sip_frame(o: Observation) -> bytes:
    return udp_frame(o.src_ip, o.dst_ip, o.src_port, o.dst_port, o.payload)


def write(path: Path, frames: list[tuple[int, bytes]], *, fmt: str = "pcap") -> Path:
    with open(path, "wb") as fh:
        w = dpkt.pcapng.Writer(fh) if fmt == "pcapng" else dpkt.pcap.Writer(fh)
        for ts_us, frame in frames:
            w.writepkt(frame, ts=ts_us / 1_000_000)
    return path


def as_hep(flow: Flow) -> list[tuple[int, bytes]]:
    return [(o.ts_us + 50, hep_frame(o)) for o in flow.obs]


def as_sip(flow: Flow) -> list[tuple[int, bytes]]:
    return [(o.ts_us, sip_frame(o)) for o in flow.obs]


def basic_call(call_id: str = "basic-1@test", **kw: Any) -> Flow:
    f = Flow(call_id, **kw)
    f.setup()
    f.wait(5)
    f.bye("A")
    return f


def hold_call(call_id: str = "hold-1@test") -> Flow:
    """A call with a re-INVITE putting B on hold, then a BYE from B."""
    f = Flow(call_id)
    f.setup()
    f.wait(2)
    re_inv = f.request("A", "INVITE", body=sdp(version=2, direction="sendonly"))
    f.wait(0.05)
    f.response(re_inv, 200, body=sdp(addr="10.0.0.3", session_id="2002", direction="recvonly"))
    f.wait(0.02)
    f.ack(re_inv)
    f.wait(1)
    f.bye("B")
    return f


def run_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["analyze", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


class ReinviteFlagger(Detector):
    """Test-local detector: one anomaly per re-INVITE (not its retransmissions)."""

    name = "test_reinvite"
    family = "C.99"

    def on_event(self, ev: Event, out: Output) -> None:
        msg = ev.msg
        if msg.is_request and msg.method == "INVITE" and msg.to_tag and not ev.retransmission:
            out.anomaly(
                "test_reinvite",
                "low",
                self.family,
                call=ev.call,
                lm=ev.lm,
                dialog=ev.dialog,
                evidence=[ev.lm],
                seen_as=ev.state_before.value,
            )


# --- JSON output -----------------------------------------------------------------------------


def test_basic_call_from_hep_capture(tmp_path: Path) -> None:
    f = basic_call()
    doc = run_json(str(write(tmp_path / "hep.pcap", as_hep(f))))
    assert set(doc) >= {"dialogs", "session_changes", "anomalies", "messages", "stats"}
    assert doc["messages"] == 7  # INVITE, 100, 180, 200, ACK, BYE, 200
    [dialog] = doc["dialogs"]
    assert dialog["call_id"] == "basic-1@test"
    assert (dialog["caller_tag"], dialog["callee_tag"]) == ("a1", "b1")
    assert dialog["state"] == "terminated" and dialog["end_reason"] == "bye"
    assert dialog["initial_status"] == 200
    assert (dialog["caller_ip"], dialog["callee_ip"]) == ("10.0.0.2", "10.0.0.3")
    assert dialog["record_routed"] is True
    assert ISO.match(dialog["start_time"]) and ISO.match(dialog["end_time"])
    st = doc["stats"]
    assert st["packets"] == len(f.obs) == st["hep"] == st["observations"]
    assert st["sip_wrapped"] == 0 and st["rejected"] == {} and st["truncated"] is False


def test_plain_sip_capture_gives_the_same_dialog(tmp_path: Path) -> None:
    f = hold_call()
    hep = run_json(str(write(tmp_path / "hep.pcap", as_hep(f))))
    sip = run_json(str(write(tmp_path / "sip.pcap", as_sip(f))))
    assert sip["stats"]["sip_wrapped"] == len(f.obs) and sip["stats"]["hep"] == 0
    assert sip["messages"] == hep["messages"] == 10
    keep = ("call_id", "state", "end_reason", "reinvites", "caller_ip", "callee_ip", "start_time")
    assert [{k: d[k] for k in keep} for d in sip["dialogs"]] == [
        {k: d[k] for k in keep} for d in hep["dialogs"]
    ]
    assert sip["dialogs"][0]["reinvites"] == 1 and sip["dialogs"][0]["end_reason"] == "bye"


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_capture_holding_both_hep_and_plain_sip(tmp_path: Path, fmt: str) -> None:
    one = basic_call("mixed-hep@test")
    two = Flow("mixed-sip@test", a=("10.0.1.2", 5060), b=("10.0.1.3", 5060))
    inv = two.request("A", "INVITE", in_dialog=False, body=sdp())
    two.wait(0.001)
    two.response(inv, 100, proxy=True)
    two.wait(1)
    two.response(inv, 486, reason="Busy Here")
    two.wait(0.01)
    two.hop_ack(inv)
    frames = sorted(as_hep(one) + as_sip(two), key=lambda x: x[0])
    doc = run_json(str(write(tmp_path / f"both.{fmt}", frames, fmt=fmt)))
    by_call = {d["call_id"]: d for d in doc["dialogs"]}
    assert by_call["mixed-hep@test"]["end_reason"] == "bye"
    assert by_call["mixed-sip@test"]["end_reason"] == "rejected"
    assert by_call["mixed-sip@test"]["initial_status"] == 486
    assert doc["stats"]["hep"] == len(one.obs)
    assert doc["stats"]["sip_wrapped"] == len(two.obs)


def test_anomalies_carry_the_common_columns_and_evidence(tmp_path: Path) -> None:
    f = hold_call()
    path = write(tmp_path / "hold.pcap", as_hep(f))
    result = analyze(path, detectors=[ReinviteFlagger()])
    doc = json.loads(json.dumps(result.to_json()))
    [an] = doc["anomalies"]
    assert an["anomaly"] == "test_reinvite" and an["severity"] == "low"
    assert an["call_id"] == "hold-1@test" and an["dialog_state"] == "established"
    assert ISO.match(an["event_time"]) and an["event_time"].startswith("2023-11-14T22:13:22.6")
    # The re-INVITE is the 10th and 11th frame (in- and out-copy); its first copy is the ref.
    assert an["evidence"] == ["hold.pcap#10"]
    assert an["fields"] == {"seen_as": "established"}
    assert doc["stats"]["anomalies_by_name"] == {"test_reinvite": 1}
    assert doc["dialogs"][0]["anomalies"] == 1


def test_out_of_order_hep_timestamps_are_sorted(tmp_path: Path) -> None:
    """HEP packets written late by the capture point (up to seconds): same analysis."""
    f = hold_call()
    frames = as_hep(f)
    random.Random(7).shuffle(frames)
    doc = run_json(str(write(tmp_path / "shuffled.pcap", frames)))
    [dialog] = doc["dialogs"]
    assert dialog["end_reason"] == "bye" and dialog["reinvites"] == 1
    assert doc["messages"] == 10 and doc["stats"]["late_observations"] == 0


def test_rejections_are_counted_by_reason(tmp_path: Path) -> None:
    f = basic_call()
    o = f.obs[0]
    frames = as_hep(f)
    t = frames[-1][0] + 1000
    arp = bytes(dpkt.ethernet.Ethernet(type=0x0806, data=b"\x00" * 28))
    icmp_ip = dpkt.ip.IP(
        src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton("10.0.0.1"), p=1, data=b"\x08" * 8
    )
    icmp_ip.len = len(icmp_ip)
    icmp = bytes(dpkt.ethernet.Ethernet(type=0x0800, data=icmp_ip))
    rtcp = hep3(b"\x80\xc8\x00\x06" + b"\x00" * 24, proto_type=5)
    bad_chunk = b"HEP3\x00\x0c" + b"\x00\x00\x00\x01\x00\x02"  # chunk length 2 < 6
    not_sip = hep3(b"hello, this is not SIP\r\n\r\n")
    frames += [
        (t, arp),
        (t, icmp),
        (t, udp_frame("10.0.0.5", "10.0.0.6", 1234, 5678, b"just some bytes")),
        (t, udp_frame("10.0.0.1", COLLECTOR[0], 40000, COLLECTOR[1], rtcp)),
        (t, udp_frame("10.0.0.1", COLLECTOR[0], 40000, COLLECTOR[1], bad_chunk)),
        (t, udp_frame("10.0.0.1", COLLECTOR[0], 40000, COLLECTOR[1], not_sip)),
    ]
    doc = run_json(str(write(tmp_path / "junk.pcap", frames)))
    st = doc["stats"]
    assert st["packets"] == len(f.obs) + 6
    rejected = st["rejected"]
    assert rejected.pop("not_ip") == 1
    assert rejected.pop("not_udp_tcp") == 1
    assert rejected.pop("not_hep_or_sip") == 1
    assert rejected.pop("hep_not_sip") == 1
    assert rejected.pop("hep_bad_chunk") == 1
    [(reason, n)] = rejected.items()
    assert reason.startswith("sip_") and n == 1
    assert doc["dialogs"][0]["end_reason"] == "bye" and o.payload  # the call is unaffected


@pytest.mark.parametrize("kind", ["hep", "sip", "mixed"])
def test_fast_path_reads_what_the_scanner_reads(tmp_path: Path, kind: str) -> None:
    """The Ethernet/IPv4/UDP shortcut gives the same observations and counters as
    collector.replay.CaptureScanner does for every frame."""
    one, two = hold_call(), basic_call("other@test", a=("10.0.1.2", 5060))
    frames = {
        "hep": as_hep(one),
        "sip": as_sip(one),
        "mixed": sorted(as_hep(one) + as_sip(two), key=lambda x: x[0]),
    }[kind]
    frames.append((frames[-1][0] + 1, udp_frame("10.0.0.5", "10.0.0.6", 1, 2, b"noise")))
    path = write(tmp_path / f"{kind}.pcap", frames)
    fast, slow = read_capture(path), read_capture(path)
    slow.fast = False
    assert list(fast) == list(slow)
    assert fast.stats == slow.stats and fast.stats.observations == len(frames) - 1


def test_truncated_capture_keeps_what_it_has(tmp_path: Path) -> None:
    f = basic_call()
    path = write(tmp_path / "cut.pcap", as_sip(f))
    data = path.read_bytes()
    last_record = 16 + 14 + 20 + 8 + len(f.obs[-1].payload)  # pcap header + Ether/IP/UDP
    path.write_bytes(data[: len(data) - last_record + 9])  # cut inside the last record header
    doc = run_json(str(path))
    assert doc["stats"]["truncated"] is True
    assert doc["stats"]["packets"] == len(f.obs) - 1
    assert doc["dialogs"][0]["call_id"] == "basic-1@test"


# --- errors ----------------------------------------------------------------------------------


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["analyze", str(tmp_path / "nope.pcap")])
    assert missing.exit_code != 0 and "no such file" in missing.output
    text = tmp_path / "notes.txt"
    text.write_text("INVITE sip:x SIP/2.0\r\n")
    wrong = runner.invoke(cli, ["analyze", str(text), "--json"])
    assert wrong.exit_code != 0 and "not a pcap or pcapng file" in wrong.output
    short = tmp_path / "short.pcap"
    short.write_bytes(bytes.fromhex("d4c3b2a1") + b"\x02\x00")
    cut = runner.invoke(cli, ["analyze", str(short)])
    assert cut.exit_code != 0 and "truncated" in cut.output
    folder = runner.invoke(cli, ["analyze", str(tmp_path)])
    assert folder.exit_code != 0 and "directory" in folder.output
    for r in (missing, wrong, cut, folder):
        assert "Traceback" not in r.output


def test_empty_capture_is_an_empty_analysis(tmp_path: Path) -> None:
    doc = run_json(str(write(tmp_path / "empty.pcap", [])))
    assert doc["dialogs"] == [] and doc["anomalies"] == [] and doc["messages"] == 0
    assert doc["stats"]["packets"] == 0


def test_subprocess_json(tmp_path: Path) -> None:
    path = write(tmp_path / "hep.pcap", as_hep(hold_call()))
    out = subprocess.run(
        [sys.executable, "-m", "hepwatch.cli", "analyze", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["dialogs"][0]["end_reason"] == "bye" and doc["messages"] == 10
    bad = subprocess.run(
        [sys.executable, "-m", "hepwatch.cli", "analyze", str(tmp_path / "missing.pcap")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "no such file" in bad.stderr


# --- text report and ladder ------------------------------------------------------------------


def test_text_report_has_a_ladder_per_call(tmp_path: Path) -> None:
    one, two = hold_call(), basic_call("second@test")
    frames = sorted(as_hep(one) + as_hep(two), key=lambda x: x[0])
    result = CliRunner().invoke(cli, ["analyze", str(write(tmp_path / "two.pcap", frames))])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("== Call ") == 2 and "Call-ID hold-1@test" in out
    assert "end bye" in out and "re-INVITEs 1" in out
    headers = [ln for ln in out.splitlines() if "caller" in ln and "proxy" in ln and "callee" in ln]
    assert len(headers) == 2
    arrows = [ln for ln in out.splitlines() if re.match(r"^\s+\+\d+\.\d{3}  \|", ln)]
    assert len(arrows) == 17  # 10 + 7 messages
    plain = CliRunner().invoke(cli, ["analyze", str(tmp_path / "two.pcap"), "--no-ladder"])
    assert plain.exit_code == 0 and "|" not in plain.output


def test_ladder_marks_anomalies_retransmissions_and_duplicates(tmp_path: Path) -> None:
    f = Flow("ladder@test")
    f.setup()
    f.wait(2)
    re_inv = f.request("A", "INVITE", body=sdp(version=2, direction="sendonly"))
    f.wait(2.5)  # a later retransmission (earlier ones fold into the first, C.0 rule 1)
    again = f.request(
        "A",
        "INVITE",
        cseq=re_inv.cseq,
        branch=re_inv.branch,
        body=sdp(version=2, direction="sendonly"),
    )
    f.wait(0.05)
    f.response(re_inv, 200, body=sdp(addr="10.0.0.3", session_id="2002", direction="recvonly"))
    f.wait(0.02)
    f.ack(re_inv)
    f.wait(1)
    f.bye("A")
    frames = as_hep(f)
    frames.insert(1, frames[0])  # the INVITE's in-copy captured twice
    path = write(tmp_path / "ladder.pcap", frames)
    result = analyze(path, detectors=[ReinviteFlagger()])
    lines = list(report_lines(result))
    arrows = [ln for ln in lines if re.match(r"^\s+[+-]\d+\.\d{3}  \|", ln)]
    initial = next(ln for ln in arrows if "CSeq 1 INVITE  INVITE" in ln)
    assert "dup x2" in initial and "!!" not in initial
    reinvites = [ln for ln in arrows if "CSeq 2 INVITE  INVITE" in ln]
    assert len(reinvites) == 2 and again.cseq == 2
    assert "!! test_reinvite [low]" in reinvites[0] and "retrans" not in reinvites[0]
    assert "retrans" in reinvites[1] and "!!" not in reinvites[1]
    trying = next(ln for ln in arrows if "CSeq 1 INVITE" in ln and "100 Trying" in ln)
    assert "(proxy)" in trying
    # Arrows: the INVITE goes right through the proxy column, the 200 comes back left.
    assert re.search(r"\|-+ INVITE \(SDP\) -+\+-+>\|", initial)
    ok = next(ln for ln in arrows if "200 OK (SDP)" in ln and "CSeq 1" in ln)
    assert re.search(r"\|<-+\+-+ 200 OK \(SDP\) -+\|", ok)


def _msg(ref: str, src: tuple[str, int], dst: tuple[str, int], **kw: Any) -> MessageRecord:
    base: dict[str, Any] = dict(
        id=ref, event_time_us=0, node="n", capture_id=0, call_id="c", is_request=True,
        method="INVITE", status=0, reason_phrase="", cseq=1, from_tag="a", to_tag="",
        direction="caller_to_callee", dialog_state="pre", origin="endpoint",
        retransmission=False, transport="udp", src_ip=src[0], src_port=src[1], dst_ip=dst[0],
        dst_port=dst[1], user_agent="", allow=None, supported=None, require=None,
        session_expires=None, refresher=None, min_se=None, has_sdp=False, sdp_role="",
        malformed=[], correlation_id="", x_cid="",
    )  # fmt: skip
    base.update(kw)
    hop = "in" if dst == ("10.0.0.1", 5060) else "unknown"
    base.setdefault("observations", [ObservationRow(0, src[0], src[1], dst[0], dst[1], hop, ref)])
    return MessageRecord(**base)


def test_ladder_columns_and_loose_anomalies() -> None:
    a, p, b, x = ("10.0.0.2", 5060), ("10.0.0.1", 5060), ("10.0.0.3", 5060), ("10.0.0.9", 5070)
    inv = _msg("f#1", a, p, observations=[
        ObservationRow(0, *a, *p, "in", "f#1"), ObservationRow(200, *p, *b, "out", "f#2"),
    ])  # fmt: skip
    other = _msg("f#3", x, p, event_time_us=1_000_000, method="OPTIONS", to_tag="t")
    cols = columns([other, inv])
    assert [(c.addr, c.role) for c in cols] == [
        ("10.0.0.2:5060", "caller"),
        ("10.0.0.1:5060", "proxy"),
        ("10.0.0.3:5060", "callee"),
        ("10.0.0.9:5070", ""),
    ]

    class An:
        anomaly, severity, evidence, event_time_us = "lonely", "info", ["elsewhere#9"], 500_000

    lines = render([inv, other], [An()])  # type: ignore[list-item]
    assert lines[0].split() == ["10.0.0.2:5060", "10.0.0.1:5060", "10.0.0.3:5060", "10.0.0.9:5070"]
    body = lines[2:]
    assert "!! lonely [info]" in body[1] and "+0.500" in body[1]
    assert "<-" in body[2] and "OPTIONS" in body[2]  # from the rightmost column to the proxy


# --- sinks and the correlator hook -----------------------------------------------------------


def test_jsonl_sink_and_option(tmp_path: Path) -> None:
    f = hold_call()
    path = write(tmp_path / "hold.pcap", as_hep(f))
    out = tmp_path / "records.jsonl"
    result = CliRunner().invoke(cli, ["analyze", str(path), "--jsonl", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("message") == 10 and kinds.count("dialog") == 1
    invite = next(r for r in rows if r["kind"] == "message")
    assert invite["raw"].startswith("INVITE sip:") and invite["observations"][0]["hop"] == "in"

    import io

    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    assert isinstance(sink, Sink)
    records = analyze(path).records
    sink.write(records)
    sink.close()
    assert not stream.closed and len(stream.getvalue().splitlines()) == len(records)
    with pytest.raises(ValueError):
        sink.write(records)


def test_correlator_anomalies_join_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    pcap = write(tmp_path / "c.pcap", as_hep(hold_call()))
    [flagged] = analyze(pcap, detectors=[ReinviteFlagger()], correlate=False).anomalies
    extra = flagged.replace(id="x", anomaly="update_to_reinvite", family="C.12")

    def correlate(records: list[Any]) -> list[Any]:
        seen.append(len(records))
        return [extra]

    monkeypatch.setattr(analyze_mod, "load_correlator", lambda: correlate)
    result = analyze(pcap, detectors=[ReinviteFlagger()])
    doc = result.to_json()
    assert [a["anomaly"] for a in doc["anomalies"]] == ["test_reinvite", "update_to_reinvite"]
    assert seen == [len(result.records) - 1]
    assert doc["stats"]["leg_correlation"] is True


def test_the_real_correlator_is_found_when_installed() -> None:
    correlate = analyze_mod.load_correlator()
    try:
        import consumers.legs.correlator as mod
    except ModuleNotFoundError:
        assert correlate is None
    else:
        assert correlate is mod.correlate


def test_iso_time_keeps_microseconds() -> None:
    assert iso_time(1_700_000_000_000_001) == "2023-11-14T22:13:20.000001Z"
    assert iso_time(None) is None


# --- shared captures -------------------------------------------------------------------------


def test_shared_hep_vectors(tmp_path: Path) -> None:
    """Every shared pcap analyzes; every shared HEP hex vector, carried in UDP, is either an
    observation or a counted rejection."""
    folder = shared_path("vectors", "hep")
    if folder is None:
        pytest.skip("../shared is not present (set HEPWATCH_SHARED to the shared folder)")
    for pcap in sorted(folder.glob("*.pcap*")):
        doc = run_json(str(pcap))
        assert doc["stats"]["packets"] > 0
    vectors = [p for p in sorted(folder.glob("*.hex")) if "stream" not in p.name]
    assert vectors
    frames = []
    for i, vec in enumerate(vectors):
        text = [ln for ln in vec.read_text().splitlines() if not ln.startswith("#")]
        wire = bytes.fromhex(" ".join(text))
        frames.append((1_700_000_000_000_000 + i, udp_frame("10.0.0.1", "10.9.9.9", 1, 9060, wire)))
    result = analyze(write(tmp_path / "vectors.pcap", frames))
    st = result.stats()
    hep_rejections = sum(n for k, n in st["rejected"].items() if k.startswith("hep_"))
    assert st["packets"] == st["hep"] == len(vectors)
    assert st["observations"] + hep_rejections == len(vectors)
    assert st["observations"] > 0 and result.engine.messages > 0


def test_iso_time_equals_the_datetime_formula() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(5)
    values = [0, -1, 86_400_000_000 - 1, 86_400_000_000, 253_402_300_799_999_999]
    values += [rng.randrange(-(10**16), 10**17) for _ in range(5000)]
    for us in values:
        want = (epoch + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert iso_time(us) == want, us
    with pytest.raises(OverflowError):
        iso_time(253_402_300_800_000_000)  # past 9999-12-31, as datetime says


@dataclasses.dataclass
class _Nested:
    a: int
    b: list[str]


def test_json_records_equal_to_dict_with_iso_times(tmp_path: Path) -> None:
    """The JSON form built without to_dict's copies is `to_dict()` plus ISO twins, for
    every record type `--json` prints; a nested dataclass in `fields` is still a dict."""
    calls = make_calls(60, 3)
    path = tmp_path / "calls.pcap"
    write_capture(calls, path)
    result = analyze(path)
    records = [*result.dialogs, *result.session_changes, *result.anomalies]
    assert {type(r) for r in records} == set(analyze_mod._PLAIN_TO_DICT)
    odd = result.anomalies[0].replace(
        fields={"n": _Nested(1, ["x"]), "t": (1, 2), "deep": {"k": [_Nested(2, [])]}},
        detected_at_us=-5,
    )
    records += [odd, *[r for r in result.records if type(r) not in analyze_mod._PLAIN_TO_DICT]]
    want = [analyze_mod._with_iso(r.to_dict()) for r in records]
    got = analyze_mod._json_records(records)
    assert json.dumps(got) == json.dumps(want)
    assert got[len(result.anomalies) + len(result.dialogs) + len(result.session_changes)]["fields"][
        "n"
    ] == {"a": 1, "b": ["x"]}


def test_analyze_process_leaves_its_garbage_to_the_os(tmp_path: Path) -> None:
    """`hepwatch analyze` raises the collector's first threshold and freezes everything
    before the interpreter's last collection; other commands do neither."""
    path = write(tmp_path / "hep.pcap", as_hep(hold_call()))
    code = (
        "import atexit, gc, sys\nfrom hepwatch.cli import main\n"
        "atexit.register(lambda: print(gc.get_threshold()[0], len(gc.get_objects()) < 100))\n"
        "sys.argv = ['hepwatch', *sys.argv[1:]]\nmain()\n"
    )
    for args, frozen in (
        (["analyze", str(path), "--no-ladder"], True),
        (["replay", "--help"], False),
    ):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        threshold, all_frozen = out.stdout.splitlines()[-1].split()
        assert (int(threshold) == cli_mod.ANALYZE_GC_GEN0) is frozen
        assert all_frozen == str(frozen)


def test_fast_path_header_reading_agrees_with_the_scanner() -> None:
    """Frames with random header bytes (IP options, fragments flags, lengths, protocols,
    cuts): whatever the Ethernet/IPv4/UDP shortcut accepts, collector.replay's dpkt-based
    path reads as the same addresses, ports and payload."""
    from collector import replay as rp
    from consumers.capture import _udp_span

    def _ethernet_ipv4_udp(frame: bytes) -> tuple[bytes, bytes, int, int, bytes] | None:
        start, end = _udp_span(frame)
        if not end:
            return None
        ports = frame[start - 8 : start - 4]
        sport, dport = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")
        return frame[26:30], frame[30:34], sport, dport, frame[start:end]

    rng = random.Random(11)
    sip = basic_call().obs[0]
    bases = [sip_frame(sip), hep_frame(sip)]
    options = bytearray(bases[0])
    options[14] = 0x46  # one 4-byte IP option word before the UDP header
    options[16:18] = (int.from_bytes(options[16:18], "big") + 4).to_bytes(2, "big")
    bases.append(bytes(options[:34]) + b"\x01\x01\x01\x01" + bytes(options[34:]))
    accepted = 0
    for n in range(20000):
        frame = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(0 if n < 3 else 1, 4)):
            i = rng.randrange(12, 46)
            frame[i] = rng.choice(
                [0, 1, 4, 8, 17, 0x20, 0x40, 0x45, 0x46, 0xFF, rng.randrange(256)]
            )
        if rng.random() < 0.1:
            frame = frame[: rng.randrange(len(frame) + 1)]
        fast = _ethernet_ipv4_udp(bytes(frame))
        if fast is None:
            continue
        accepted += 1
        raw = rp.network_layer(rp.LINKTYPE_ETHERNET, bytes(frame))
        assert raw is not None
        dgram = rp._ip_datagram(raw, rp._Fragments(), rp.ScanStats())
        assert dgram is not None and dgram.proto == 17
        udp = dpkt.udp.UDP(dgram.payload)
        payload = bytes(udp.data)[: udp.ulen - 8] if udp.ulen >= 8 else bytes(udp.data)
        assert fast == (dgram.src, dgram.dst, udp.sport, udp.dport, payload)
    assert accepted > 2000
