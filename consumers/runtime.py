"""Process settings for the long-running services: how the cycle collector runs, and a
stack dump on SIGUSR1 (`dump_stacks_on_sigusr1`) for a process that does not stop.

The engine keeps hundreds of thousands of small long-lived objects (calls, dialogs, their
messages), and it breaks its own reference cycles: a released call clears its containers
(tracking/freezer.py `release`), and parsed headers are tuples the collector does not track.
So the automatic collector, which rescans every container created since its last pass each
time 100k more exist, finds nothing in steady state: over 260k HEP records of the consumer
bench its 42 young collections freed 0 objects and took 9% of the CPU time.

`tune_gc` therefore turns the automatic collector off and sweeps instead: a full collection
every `SWEEP_INTERVAL_S` of wall time, or sooner once the tracked objects have grown by
`SWEEP_GROWTH`, or by as many as the last sweep left if that is more (checked every
second), run by a daemon thread. A sweep walks the whole heap (bench/consumer: ~0.25 s for
the heap of 20,000 lingering calls), so it is a pause the size of the heap once a minute
instead of a rescan of every new object while it is young. Reference
counting still frees everything that is not a cycle at once; a cycle made anywhere in the
process (a library, an exception kept with its traceback) lives until the next sweep. Each
sweep is counted with what it found (`sweep_stats`, and the `hepwatch_gc_*` metrics of
`GcSweepCollector`): objects collected every sweep would mean a new cycle in the hot path.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0
SWEEP_GROWTH = 10_000_000  # new tracked objects (~1 GB of small objects) since the last sweep
_CHECK_S = 1.0


@dataclass
class SweepStats:
    sweeps: int = 0
    collected: int = 0  # objects the sweeps found unreachable (cyclic garbage)
    seconds: float = 0.0  # total time in sweeps
    last_seconds: float = 0.0
    last_collected: int = 0
    survivors: int = 0  # tracked objects left by the last sweep


sweep_stats = SweepStats()
_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()
_policy = {"interval_s": SWEEP_INTERVAL_S, "growth": SWEEP_GROWTH}


def sweep() -> int:
    """One full collection now, counted in `sweep_stats`; the number of objects it freed."""
    with _lock:
        start = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - start
        s = sweep_stats
        s.survivors = len(gc.get_objects(generation=2))
        s.sweeps += 1
        s.collected += found
        s.seconds += took
        s.last_seconds, s.last_collected = took, found
    if found:
        log.info("gc sweep: %d unreachable objects freed in %.3f s", found, took)
    return found


def _sweeper(stop: threading.Event) -> None:
    last = time.monotonic()
    while not stop.wait(_CHECK_S):
        now = time.monotonic()
        # Growth counts from the heap the last sweep left: a sweep walks the whole heap, so
        # sweeping every fixed number of new objects would be quadratic while a heap grows.
        growth = max(_policy["growth"], sweep_stats.survivors)
        if now - last >= _policy["interval_s"] or gc.get_count()[0] >= growth:
            sweep()
            last = time.monotonic()


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` writes every thread's Python stack to stderr (the log), and the
    process goes on: what an operator needs when a consumer does not stop or stops moving."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def tune_gc(interval_s: float = SWEEP_INTERVAL_S, growth: int = SWEEP_GROWTH) -> None:
    """Collect once, freeze what start-up made (never scanned again), switch the automatic
    collector off and sweep every `interval_s`, or after `growth` new tracked objects, from
    a daemon thread (one per process; a later call sets the policy it follows)."""
    global _thread
    gc.collect()
    gc.freeze()
    gc.disable()
    with _lock:
        _policy["interval_s"], _policy["growth"] = interval_s, growth
        if _thread is None or not _thread.is_alive():
            _stop.clear()
            _thread = threading.Thread(target=_sweeper, args=(_stop,), name="gc-sweep", daemon=True)
            _thread.start()


def restore_gc() -> None:
    """Undo `tune_gc`: stop the sweeping thread, unfreeze, automatic collection back on."""
    global _thread
    with _lock:
        thread, _thread = _thread, None
        _stop.set()
    if thread is not None:
        thread.join()
    gc.unfreeze()
    gc.enable()


class GcSweepCollector(Collector):
    """`hepwatch_gc_*` metrics of the sweeps, for a service's registry."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = sweep_stats
        yield CounterMetricFamily(
            "hepwatch_gc_sweeps", "Full cycle-collector sweeps run", value=s.sweeps
        )
        yield CounterMetricFamily(
            "hepwatch_gc_collected_objects",
            "Unreachable (cyclic) objects the sweeps freed",
            value=s.collected,
        )
        yield CounterMetricFamily(
            "hepwatch_gc_sweep_seconds", "Time spent in sweeps", value=s.seconds
        )
        yield GaugeMetricFamily(
            "hepwatch_gc_tracked_objects",
            "Container objects created since the last sweep, net of those freed",
            value=gc.get_count()[0],
        )
