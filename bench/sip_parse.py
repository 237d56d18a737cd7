"""Benchmark of the SIP and SDP parsers (consumers/sip). Prints messages per second.

Inputs are distinct messages, as a consumer sees them: the sample INVITE (and the sample
mix of 11 messages from tests/sipsamples.py) rewritten with a fresh Call-ID, tags, Via
branch and CSeq for every copy, so nothing that is unique per call or transaction can be
served from the parser's memo tables. Values that really do repeat across calls (Allow,
Supported, Content-Type, Session-Expires, the Record-Route of the proxy) repeat here too.

Tiers, each on a fresh parse (accessors cache per message):

  parse          parse_message only: start line, header split, Content-Length framing
  identity       + Call-ID, CSeq, From/To tags, top Via branch (dedup, transactions)
  dialog         + Contact, Record-Route, Allow, Supported, Require, Session-Expires,
                   Min-SE, RSeq, RAck, User-Agent (what a dialog tracker reads)
  dialog+valid   + malformed (full validation: every header against its grammar)
  dialog+sdp     dialog tier + SDP: direction, codecs, port, hold flag of every stream
  full           dialog + validation + SDP
  sdp only       parse_sdp on the INVITE's SDP body

Run: .venv/bin/python bench/sip_parse.py [--seconds 2] [--copies 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sipsamples import ALICE_TAG, ALL, BOB_TAG, CALL_ID, INVITE  # noqa: E402

from consumers.sip import (  # noqa: E402
    SipMessage,
    codecs,
    effective_direction,
    parse_message,
    parse_sdp,
)


def distinct(template: bytes, copies: int) -> list[bytes]:
    """`copies` variants of a message, each with its own Call-ID, tags, branches, CSeq."""
    out = []
    for i in range(copies):
        data = template.replace(CALL_ID.encode(), f"{i:08x}-{CALL_ID}".encode())
        data = data.replace(ALICE_TAG.encode(), f"{ALICE_TAG}{i}".encode())
        data = data.replace(BOB_TAG.encode(), f"{BOB_TAG}{i}".encode())
        data = data.replace(b"z9hG4bK", f"z9hG4bK{i:x}x".encode())
        data = data.replace(b"CSeq: 3141", f"CSeq: {i % 9 + 1}3141".encode())
        out.append(data)
    return out


def dialog_fields(m: SipMessage) -> tuple[object, ...]:
    return (
        m.call_id, m.cseq, m.from_tag, m.to_tag, m.top_via_branch, m.method, m.status_code,
        m.contact, m.record_route, m.allow, m.supported, m.require, m.session_expires,
        m.min_se, m.rseq, m.rack, m.user_agent,
    )  # fmt: skip


def sdp_summary(m: SipMessage) -> object:
    sdp = m.sdp
    if sdp is None:
        return None
    return [(effective_direction(x), codecs(x), x.port, x.legacy_hold) for x in sdp.media]


def identity(data: bytes) -> object:
    m = parse_message(data)
    return (m.call_id, m.cseq, m.from_tag, m.to_tag, m.top_via_branch, m.method, m.status_code)


def dialog(data: bytes) -> object:
    return dialog_fields(parse_message(data))


def dialog_valid(data: bytes) -> object:
    m = parse_message(data)
    return dialog_fields(m), m.malformed


def dialog_sdp(data: bytes) -> object:
    m = parse_message(data)
    return dialog_fields(m), sdp_summary(m)


def full(data: bytes) -> object:
    m = parse_message(data)
    return dialog_fields(m), m.malformed, sdp_summary(m)


def rate(fn: Callable[[bytes], object], inputs: list[bytes], seconds: float) -> float:
    """Best of 5 passes over `inputs` (repeated to fill about seconds/5), calls per second."""
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        done = 0
        while True:
            for data in inputs:
                fn(data)
            done += len(inputs)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 5:
                break
        best = max(best, done / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    parser.add_argument("--copies", type=int, default=2000, help="distinct copies per message")
    args = parser.parse_args()
    invites = distinct(INVITE, args.copies)
    mix = [m for template in ALL.values() for m in distinct(template, args.copies // 10)]
    body = parse_message(INVITE).body
    assert not parse_message(invites[-1]).malformed
    print(
        f"INVITE: {len(INVITE)} bytes incl. {len(body)} bytes SDP, {len(invites)} distinct "
        f"copies; mix: {len(ALL)} kinds x {args.copies // 10} copies"
    )
    print(f"{'tier':<14}{'INVITE msg/s':>14}{'us/INVITE':>11}{'mix msg/s':>12}")
    tiers: list[tuple[str, Callable[[bytes], object]]] = [
        ("parse", parse_message),
        ("identity", identity),
        ("dialog", dialog),
        ("dialog+valid", dialog_valid),
        ("dialog+sdp", dialog_sdp),
        ("full", full),
    ]
    for name, fn in tiers:
        one = rate(fn, invites, args.seconds)
        many = rate(fn, mix, args.seconds)
        print(f"{name:<14}{one:>14,.0f}{1e6 / one:>11.1f}{many:>12,.0f}")
    sdp_rate = rate(parse_sdp, [body], args.seconds)
    print(f"{'sdp only':<14}{sdp_rate:>14,.0f}{1e6 / sdp_rate:>11.1f}")


if __name__ == "__main__":
    main()
