"""The sans-I/O state of one legs-topic partition in the second C.12 stage.

`LegPartition` is a `LegCorrelator` behind a window of the leg-record ids already fed. The
first stage is at-least-once towards the legs topic: after a crash it replays its input from
its last checkpoint and publishes those leg facts again (same ids, `records.record_id`). The
correlator ignores a repeated fact while it still remembers the leg's transaction, but a
repeat arriving after it pruned that transaction would look new; the window drops repeats
for `keep_s` of stream time (bounded by `max_ids`, counted when it overflows).

The whole object pickles: the stage checkpoints it with the partition's offset and output
length, as the first stage does its `Engine` (`consumers.checkpoint`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from consumers.legs.correlator import LegCorrelator, LegCorrelatorConfig
from consumers.records import AnomalyRecord, LegRecord


@dataclass(slots=True)
class LegPartitionStats:
    fed: int = 0
    repeats: int = 0  # facts seen before (first-stage replay), dropped
    ids_evicted: int = 0  # ids forgotten over `max_ids` before `keep_s` passed


class LegPartition:
    def __init__(
        self,
        config: LegCorrelatorConfig | None = None,
        *,
        keep_s: float = 3600.0,
        max_ids: int = 1_000_000,
    ) -> None:
        self.correlator = LegCorrelator(config)
        self.keep_us = int(keep_s * 1e6)
        self.max_ids = max_ids
        self.seen: OrderedDict[str, int] = OrderedDict()  # id -> detected_at_us, oldest first
        self.stats = LegPartitionStats()

    @property
    def now(self) -> int:
        return self.correlator.now

    def feed(self, rec: LegRecord) -> list[AnomalyRecord]:
        if rec.id in self.seen:
            self.stats.repeats += 1
            return []
        self.seen[rec.id] = rec.detected_at_us
        self.stats.fed += 1
        out = self.correlator.feed(rec)
        self._forget()
        return out

    def advance_to(self, ts_us: int) -> list[AnomalyRecord]:
        out = self.correlator.advance_to(ts_us)
        self._forget()
        return out

    def _forget(self) -> None:
        seen = self.seen
        horizon = self.correlator.now - self.keep_us
        while seen:
            oldest = next(iter(seen.values()))
            if oldest > horizon and len(seen) <= self.max_ids:
                break
            if oldest > horizon:
                self.stats.ids_evicted += 1
            seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self.correlator)


__all__ = ["LegPartition", "LegPartitionStats"]
