"""Deduplicator: classify (hops, origin and sender/receiver times of a logical message's
copies, PROTOCOL.md C.0 rules 2 and 3) held to the rule written out copy by copy, and the
open-message table across expiry."""

from __future__ import annotations

import random

from consumers.dedup import (
    HOP_IN,
    HOP_OUT,
    HOP_UNKNOWN,
    ORIGIN_ENDPOINT,
    ORIGIN_PROXY,
    Deduplicator,
    LogicalMessage,
)
from consumers.observation import Observation
from consumers.sip import parse_message

MSG = parse_message(b"OPTIONS sip:a@x SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")
ADDRS = [("10.0.0.1", 5060), ("10.0.0.1", 5070), ("10.0.0.2", 5060), ("10.0.0.3", 5060)]


def _reference(dedup: Deduplicator, lm: LogicalMessage) -> tuple[tuple[int, int], list[str], str]:
    """The rule copy by copy: `hop` for each, the earliest in-copy and out-copy times (a
    zero time counts as none seen yet), the first and last times."""
    hops = [dedup.hop(o) for o in lm.observations]
    t_in = t_out = 0
    times = [o.ts_us for o in lm.observations]
    for h, ts in zip(hops, times, strict=True):
        if h == HOP_IN and (not t_in or ts < t_in):
            t_in = ts
        elif h == HOP_OUT and (not t_out or ts < t_out):
            t_out = ts
    proxy = t_out and not t_in and HOP_UNKNOWN not in hops
    origin = ORIGIN_PROXY if proxy else ORIGIN_ENDPOINT
    return (t_in or min(times), t_out or max(times)), hops, origin


def test_classify_equals_the_copy_by_copy_rule():
    rng = random.Random(5)
    for _ in range(3000):
        configured = set(rng.sample(ADDRS, rng.randint(0, 2)))
        dedup = Deduplicator(1_000_000, configured)
        for node in ("n1", "n2"):
            if rng.random() < 0.6:
                dedup.proxies[node] = set(rng.sample(ADDRS, rng.randint(0, 2)))
        copies = []
        for _ in range(rng.randint(1, 4)):
            src, dst = rng.sample(ADDRS, 2)
            ts = rng.choice([0, 5, 10, 10, 20, 30])
            node = rng.choice(["n1", "n2", "n3"])
            copies.append(Observation(ts, *src, *dst, "udp", 1, node, "", "r", MSG.raw))
        lm = LogicalMessage(MSG, ("k",), copies[0], 1)
        lm.observations = copies
        lm.copies = [1] * len(copies)
        times, hops, origin = _reference(dedup, lm)
        assert dedup.classify(lm) == times
        assert lm.hops == hops
        assert lm.origin == origin
        assert dedup.hops_of(lm) == hops


def test_expiring_a_message_keeps_a_later_one_with_the_same_key_open():
    # A copy outside the first message's window opens a second message with the same key;
    # when the first expires, the second must stay open for its own copies.
    window = 1_000_000
    dedup = Deduplicator(window)
    msg = parse_message(
        b"OPTIONS sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx\r\n"
        b"Call-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )

    def copy(ts: int, src: tuple[str, int]) -> Observation:
        return Observation(ts, *src, "10.0.0.1", 5060, "udp", 1, "n", "", f"r{ts}", msg.raw)

    first = dedup.add(msg, copy(0, ("10.0.0.2", 5060)), 0)
    second = dedup.add(msg, copy(window + 10, ("10.0.0.3", 5060)), 0)
    assert first is not None and second is not None and first.key == second.key
    first.released = second.released = True
    assert dedup.expire(window + 1) == [first]
    assert len(dedup) == 1
    assert dedup.add(msg, copy(window + 20, ("10.0.0.4", 5060)), window + 20) is None
    assert len(second.observations) == 2
    assert dedup.expire(3 * window) == [second]
    assert len(dedup) == 0
