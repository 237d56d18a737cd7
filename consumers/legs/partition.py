"""The sans-I/O state of one legs-topic partition in the second C.12 stage.

`LegPartition` is a `LegCorrelator` behind a window of the leg-record ids already fed, with
its stream time driven by the first stage's stream marks (`consumers.legs.codec.StreamMark`).

Repeats. The first stage is at-least-once towards the legs topic: after a crash it replays
its input from its last checkpoint and publishes those leg facts again (same ids,
`record_ids.record_id`). The correlator ignores a repeated fact while it still remembers the
leg's transaction, but a repeat arriving after it pruned that transaction would look new;
the window drops repeats for `keep_s` of stream time (bounded by `max_ids`, counted when it
overflows).

Stream time. The legs of one call come from different HEP partitions, each processed by
whichever consumer owns it, at its own pace: after a consumer crash one partition may be
read again from its checkpoint many seconds after the others moved on. A fact's own time
therefore says nothing about the facts other partitions have yet to publish, and deciding
on it (or on the wall clock) would report a relayed UPDATE as absorbed because the other
leg's re-INVITE is still unread. So the correlator's clock is the lowest mark over every
partition of the HEP topic (`partitions` in the marks says how many): a decision waits
until every partition has processed past its deadline. A partition whose mark has not risen
for `stall_s` seconds of wall clock (its consumers are gone, or it was never consumed) stops
holding the others back: it is listed in `stalled` (the stage logs it and shows it in its
metrics), and its facts, if they ever come, are late. With no source moving at all, the
stage falls back to the wall clock (`idle_clock`). Wall-clock times are passed in by the
caller; nothing here reads a clock.

The whole object pickles: the stage checkpoints it with the partition's offset and output
length, as the first stage does its `Engine` (`consumers.checkpoint`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from consumers.legs.codec import StreamMark
from consumers.legs.correlator import LegCorrelator, LegCorrelatorConfig
from consumers.records import AnomalyRecord, LegRecord

Source = tuple[str, int]  # (HEP topic, partition)


@dataclass(slots=True)
class LegPartitionStats:
    fed: int = 0
    repeats: int = 0  # facts seen before (first-stage replay), dropped
    ids_evicted: int = 0  # ids forgotten over `max_ids` before `keep_s` passed
    marks: int = 0  # stream marks read


class LegPartition:
    def __init__(
        self,
        config: LegCorrelatorConfig | None = None,
        *,
        keep_s: float = 3600.0,
        max_ids: int = 1_000_000,
        stall_s: float = 120.0,
    ) -> None:
        self.correlator = LegCorrelator(config, follow_facts=False)
        self.keep_us = int(keep_s * 1e6)
        self.max_ids = max_ids
        self.stall_s = stall_s
        self.seen: OrderedDict[str, int] = OrderedDict()  # id -> detected_at_us, oldest first
        self.stats = LegPartitionStats()
        self.marks: dict[Source, int] = {}  # the highest mark of each HEP partition
        self.rose_at: dict[Source, float] = {}  # wall clock when that mark last rose
        self.topics: dict[str, tuple[int, float]] = {}  # topic -> (partitions, first seen)
        self.stalled: list[Source] = []  # sources left out of the clock (see the docstring)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A checkpoint written before stream marks: the correlator followed its facts.
        self.__dict__.update(state)
        for name, value in (("marks", {}), ("rose_at", {}), ("topics", {}), ("stalled", [])):
            self.__dict__.setdefault(name, value)
        self.__dict__.setdefault("stall_s", 120.0)
        self.correlator.follow_facts = False

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

    def mark(self, mark: StreamMark, wall_s: float) -> list[AnomalyRecord]:
        """A first-stage partition is done up to `mark.until_us`; returns what that decides."""
        self.stats.marks += 1
        src = mark.source
        known = self.topics.get(mark.topic)
        if known is None or known[0] != mark.partitions:
            # a topic's partition count only grows; the first sighting starts the grace
            self.topics[mark.topic] = (mark.partitions, known[1] if known else wall_s)
        if mark.until_us > self.marks.get(src, -1):
            self.marks[src] = mark.until_us
            self.rose_at[src] = wall_s
        return self.tick(wall_s)

    def tick(self, wall_s: float) -> list[AnomalyRecord]:
        """Move stream time to the lowest mark of the sources still moving."""
        clock = self._mark_clock(wall_s)
        if clock is None or clock <= self.correlator.now:
            return []
        return self.advance_to(clock)

    def _mark_clock(self, wall_s: float) -> int | None:
        low: int | None = None
        stalled: list[Source] = []
        for topic, (partitions, first_seen) in self.topics.items():
            for p in range(partitions):
                src = (topic, p)
                t = self.marks.get(src)
                since = self.rose_at.get(src, first_seen)
                if wall_s - since >= self.stall_s:
                    stalled.append(src)
                    continue
                if t is None:
                    self.stalled = stalled
                    return None  # a partition not heard from yet, still in its grace
                low = t if low is None else min(low, t)
        self.stalled = stalled
        return low

    def moving(self, wall_s: float) -> bool:
        """Whether any source's mark rose within `stall_s` (else the wall clock rules)."""
        return any(wall_s - t < self.stall_s for t in self.rose_at.values())

    def restored(self, wall_s: float) -> None:
        """After a restore: every known source gets a fresh grace (wall times in a checkpoint
        are from before the stop, and the first stage needs time to start again)."""
        for src in self.rose_at:
            self.rose_at[src] = wall_s
        for topic, (partitions, _) in self.topics.items():
            self.topics[topic] = (partitions, wall_s)

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


__all__ = ["LegPartition", "LegPartitionStats", "Source"]
