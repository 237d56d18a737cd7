"""The consumer's cycle-collector policy (`consumers.runtime`): automatic collection off,
full sweeps on a timer or on growth, each counted, and the metrics that show them."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry

from consumers import runtime

ROOT = Path(__file__).resolve().parents[1]


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def _wait(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def tuned():
    yield runtime
    runtime.restore_gc()


def test_tune_gc_turns_automatic_collection_off_and_a_timer_sweeps_cycles(tuned) -> None:
    runtime.tune_gc(interval_s=0.5, growth=10**12)
    assert not gc.isenabled()
    before = runtime.sweep_stats.sweeps
    ref = _cycle()
    assert ref() is not None  # a cycle outlives its last outside reference: nothing collects
    assert _wait(lambda: ref() is None), "the timed sweep did not free the cycle"
    assert runtime.sweep_stats.sweeps > before
    assert runtime.sweep_stats.collected >= 2


def test_growth_triggers_a_sweep_before_the_interval(tuned) -> None:
    runtime.tune_gc(interval_s=3600, growth=20_000)
    runtime.sweep_stats.survivors = 0
    before = runtime.sweep_stats.sweeps
    keep = [[i] for i in range(30_000)]  # tracked containers, alive: growth, no garbage
    ref = _cycle()
    assert _wait(lambda: runtime.sweep_stats.sweeps > before and ref() is None)
    assert len(keep) == 30_000


def test_growth_is_measured_against_the_heap_the_last_sweep_left(tuned) -> None:
    runtime.tune_gc(interval_s=3600, growth=20_000)
    runtime.sweep_stats.survivors = 200_000  # a big heap: 30k new objects are not enough
    before = runtime.sweep_stats.sweeps
    keep = [[i] for i in range(30_000)]
    time.sleep(2.5)
    assert runtime.sweep_stats.sweeps == before
    runtime.sweep_stats.survivors = 0
    assert _wait(lambda: runtime.sweep_stats.sweeps > before)
    assert len(keep) == 30_000


def test_a_sweep_counts_what_it_found() -> None:
    gc.collect()
    refs = [_cycle() for _ in range(10)]
    found = runtime.sweep()
    assert found >= 20 and all(r() is None for r in refs)
    assert runtime.sweep_stats.last_collected == found
    assert runtime.sweep_stats.last_seconds >= 0


def test_restore_gc_stops_the_thread_and_collects_automatically_again(tuned) -> None:
    runtime.tune_gc(interval_s=3600)
    runtime.restore_gc()
    assert gc.isenabled()
    assert not any(t.name == "gc-sweep" for t in __import__("threading").enumerate())


def test_metrics_of_the_sweeps() -> None:
    registry = CollectorRegistry()
    registry.register(runtime.GcSweepCollector())
    runtime.sweep()
    sweeps = registry.get_sample_value("hepwatch_gc_sweeps_total")
    assert sweeps is not None and sweeps >= 1
    assert registry.get_sample_value("hepwatch_gc_collected_objects_total") is not None
    assert registry.get_sample_value("hepwatch_gc_sweep_seconds_total") is not None
    assert registry.get_sample_value("hepwatch_gc_tracked_objects") is not None


def test_sigusr1_dumps_every_thread_stack_and_the_process_goes_on():
    code = (
        "import os, signal, threading, time\n"
        "from consumers.runtime import dump_stacks_on_sigusr1\n"
        "dump_stacks_on_sigusr1()\n"
        "def parked_in_worker():\n"
        "    time.sleep(5)\n"
        "threading.Thread(target=parked_in_worker, daemon=True).start()\n"
        "time.sleep(0.2)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "time.sleep(0.2)\n"
        "print('still running')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still running"
    assert "parked_in_worker" in done.stderr  # the other thread's stack too
    assert "Current thread" in done.stderr
