"""Calls with anomalies known by construction and the capture a proxy's HEP mirror makes
of them: the test-side source of realistic traffic for benchmarks and end-to-end tests.

Each scenario (`sc_*`) builds one call on a `sipflow.Flow` (proxy-mirrored copies, virtual
clock) and returns a `Call` naming the PROTOCOL.md C anomalies it must raise and its
session changes. `make_calls` mixes them; `write_capture` writes calls as a pcap of HEPv3
over UDP from the proxy to a collector, as a tap on that link sees Kamailio's siptrace.
`shift_call` moves a call in time (captures placed around the wall clock).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt
from sipflow import Flow, Sent, sdp

from collector.hep.fast import encode_v3
from collector.hep.model import AF_INET, PROTO_SIP, HepPacket
from consumers.observation import Observation

PROXY = ("10.0.0.1", 5060)
COLLECTOR = ("10.0.0.100", 9060)
FULL_ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, PRACK"
NO_UPDATE_ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"
TIMER_REQ = ("Supported: timer", "Session-Expires: 90;refresher=uac", "Min-SE: 90")
TIMER_2XX = ("Require: timer", "Supported: timer", "Session-Expires: 90;refresher=uac")


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
        o.replace(payload=o.payload.replace(b"sip:a@", a).replace(b"sip:b@", b))
        for o in call.flow.obs
    ]


def write_capture(calls: list[Call], path: Path, number_from: int = 0) -> int:
    """HEPv3 over UDP from the proxy to the collector, as a tap on that link sees it.

    Callers and callees get numbers `number_from`, `number_from + 1`, ... in call order;
    captures meant for the same collector should not reuse them."""
    obs = sorted(
        (o for n, c in enumerate(calls, number_from) for o in _numbered(c, n)),
        key=lambda o: o.ts_us,
    )
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


# --- placing calls in time -----------------------------------------------------------------------


def shift_call(call: Call, seconds: float) -> Call:
    """Move every copy of the call `seconds` later (earlier when negative)."""
    dt = round(seconds * 1_000_000)
    call.flow.obs = [o.replace(ts_us=o.ts_us + dt) for o in call.flow.obs]
    return call


def response_times(call: Call, status: int) -> list[float]:
    """Capture times (epoch seconds) of the copies of the call's responses with `status`."""
    head = f"SIP/2.0 {status} ".encode()
    return [o.ts_us / 1e6 for o in call.flow.obs if o.payload.startswith(head)]


def time_span(call: Call) -> tuple[float, float]:
    """The first and last capture times of the call (epoch seconds)."""
    times = [o.ts_us for o in call.flow.obs]
    return min(times) / 1e6, max(times) / 1e6
