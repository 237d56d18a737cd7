"""The copy its sender put on the wire and the copy the proxy delivered, picked once per
logical message for all the detectors that ask.

`dedup.sent_and_delivered` picks them from the copies' hops (else addresses, else Via
depth). C.8 and the C.10/C.11 ledger and targets all ask about the same INVITE, UPDATE or
2xx (and, at a 2xx, about its request) in one engine step, so the pick is remembered for the
messages last asked about. It holds while no copy is folded in and the hops are not
classified again (`Deduplicator.classify` and `hops_of` give a message a new hops list).
"""

from __future__ import annotations

from typing import Final

from consumers.dedup import LogicalMessage
from consumers.dedup import sent_and_delivered as _pick
from consumers.observation import Observation

_MAX: Final = 64  # (message, toward) pairs remembered; a step asks about two or three

Address = tuple[str, int]
_picked: dict[
    tuple[int, Address | None],
    tuple[LogicalMessage, int, list[str], tuple[Observation, Observation]],
] = {}


def sent_and_delivered(
    lm: LogicalMessage, toward: Address | None = None
) -> tuple[Observation, Observation]:
    """`dedup.sent_and_delivered(lm, toward)`, remembered."""
    key = (id(lm), toward)
    hit = _picked.get(key)
    if hit is not None and hit[0] is lm and hit[1] == len(lm.observations) and hit[2] is lm.hops:
        return hit[3]
    found = None
    if toward is not None:
        # `toward` only narrows the delivered copies to those sent there, keeping their
        # order: when the unnarrowed pick already delivered there, it is the narrowed one.
        hit = _picked.get((id(lm), None))
        if (
            hit is not None
            and hit[0] is lm
            and hit[1] == len(lm.observations)
            and hit[2] is lm.hops
            and hit[3][1].dst == toward
        ):
            found = hit[3]
    if found is None:
        found = _pick(lm, toward)
    if len(_picked) >= _MAX:
        _picked.clear()
    _picked[key] = (lm, len(lm.observations), lm.hops, found)
    return found
