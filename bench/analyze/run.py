"""Benchmark of `hepwatch analyze --json` against sip-doctor 0.8.0 on the same capture.

Writes (or takes, with --capture) a pcap of proxy-mirrored calls as Kamailio's siptrace
sends them to a collector (HEPv3 over UDP to port 9060: every relayed message twice, in
and out of the proxy, plus the proxy's own 100 Trying), then times both analyzers on it,
in one run, best of --repeat. The calls are built with tests/sipflow.py (the test-side
builder of mirrored calls) from scenarios whose anomalies are known by construction, named
as in PROTOCOL.md C; the report says which of them each tool found, missed or invented.

    .venv/bin/python bench/analyze/run.py [--calls 400] [--repeat 3] [--capture FILE]

sip-doctor is installed from PyPI into its own virtualenv (bench/.venv-sipdoctor, or
--sipdoctor-venv) on first use; it needs nothing but the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dpkt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sipflow import Flow, Sent, sdp  # noqa: E402

from collector.hep.fast import encode_v3  # noqa: E402
from collector.hep.model import AF_INET, PROTO_SIP, HepPacket  # noqa: E402
from consumers.observation import Observation  # noqa: E402

PROXY = ("10.0.0.1", 5060)
COLLECTOR = ("10.0.0.100", 9060)
FULL_ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, PRACK"
NO_UPDATE_ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"
TIMER_REQ = ("Supported: timer", "Session-Expires: 90;refresher=uac", "Min-SE: 90")
TIMER_2XX = ("Require: timer", "Supported: timer", "Session-Expires: 90;refresher=uac")
SIPDOCTOR = "sip-doctor==0.8.0"


# --- calls with known anomalies ------------------------------------------------------------------

Expected = list[tuple[str, str | None]]  # (catalogue family, anomaly name or None if unnamed)
Change = tuple[str, str, int]  # a re-INVITE/UPDATE: (method, intent, final status)


@dataclass
class Call:
    scenario: str
    flow: Flow
    expected: Expected = field(default_factory=list)
    optional: tuple[str, ...] = ()  # catalogue names that are right but not required
    # Mid-dialog re-INVITE/UPDATE transactions in order (PROTOCOL.md C.10 intents: hold,
    # resume, codec_change, refresh for an unchanged offer, no_sdp).
    changes: list[Change] = field(default_factory=list)


def _offer(f: Flow, side: str, version: int, **kw: Any) -> str:
    host = f.addr[side][0]
    sid = "1001" if side == "A" else "2002"
    port = 40000 if side == "A" else 50000
    return sdp(version=version, addr=host, session_id=sid, port=port, **kw)


def establish(
    f: Flow,
    rng: random.Random,
    *,
    b_allow: str = FULL_ALLOW,
    a_extra: tuple[str, ...] = (),
    b_extra: tuple[str, ...] = (),
) -> Sent:
    """INVITE, the proxy's 100, 180, 200 with the answer, ACK."""
    inv = f.request(
        "A",
        "INVITE",
        in_dialog=False,
        body=_offer(f, "A", 1),
        headers=[FULL_ALLOW, "Supported: replaces", *a_extra],
    )
    f.wait(0.002)
    f.response(inv, 100, proxy=True)
    f.wait(rng.uniform(0.05, 0.3))
    f.response(inv, 180, headers=[b_allow])
    f.wait(rng.uniform(0.5, 4.0))
    f.response(inv, 200, body=_offer(f, "B", 1), headers=[b_allow, *b_extra])
    inv.to_tag = f.tags["B"]
    f.wait(rng.uniform(0.02, 0.08))
    f.ack(inv)
    return inv


def reinvite(f: Flow, side: str, offer: str, answer: str) -> Sent:
    """A complete re-INVITE: offer, 200 with the answer, ACK."""
    req = f.request(side, "INVITE", body=offer)
    f.wait(0.04)
    f.response(req, 200, body=answer)
    f.wait(0.02)
    f.ack(req)
    return req


def sc_clean(f: Flow, rng: random.Random) -> Call:
    establish(f, rng)
    f.wait(rng.uniform(5, 60))
    f.bye(rng.choice("AB"))
    return Call("clean", f)


def sc_rejected(f: Flow, rng: random.Random) -> Call:
    inv = f.request("A", "INVITE", in_dialog=False, body=_offer(f, "A", 1), headers=[FULL_ALLOW])
    f.wait(0.002)
    f.response(inv, 100, proxy=True)
    f.wait(rng.uniform(0.2, 2))
    f.response(inv, 486, reason="Busy Here")
    f.wait(0.01)
    f.hop_ack(inv)
    return Call("rejected", f)


