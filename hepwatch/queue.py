"""The in-process queue `hepwatch run` puts between its HEP listeners and its analysis thread.

It stands where Kafka stands in the distributed flow and takes what the collector's
`Ingest` publishes (the Kafka record: HEPv3 bytes, key, capture time, headers), so the
listeners and the accept path are the collector's own. Like a one-partition topic it gives
every record the next offset, so rows carry `src_offset` and a checkpoint's offset means
"everything before this was processed".

Bounded: when `max_records` are waiting, publishers wait for room (UDP threads stop reading,
so the kernel buffer absorbs the burst; the TCP listener stops the event loop briefly) and
every wait is counted and logged at a bounded rate. Nothing accepted is ever dropped;
after `close()` a publish raises `QueueClosed` instead of waiting forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from collector.hep.speedups import BatchRecord
from collector.ingest import Headers

log = logging.getLogger("hepwatch.run.queue")

# A queued record: (HEPv3 value, headers). The key and timestamp are not needed downstream
# (one partition; the capture time is in the HEP packet).
QueueItem = tuple[bytes, Headers]

_FULL_LOG_INTERVAL_S = 10.0


class QueueClosed(RuntimeError):
    """Publish after close(): the analysis side has stopped taking records."""


@dataclass(slots=True)
class QueueStats:
    published: int = 0
    taken: int = 0
    full_waits: int = 0  # publishes that had to wait for room
    full_wait_seconds: float = 0.0
    high_water: int = 0  # largest depth seen


class RecordQueue:
    """A bounded FIFO with offsets; many publishing threads, one taking thread."""

    def __init__(self, max_records: int, next_offset: int = 0) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.max_records = max_records
        self.stats = QueueStats()
        self._items: deque[QueueItem] = deque()
        self._head_offset = next_offset  # offset of _items[0]
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._last_full_log = 0.0

    # -- publishing (Ingest's PublishFn / PublishManyFn) -----------------------------------

    def publish(self, key: bytes | None, value: bytes, ts_ms: int, headers: Headers) -> None:
        with self._cond:
            if len(self._items) >= self.max_records:
                self._wait_for_room()
            self._items.append((value, headers))
            self._published(1)

    def publish_many(
        self, records: Sequence[BatchRecord], keys: Sequence[bytes], headers: Sequence[Headers]
    ) -> None:
        items = [(rec[0], headers[rec[3]]) for rec in records]
        with self._cond:
            start = 0
            while start < len(items):
                room = self.max_records - len(self._items)
                if room <= 0:
                    self._wait_for_room()
                    continue
                part = items[start : start + room]
                self._items.extend(part)
                start += len(part)
                self._published(len(part))

    def _published(self, n: int) -> None:
        st = self.stats
        st.published += n
        depth = len(self._items)
        if depth > st.high_water:
            st.high_water = depth
        self._cond.notify_all()

    def _wait_for_room(self) -> None:
        """Called with the lock held and the queue full; returns once there is room."""
        st = self.stats
        st.full_waits += 1
        now = time.monotonic()
        if now - self._last_full_log >= _FULL_LOG_INTERVAL_S:
            self._last_full_log = now
            log.warning(
                "queue full (%d records): listeners wait for the analysis to catch up "
                "(%d waits so far); nothing is dropped here, but senders may see loss",
                self.max_records,
                st.full_waits,
            )
        while len(self._items) >= self.max_records:
            if self._closed:
                raise QueueClosed("the analysis thread stopped; record not accepted")
            self._cond.wait(0.5)
        st.full_wait_seconds += time.monotonic() - now

    # -- taking ----------------------------------------------------------------------------

    def take(self, max_records: int, timeout: float) -> tuple[int, list[QueueItem]]:
        """Up to `max_records` items and the offset of the first; waits up to `timeout`
        for the first one. The items are removed: the caller owns them."""
        with self._cond:
            if not self._items and timeout > 0 and not self._closed:
                self._cond.wait(timeout)
            items = self._items
            n = min(len(items), max_records)
            first = self._head_offset
            if n == 0:
                return first, []
            if n == len(items):
                out = list(items)
                items.clear()
            else:
                out = [items.popleft() for _ in range(n)]
            self._head_offset += n
            self.stats.taken += n
            self._cond.notify_all()  # room for waiting publishers
            return first, out

    def close(self) -> None:
        """No more waiting for room: blocked and later publishers get QueueClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- state -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def next_offset(self) -> int:
        """The offset the next published record gets."""
        with self._cond:
            return self._head_offset + len(self._items)

    @property
    def taken_offset(self) -> int:
        """The offset of the next record `take` returns."""
        return self._head_offset
