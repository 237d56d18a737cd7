"""The engine's reorder window: whatever order copies arrive in, every logical message
whose first copy is older than stream time minus the window is processed, in (first copy
time, arrival) order, and nothing newer is."""

from __future__ import annotations

import pickle
import random

from capture_build import make_calls

from consumers.engine import Engine, EngineConfig
from consumers.tracking.tracker import Tracker


def _jittered(seed: int, spread_us: int) -> list:
    rng = random.Random(seed)
    obs = [o for call in make_calls(30, seed) for o in call.flow.obs]
    return [o for _, o in sorted((o.ts_us + rng.randint(0, spread_us), o) for o in obs)]


class _SpyTracker(Tracker):
    """Records the (first_ts, seq) of every message the engine hands to the tracker."""

    def process(self, lm, t, t_out):
        self.seen.append((lm.first_ts, lm.seq))
        return super().process(lm, t, t_out)


def _check_runs(engine: Engine, observations: list, restore_every: int) -> tuple[int, bool]:
    processed = 0
    heap_used = False
    engine.tracker = _SpyTracker(engine.config.tracker, proxy_ips=engine._proxy_ips)
    for n, obs in enumerate(observations, 1):
        seen: list[tuple[int, int]] = []
        engine.tracker.seen = seen
        engine.feed(obs)
        watermark = engine.stream_time - engine.config.reorder_window_ms * 1000
        assert seen == sorted(seen), "processed out of (first_ts, seq) order"
        assert all(ts <= watermark for ts, _ in seen)
        waiting = [(ts, seq) for ts, seq, _ in [*engine._reorder, *engine._in_order]]
        assert all(ts > watermark for ts, _ in waiting), "a due message was left waiting"
        processed += len(seen)
        heap_used = heap_used or bool(engine._reorder)
        if n % restore_every == 0:
            engine = pickle.loads(pickle.dumps(engine))
    return processed, heap_used


def test_due_messages_are_processed_in_first_copy_order_whatever_the_arrival_order():
    for seed, spread in ((1, 50_000), (2, 400_000), (3, 3_000_000)):
        obs = _jittered(seed, spread)
        engine = Engine(EngineConfig())
        processed, heap_used = _check_runs(engine, obs, restore_every=97)
        assert processed > len(obs) // 3
        assert heap_used  # messages came out of capture order


def test_checkpoint_without_the_in_order_queue_resumes():
    # An engine pickled before the in-order queue existed held every waiting message in
    # its heap: restored, it goes on with an empty in-order queue and loses nothing.
    obs = sorted((o for call in make_calls(6, 4) for o in call.flow.obs), key=lambda o: o.ts_us)
    half = len(obs) // 2
    plain = Engine(EngineConfig())
    want = [r for o in obs for r in plain.feed(o)] + plain.flush()

    old = Engine(EngineConfig())
    got = [r for o in obs[:half] for r in old.feed(o)]
    state = old.__getstate__()
    waiting = [*state.pop("_in_order"), *state["_reorder"]]
    state["_reorder"] = sorted(waiting, key=lambda e: e[:2])  # a sorted list is a heap
    assert waiting
    restored = Engine.__new__(Engine)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    got += [r for o in obs[half:] for r in restored.feed(o)] + restored.flush()
    assert got == want