def sc_cancelled(f: Flow, rng: random.Random) -> Call:
    inv = f.request("A", "INVITE", in_dialog=False, body=_offer(f, "A", 1), headers=[FULL_ALLOW])
    f.wait(0.002)
    f.response(inv, 100, proxy=True)
    f.wait(0.1)
    f.response(inv, 180, headers=[FULL_ALLOW])
    f.wait(rng.uniform(2, 10))
    cancel = f.request("A", "CANCEL", cseq=inv.cseq, in_dialog=False, branch=inv.branch)
    f.wait(0.01)
    f.response(cancel, 200)
    f.wait(0.01)
    f.response(inv, 487, to_tag=f.tags["B"])
    f.wait(0.01)
    f.hop_ack(inv, to_tag=f.tags["B"])
    return Call("cancelled", f)


def sc_hold_resume(f: Flow, rng: random.Random) -> Call:
    establish(f, rng)
    f.wait(rng.uniform(3, 10))
    reinvite(
        f, "A", _offer(f, "A", 2, direction="sendonly"), _offer(f, "B", 2, direction="recvonly")
    )
    f.wait(rng.uniform(3, 15))
    reinvite(f, "A", _offer(f, "A", 3), _offer(f, "B", 3))
    f.wait(rng.uniform(3, 10))
    f.bye(rng.choice("AB"))
    return Call("hold_resume", f, changes=[("INVITE", "hold", 200), ("INVITE", "resume", 200)])


def sc_codec_change(f: Flow, rng: random.Random) -> Call:
    establish(f, rng)
    f.wait(rng.uniform(3, 10))
    reinvite(f, "B", _offer(f, "B", 2, codecs=("8",)), _offer(f, "A", 2, codecs=("8",)))
    f.wait(rng.uniform(3, 10))
    f.bye(rng.choice("AB"))
    return Call("codec_change", f, changes=[("INVITE", "codec_change", 200)])


def _glare(f: Flow, rng: random.Random, owner_delay: float) -> None:
    """Both sides send a re-INVITE at once (the caller a hold offer, the callee an unchanged
    refresh offer); each answers the other 491 (RFC 3261 §14.2). The callee (not the Call-ID
    owner) resends after 1 s, the caller after `owner_delay`; a resent offer is the same SDP."""
    establish(f, rng)
    f.wait(rng.uniform(3, 10))
    a_hold = _offer(f, "A", 2, direction="sendonly")
    b_held = _offer(f, "B", 2, direction="recvonly")
    x = f.request("A", "INVITE", body=a_hold)
    f.wait(0.005)
    y = f.request("B", "INVITE", body=_offer(f, "B", 1))
    f.wait(0.02)
    f.response(x, 491)
    f.wait(0.001)
    f.response(y, 491)
    t491 = f.t
    f.wait(0.01)
    f.hop_ack(x)
    f.hop_ack(y)
    held = False
    for delay, side in sorted([(owner_delay, "A"), (1.0, "B")]):
        f.t = max(f.t, t491 + delay)
        if side == "A":
            reinvite(f, "A", a_hold, b_held)
            held = True
        elif held:
            reinvite(f, "B", b_held, a_hold)
        else:
            reinvite(f, "B", _offer(f, "B", 1), _offer(f, "A", 1))
        f.wait(0.1)
    f.wait(rng.uniform(3, 10))
    f.bye("A")


def sc_glare(f: Flow, rng: random.Random) -> Call:
    _glare(f, rng, owner_delay=3.0)
    changes = [("INVITE", "hold", 491), ("INVITE", "refresh", 491)]
    changes += [("INVITE", "refresh", 200), ("INVITE", "hold", 200)]
    return Call("glare", f, [("C.1", "glare_491")], changes=changes)


def sc_glare_early_retry(f: Flow, rng: random.Random) -> Call:
    _glare(f, rng, owner_delay=0.5)
    expected: Expected = [("C.1", "glare_491"), ("C.1", "glare_retry_too_early")]
    changes = [("INVITE", "hold", 491), ("INVITE", "refresh", 491)]
    changes += [("INVITE", "hold", 200), ("INVITE", "refresh", 200)]
    return Call("glare_early_retry", f, expected, changes=changes)


