"""Frozen calls: an idle established call kept as one small bytes blob.

A call with no live transaction (all completed and past 64*T1) only waits for its next
message or timer, often for minutes. Its object graph (Call, Dialog, the initial
Transaction, detector state in `ext`) is ~5 KB of small Python objects; frozen, it is the
pickle of that graph, raw-deflated against a preset dictionary, about 150 bytes. Pickle
keeps every object, value and shared reference of the call exactly, so a thawed call is
indistinguishable from one never frozen (its objects are new, which nothing outside the
call can notice: timers and records refer to calls by Call-ID, never by object).

Blob layout: 8 bytes last_ts (signed little-endian, so idle expiry reads it without
thawing), 1 byte dialog count (capped at 255), then the deflated pickle. The dictionary is
the pickle of the first call frozen (class paths, slot names and values repeat from call to
call); the `Freezer` keeps it and is pickled with the tracker, so blobs restored from a
checkpoint thaw with the dictionary they were made with.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from consumers.tracking.model import Call

_WBITS: Final = -14  # raw deflate, 16 KB window: the dictionary and a call's pickle both fit
_MEM_LEVEL: Final = 4  # small compressor state: creating one is most of the cost
_LEVEL: Final = 1
_HEADER: Final = 9
_DICT_MAX: Final = 1 << 14


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Freezer:
    __slots__ = ("frozen", "thawed", "zdict")

    def __init__(self) -> None:
        self.zdict = b""  # learned from the first call frozen
        self.frozen = 0
        self.thawed = 0

    def freeze(self, call: Call) -> bytes:
        import pickle  # here: a process that never freezes (a short analyze) never loads it

        data = pickle.dumps(call, pickle.HIGHEST_PROTOCOL)
        if not self.zdict:
            self.zdict = data[-_DICT_MAX:]
        comp = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zdict=self.zdict)
        self.frozen += 1
        head = call.last_ts.to_bytes(8, "little", signed=True) + bytes(
            (min(len(call.dialogs), 255),)
        )
        return head + comp.compress(data) + comp.flush()

    def thaw(self, blob: bytes) -> Call:
        import pickle

        dec = zlib.decompressobj(_WBITS, zdict=self.zdict)
        self.thawed += 1
        return pickle.loads(dec.decompress(blob[_HEADER:]) + dec.flush())  # type: ignore[no-any-return]


def last_ts(blob: bytes) -> int:
    """The frozen call's last activity time (its idle expiry reference)."""
    return int.from_bytes(blob[:8], "little", signed=True)


def dialog_count(blob: bytes) -> int:
    return blob[8]


def release(call: Call) -> None:
    """Break the reference cycles of a call no longer used (frozen or removed), so that it
    is freed at once: with the consumer's GC thresholds, cyclic garbage that reached the
    oldest generation would wait minutes for a full collection. Call <-> Dialog <->
    Transaction are the cycles; detector state hangs off `ext` and reaches back only
    through them. Emptying the containers and the optional links cuts every cycle (the
    back links `call`/`dialog` stay: typed, compiled attributes refuse None)."""
    for dialog in call.dialogs.values():
        dialog.offer = None
        dialog.pending_invite[0] = dialog.pending_invite[1] = None
        dialog.pending_update[0] = dialog.pending_update[1] = None
        dialog.ext = None
    call.dialogs.clear()
    call.transactions.clear()
    call.initial = None
    call.ext = None
