"""Ended calls are freed by reference counting, not left to the cycle collector.

Call, Dialog and Transaction refer to each other; `hepwatch consume` runs the cycle
collector rarely (`consumers.runtime.tune_gc`), so a call that ends with its cycles intact
would sit in memory until a full collection. The engine breaks them when the call's
records are out (`freezer.release`, as for frozen calls).
"""

from __future__ import annotations

import gc

from sipflow import Flow

from consumers.engine import Engine, EngineConfig
from consumers.records import DialogRecord


def _calls(n: int) -> list:
    obs = []
    for i in range(n):
        flow = Flow(f"rel-{i}@test", caller_tag=f"a{i}", callee_tag=f"b{i}")
        flow.at(i * 0.01)
        flow.setup()
        flow.wait(1.0)
        flow.bye("A")
        obs += flow.obs
    return sorted(obs, key=lambda o: o.ts_us)


def test_ended_calls_leave_no_cyclic_garbage():
    obs = _calls(50)
    engine = Engine(EngineConfig())
    gc.collect()
    gc.disable()
    try:
        records = engine.feed_many(obs)
        records += engine.advance_to(obs[-1].ts_us + 120_000_000)  # past every linger
        assert len(engine.tracker) == 0
        assert sum(isinstance(r, DialogRecord) for r in records) == 50
        garbage = gc.collect()
    finally:
        gc.enable()
    # 50 unreleased calls leave about 9,500 objects (each Call <-> Dialog <-> Transaction
    # web with its messages and detector state)
    assert garbage == 0, garbage