def sc_update_405_allowed(f: Flow, rng: random.Random) -> Call:
    """The callee advertised UPDATE, then answers an UPDATE with 405."""
    establish(f, rng)
    f.wait(rng.uniform(3, 10))
    upd = f.request("A", "UPDATE")
    f.wait(0.03)
    f.response(upd, 405, headers=[NO_UPDATE_ALLOW])
    f.wait(rng.uniform(3, 10))
    f.bye(rng.choice("AB"))
    expected: Expected = [("C.5", "405_update_allow_said_yes")]
    return Call("update_405_allowed", f, expected, changes=[("UPDATE", "no_sdp", 405)])


def sc_update_not_allowed(f: Flow, rng: random.Random) -> Call:
    """The callee's Allow lacks UPDATE; the caller sends one anyway and gets 405."""
    establish(f, rng, b_allow=NO_UPDATE_ALLOW)
    f.wait(rng.uniform(3, 10))
    upd = f.request("A", "UPDATE")
    f.wait(0.03)
    f.response(upd, 405, headers=[NO_UPDATE_ALLOW])
    f.wait(rng.uniform(3, 10))
    f.bye(rng.choice("AB"))
    expected: Expected = [("C.4", "update_despite_allow"), ("C.5", "405_update_allow_said_no")]
    return Call("update_not_allowed", f, expected, changes=[("UPDATE", "no_sdp", 405)])


def sc_missing_ack(f: Flow, rng: random.Random) -> Call:
    """The 2xx to a re-INVITE is never ACKed: the callee retransmits it (T1 doubling to T2)
    for 64*T1 and then sends BYE (RFC 3261 §13.3.1.4, §14.2)."""
    establish(f, rng)
    f.wait(rng.uniform(3, 10))
    req = f.request("A", "INVITE", body=_offer(f, "A", 2, direction="sendonly"))
    f.wait(0.04)
    t0 = f.t
    answer = _offer(f, "B", 2, direction="recvonly")
    f.response(req, 200, body=answer)
    gap = 0.5
    while f.t - t0 + gap < 32:
        f.wait(gap)
        f.response(req, 200, body=answer)
        gap = min(gap * 2, 4.0)
    f.t = t0 + 32.0
    f.bye("B")
    return Call("missing_ack", f, [("C.7", None)], changes=[("INVITE", "hold", 200)])


def _timer_call(f: Flow, rng: random.Random) -> None:
    establish(f, rng, a_extra=TIMER_REQ, b_extra=TIMER_2XX)


def sc_session_expired(f: Flow, rng: random.Random) -> Call:
    """refresher=uac never refreshes; the callee sends BYE at expiry - min(32, SE/3)
    (RFC 4028 §10)."""
    _timer_call(f, rng)
    f.wait(61.0)
    f.bye("B")
    # The catalogue names the BYE session_expired_bye; whether refresh_missed comes with it
    # for a BYE before the expiry itself is left open (C.8), so it is optional here.
    return Call(
        "session_expired", f, [("C.8", "session_expired_bye")], optional=("refresh_missed",)
    )


def sc_session_refreshed(f: Flow, rng: random.Random) -> Call:
    """refresher=uac refreshes with UPDATE (no SDP) at half the interval, twice."""
    _timer_call(f, rng)
    for _ in range(2):
        f.wait(45.0)
        upd = f.request("A", "UPDATE", headers=["Supported: timer", TIMER_REQ[1]])
        f.wait(0.03)
        f.response(upd, 200, headers=list(TIMER_2XX))
    f.wait(rng.uniform(3, 10))
    f.bye("A")
    return Call("session_refreshed", f, changes=[("UPDATE", "no_sdp", 200)] * 2)


SCENARIOS: list[tuple[Callable[[Flow, random.Random], Call], float]] = [
    (sc_clean, 0.35),
    (sc_rejected, 0.08),
    (sc_cancelled, 0.07),
    (sc_hold_resume, 0.10),
    (sc_codec_change, 0.05),
    (sc_glare, 0.05),
    (sc_glare_early_retry, 0.05),
    (sc_update_405_allowed, 0.05),
    (sc_update_not_allowed, 0.05),
    (sc_missing_ack, 0.05),
    (sc_session_expired, 0.05),
    (sc_session_refreshed, 0.05),
]


