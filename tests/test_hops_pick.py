"""detectors.hops: the remembered sender/delivered pick is dedup's pick, with or without a
destination asked for, whatever was asked before."""

from __future__ import annotations

import itertools
import random

from consumers.dedup import HOP_IN, HOP_OUT, HOP_UNKNOWN, LogicalMessage
from consumers.dedup import sent_and_delivered as dedup_pick
from consumers.detectors.hops import sent_and_delivered
from consumers.observation import Observation
from consumers.sip import parse_message

PAYLOAD = (
    b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: x\r\n"
    b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
ADDRS = [("10.0.0.1", 5060), ("10.0.0.2", 5060), ("10.0.0.3", 5060), ("10.0.0.4", 5070)]


def _lm(rng: random.Random) -> LogicalMessage:
    copies = []
    for n in range(rng.randint(1, 4)):
        src, dst = rng.sample(ADDRS, 2)
        copies.append(Observation(n, *src, *dst, "udp", 1, "n", "", f"r/{n}", PAYLOAD))
    lm = LogicalMessage(parse_message(PAYLOAD), ("k",), copies[0], 0)
    lm.observations = copies
    if rng.random() < 0.7:
        lm.hops = [rng.choice((HOP_IN, HOP_OUT, HOP_UNKNOWN)) for _ in copies]
    return lm


def test_remembered_pick_is_dedups_pick_in_any_order_of_questions() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        lm = _lm(rng)
        asks = [None, *rng.sample(ADDRS, 2)]
        for toward in itertools.chain(rng.sample(asks, len(asks)), asks):
            assert sent_and_delivered(lm, toward) == dedup_pick(lm, toward), (lm.hops, toward)