def make_calls(n: int, seed: int) -> list[Call]:
    rng = random.Random(seed)
    calls = []
    fns = [fn for fn, _ in SCENARIOS]
    weights = [w for _, w in SCENARIOS]
    for i in range(n):
        fn = fns[i] if i < len(fns) else rng.choices(fns, weights)[0]  # every scenario once
        a = (f"10.1.{i // 250}.{i % 250 + 2}", 5060)
        b = (f"10.2.{i // 250}.{i % 250 + 2}", 5060)
        f = Flow(
            f"{rng.getrandbits(64):016x}@{a[0]}",
            caller_tag=f"{rng.getrandbits(32):08x}",
            callee_tag=f"{rng.getrandbits(32):08x}",
            proxy=PROXY,
            a=a,
            b=b,
            a_ua=rng.choice(["Yealink SIP-T54W 96.86", "Linphone/5.2", "Zoiper rv2.10"]),
            b_ua=rng.choice(["Asterisk PBX 20.5.0", "FreeSWITCH-mod_sofia/1.10", "Polycom/7.1"]),
        )
        f.at(i * 0.4 + rng.uniform(0, 0.3))
        calls.append(fn(f, rng))
    return calls


# --- the capture ---------------------------------------------------------------------------------


def _udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int) -> bytes:
    udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(
        src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=17, id=ident & 0xFFFF
    )
    ip.data = udp
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(
        src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x64", type=0x0800, data=ip
    )
    return bytes(eth)


def _numbered(call: Call, n: int) -> list[Observation]:
    """The call's copies with its own numbers: sipflow names every caller "a" and every
    callee "b", which would make unrelated calls look like the two legs of one B2BUA call
    (same From and To users a moment apart, PROTOCOL.md B.13) to the leg correlator."""
    a, b = f"sip:+4420{n:07d}@".encode(), f"sip:+4930{n:07d}@".encode()
    return [
        replace(o, payload=o.payload.replace(b"sip:a@", a).replace(b"sip:b@", b))
        for o in call.flow.obs
    ]


def write_capture(calls: list[Call], path: Path) -> int:
    """HEPv3 over UDP from the proxy to the collector, as a tap on that link sees it."""
    obs = sorted((o for n, c in enumerate(calls) for o in _numbered(c, n)), key=lambda o: o.ts_us)
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        for n, o in enumerate(obs):
            sec, usec = divmod(o.ts_us, 1_000_000)
            pkt = HepPacket(
                version=3,
                family=AF_INET,
                ip_proto=17,
                src_ip=socket.inet_aton(o.src_ip),
                dst_ip=socket.inet_aton(o.dst_ip),
                src_port=o.src_port,
                dst_port=o.dst_port,
                ts_sec=sec,
                ts_usec=usec,
                proto_type=PROTO_SIP,
                capture_id=2001,
                payload=o.payload,
            )
            frame = _udp_frame((PROXY[0], 44000 + n % 8), COLLECTOR, encode_v3(pkt), n)
            w.writepkt(frame, ts=(o.ts_us + 150) / 1_000_000)  # the mirror's send delay
    return len(obs)


# --- the two tools -------------------------------------------------------------------------------


def sipdoctor_bin(venv: Path) -> Path:
    exe = venv / "bin" / "sip-doctor"
    if exe.exists():
        return exe
    print(f"installing {SIPDOCTOR} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", SIPDOCTOR],
        check=True,
    )
    return exe


# --- comparison ----------------------------------------------------------------------------------

# What sip-doctor says for a catalogue anomaly: its finding topic and a word of the title. It
# has no counterpart for the others (retry timing, Allow bookkeeping), which count as missed.
SIPDOCTOR_EQUIVALENT: dict[str, tuple[str, str]] = {
    "glare_491": ("reinvite-rejected", "491"),
    "405_update_allow_said_yes": ("reinvite-rejected", "405"),
    "405_update_allow_said_no": ("reinvite-rejected", "405"),
    "C.7": ("missing-ack", ""),
    "refresh_missed": ("session-timer", ""),
    "session_expired_bye": ("session-timer", ""),
}
# Findings that describe how a call ended, true of any failed call, never an invention.
CALL_OUTCOME_TOPICS = ("status-", "call-failed")


def _sd_intent(event: str) -> str:
    if "on hold" in event:
        return "hold"
    if "resumed" in event:
        return "resume"
    if "session refresh" in event:
        return "no_sdp"  # its name for a re-INVITE/UPDATE that changes nothing
    if "media update" in event:
        return "codec_change"
    return event


def _status(result: str | None) -> int:
    head = (result or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class Score:
    calls: int = 0
    all_found: int = 0  # calls whose every expected anomaly was reported
    missed: Counter[str] = field(default_factory=Counter)
    invented: Counter[str] = field(default_factory=Counter)
    changes_truth: int = 0
    changes_right: int = 0  # reported with the right method/intent/status, in order


def _same_change(truth: Change, got: Change) -> bool:
    method, intent, status = truth
    ok_intent = got[1] == intent or (intent == "refresh" and got[1] in ("no_change", "refresh"))
    return got[0] == method and ok_intent and got[2] == status


def _score_changes(truth: list[Change], got: list[Change]) -> int:
    return sum(1 for t, g in zip(truth, got, strict=False) if _same_change(t, g))


def score_hepwatch(calls: list[Call], doc: dict[str, Any]) -> dict[str, Score]:
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for a in doc["anomalies"]:
        found[a["call_id"]].append((a["family"], a["anomaly"]))
    changes: dict[str, list[Change]] = defaultdict(list)
    for sc in sorted(doc["session_changes"], key=lambda x: x["event_time_us"]):
        changes[sc["call_id"]].append((sc["method"], sc["intent"], sc["status"]))
    scores: dict[str, Score] = defaultdict(Score)
    for c in calls:
        s = scores[c.scenario]
        got = found.get(c.flow.call_id, [])
        s.calls += 1
        hits = [any(f == fam and (n is None or a == n) for f, a in got) for fam, n in c.expected]
        s.all_found += all(hits)
        s.missed.update(n or fam for (fam, n), hit in zip(c.expected, hits, strict=True) if not hit)
        for fam, a in got:
            if a in c.optional:
                continue
            if not any(fam == f and (n is None or n == a) for f, n in c.expected):
                s.invented[a] += 1
        s.changes_truth += len(c.changes)
        s.changes_right += _score_changes(c.changes, changes.get(c.flow.call_id, []))
    return scores


def score_sipdoctor(calls: list[Call], doc: dict[str, Any]) -> dict[str, Score]:
    findings: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    changes: dict[str, list[Change]] = defaultdict(list)
    for d in doc.get("dialogs", []):
        for f in d.get("findings", []):
            if f.get("topic"):  # the untopicked ones are summaries ("Caller hung up after")
                findings[d["call_id"]].append((f["topic"], f["severity"], f["title"]))
        for ev in d.get("events") or []:
            method = "UPDATE" if "UPDATE" in ev["event"] else "INVITE"
            changes[d["call_id"]].append((method, _sd_intent(ev["event"]), _status(ev["result"])))
    scores: dict[str, Score] = defaultdict(Score)
    for c in calls:
        s = scores[c.scenario]
        got = findings.get(c.flow.call_id, [])
        s.calls += 1
        used: set[int] = set()
        all_hit = True
        for fam, name in c.expected:
            topic, word = SIPDOCTOR_EQUIVALENT.get(name or fam, ("", ""))
            hit = [
                i for i, (t, _, title) in enumerate(got) if topic and t == topic and word in title
            ]
            used.update(hit)
            if not hit:
                all_hit = False
                s.missed[name or fam] += 1
        s.all_found += all_hit
        for name in c.optional:
            topic, word = SIPDOCTOR_EQUIVALENT.get(name, ("", ""))
            used.update(i for i, (t, _, title) in enumerate(got) if t == topic and word in title)
        for i, (topic, severity, title) in enumerate(got):
            if i not in used and severity != "info" and not topic.startswith(CALL_OUTCOME_TOPICS):
                s.invented[f"{topic}: {title[:40]}"] += 1
        s.changes_truth += len(c.changes)
        s.changes_right += _score_changes(c.changes, changes.get(c.flow.call_id, []))
    return scores


def print_scores(calls: list[Call], hw: dict[str, Score], sd: dict[str, Score] | None) -> None:
    truths = {c.scenario: c.expected for c in calls}
    print(f"{'scenario':<19}{'calls':>6}  {'anomalies by construction':<50}  hepwatch  sip-doctor")
    for name in sorted(truths):
        truth = ", ".join(n or f"{f} (any)" for f, n in truths[name]) or "none"
        h = hw[name]
        sd_txt = f"{sd[name].all_found:>4}/{sd[name].calls}" if sd else "-"
        print(f"{name:<19}{h.calls:>6}  {truth:<50}  {h.all_found:>4}/{h.calls:<4} {sd_txt}")
    for label, scores in (("hepwatch", hw), ("sip-doctor", sd)):
        if scores is None:
            continue
        missed = sum((s.missed for s in scores.values()), Counter())
        invented = sum((s.invented for s in scores.values()), Counter())
        truth = sum(s.changes_truth for s in scores.values())
        right = sum(s.changes_right for s in scores.values())
        print(f"\n{label}:")
        print(f"  missed   : {dict(missed) or 'nothing'}")
        print(f"  invented : {dict(invented) or 'nothing'}")
        print(f"  session changes with the right method, intent and status: {right}/{truth}")


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--capture", type=Path, help="analyze this file instead of generating one")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hepwatch-bench-analyze"))
    ap.add_argument("--sipdoctor-venv", type=Path, default=ROOT / "bench" / ".venv-sipdoctor")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    calls: list[Call] = []
    if args.capture:
        capture = args.capture
    else:
        calls = make_calls(args.calls, args.seed)
        capture = args.workdir / f"calls{args.calls}.pcap"
        packets = write_capture(calls, capture)
        size = capture.stat().st_size / 1e6
        print(f"capture: {capture} ({len(calls)} calls, {packets} HEP packets, {size:.1f} MB)")

    try:
        sd_exe: Path | None = sipdoctor_bin(args.sipdoctor_venv)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"sip-doctor could not be installed: {exc}", file=sys.stderr)
        sd_exe = None
    hw_cmd = [sys.executable, "-m", "hepwatch.cli", "analyze", str(capture), "--json"]
    sd_cmd = [str(sd_exe), "read", str(capture), "--json"] if sd_exe else []
    hw_out = args.workdir / "hepwatch.json"
    sd_out = args.workdir / "sipdoctor.json"
    hw_runs: list[tuple[float, float]] = []
    sd_runs: list[tuple[float, float]] = []
    hw_rc = sd_rc = 0
    for _ in range(args.repeat):  # alternate, so both see the same load on a shared machine
        wall, cpu, hw_rc = timed(hw_cmd, hw_out)
        hw_runs.append((wall, cpu))
        if sd_cmd:
            wall, cpu, sd_rc = timed(sd_cmd, sd_out)
            sd_runs.append((wall, cpu))
    cpu_name = platform.processor() or platform.machine()
    print(f"machine: {cpu_name}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"hepwatch analyze --json: {_fmt(hw_runs)}  rc {hw_rc}")
    if sd_runs:
        print(f"sip-doctor read --json : {_fmt(sd_runs)}  rc {sd_rc}")
        wall_ratio = min(w for w, _ in sd_runs) / min(w for w, _ in hw_runs)
        cpu_ratio = min(c for _, c in sd_runs) / min(c for _, c in hw_runs)
        verdict = "met" if wall_ratio >= 5 else "not met"
        print(
            f"speed: hepwatch is {wall_ratio:.2f}x as fast as sip-doctor (wall), "
            f"{cpu_ratio:.2f}x (CPU); target >= 5x: {verdict}"
        )

    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    hw = json.loads(hw_out.read_text())
    sd = json.loads(sd_out.read_text()) if sd_runs and sd_rc == 0 else None
    st = hw["stats"]
    print(
        f"hepwatch: {st['packets']} packets, {hw['messages']} messages, {len(hw['dialogs'])} "
        f"dialogs, {len(hw['session_changes'])} session changes, {len(hw['anomalies'])} "
        f"anomalies, rejected {st['rejected'] or 'none'}"
    )
    if sd is not None:
        n_find = sum(len(d.get("findings", [])) for d in sd.get("dialogs", []))
        print(f"sip-doctor: {len(sd.get('dialogs', []))} dialogs, {n_find} findings")
    if calls:
        print()
        hw_scores = score_hepwatch(calls, hw)
        sd_scores = score_sipdoctor(calls, sd) if sd is not None else None
        print_scores(calls, hw_scores, sd_scores)
    return 0 if hw_rc == 0 else 1


def timed(cmd: list[str], out: Path) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system of the child) and exit code of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as fh:
        t = time.perf_counter()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, check=False).returncode
        wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, rc


def _fmt(runs: list[tuple[float, float]]) -> str:
    walls = " ".join(f"{w:.2f}" for w, _ in runs)
    best_wall = min(w for w, _ in runs)
    best_cpu = min(c for _, c in runs)
    return f"best {best_wall:.3f} s wall, {best_cpu:.3f} s CPU  (wall of each run: {walls})"


if __name__ == "__main__":
    sys.exit(main())
