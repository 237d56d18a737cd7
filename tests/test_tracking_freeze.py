"""Frozen calls (tracking/freezer.py): an idle established call kept as a blob and thawed
on its next message, timer or removal behaves exactly as one never frozen."""

from __future__ import annotations

import gc
import pickle

from capture_build import make_calls
from sipflow import Flow, sdp

from consumers.engine import Engine, EngineConfig
from consumers.observation import Observation
from consumers.records import Record
from consumers.tracking.tracker import TrackerConfig


def _mixed_traffic(n: int, seed: int) -> list[Observation]:
    """Clean, held, glare, missing-ACK, session-timer (expired and refreshed) calls and
    more, overlapping, with idle gaps of 45-61 s inside calls."""
    obs = [o for call in make_calls(n, seed) for o in call.flow.obs]
    return sorted(obs, key=lambda o: o.ts_us)


def _run(
    obs: list[Observation], freeze: bool, t1_ms: int = 500, checkpoint_every: int = 0
) -> tuple[list[Record], Engine]:
    engine = Engine(EngineConfig(tracker=TrackerConfig(t1_ms=t1_ms, freeze_idle=freeze)))
    out: list[Record] = []
    for n, o in enumerate(obs, 1):
        out += engine.feed(o)
        if checkpoint_every and n % checkpoint_every == 0:
            engine = pickle.loads(pickle.dumps(engine))  # a consumer restarting from it
    engine.advance_to(engine.stream_time + 3_600_000_000)  # idle calls' timers fire
    out += engine.flush()
    return out, engine


def test_frozen_calls_yield_the_same_records_as_never_frozen():
    obs = _mixed_traffic(60, seed=7)
    plain, eng_plain = _run(obs, freeze=False)
    frozen, eng = _run(obs, freeze=True)
    assert eng_plain.tracker.freezer.frozen == 0
    assert eng.tracker.freezer.frozen >= 10  # the timer calls, idle 45-61 s
    assert eng.tracker.freezer.thawed == eng.tracker.freezer.frozen  # all thawed by the end
    assert any(r.kind == "anomaly" for r in plain)
    assert frozen == plain


def test_short_t1_freezes_between_most_messages_and_changes_nothing():
    # With T1 = 20 ms calls freeze 1.6 s after any message once their transactions are
    # over: between re-INVITEs, refreshes, before BYEs, while detector timers are pending.
    obs = _mixed_traffic(40, seed=11)
    plain, _ = _run(obs, freeze=False, t1_ms=20)
    frozen, eng = _run(obs, freeze=True, t1_ms=20)
    assert eng.tracker.freezer.frozen > 40
    assert frozen == plain


def test_checkpoints_of_frozen_calls_resume_exactly():
    obs = _mixed_traffic(40, seed=3)
    plain, _ = _run(obs, freeze=False)
    resumed, eng = _run(obs, freeze=True, checkpoint_every=97)
    assert eng.tracker.freezer.frozen > 0
    assert resumed == plain


def test_idle_established_call_is_a_small_blob_until_its_bye():
    f = Flow()
    f.setup()
    eng = Engine(EngineConfig())
    out: list[Record] = []
    for o in sorted(f.obs, key=lambda o: o.ts_us):
        out += eng.feed(o)
    eng.advance_to(eng.stream_time + 33_000_000)  # its transactions dropped (64*T1)
    eng.advance_to(eng.stream_time + 9_000_000)  # and 4*T1 later frozen
    blob = eng.tracker.calls[f.call_id]
    assert isinstance(blob, bytes) and len(blob) < 1200  # the first call: no dictionary yet
    assert len(eng.tracker) == 1 and eng.tracker.live_dialogs() == 1
    state = pickle.loads(pickle.dumps(eng))
    assert state.tracker.calls[f.call_id] == blob
    f.t = eng.stream_time / 1e6
    f.request("A", "INVITE", body=sdp(version=2, direction="sendonly"))
    f.bye("A")
    for o in sorted(f.obs, key=lambda o: o.ts_us):
        if o.ts_us > eng.stream_time:
            out += eng.feed(o)
    out += eng.flush()
    (dialog,) = [r for r in out if r.kind == "dialog"]
    assert dialog.state == "terminated" and dialog.reinvites == 1
    (change,) = [r for r in out if r.kind == "session_change"]
    assert change.intent == "hold"


def test_end_of_input_thaws_frozen_calls_one_at_a_time():
    eng = Engine(EngineConfig())
    for n in range(5):
        f = Flow(f"idle-{n}@test")
        f.at(n * 0.1)
        f.setup()
        for o in sorted(f.obs, key=lambda o: o.ts_us):
            eng.feed(o)
    eng.advance_to(eng.stream_time + 33_000_000)
    eng.advance_to(eng.stream_time + 9_000_000)
    tracker = eng.tracker
    assert all(isinstance(v, bytes) for v in tracker.calls.values()) and len(tracker) == 5
    calls = tracker.drain()
    first = next(calls)
    assert first.dialogs and len(tracker) == 4
    assert all(isinstance(v, bytes) for v in tracker.calls.values())  # the rest still frozen
    assert len(list(calls)) == 4 and len(tracker) == 0
    assert not tracker._compact_queue  # nothing drained is kept alive


def test_frozen_calls_leave_no_cyclic_garbage():
    # The consumer's GC thresholds make full collections rare: a frozen call's objects must
    # be freed by reference counting alone, or RSS keeps them for minutes.
    eng = Engine(EngineConfig())
    gc.collect()
    gc.disable()
    try:
        for n in range(50):
            f = Flow(f"idle-{n}@test")
            f.at(n * 0.1)
            f.setup()
            for o in sorted(f.obs, key=lambda o: o.ts_us):
                eng.feed(o)
        gc.collect()
        eng.advance_to(eng.stream_time + 33_000_000)
        eng.advance_to(eng.stream_time + 9_000_000)
        assert eng.tracker.freezer.frozen == 50
        assert gc.collect() == 0
    finally:
        gc.enable()


def _idle_calls(eng: Engine, n: int) -> None:
    for i in range(n):
        f = Flow(f"idle-{i}@test")
        f.at(i * 0.1)
        f.setup()
        for o in sorted(f.obs, key=lambda o: o.ts_us):
            eng.feed(o)
    eng.advance_to(eng.stream_time + 33_000_000)  # transactions dropped (64*T1)
    eng.advance_to(eng.stream_time + 9_000_000)  # and 4*T1 later frozen, if at all


def test_freeze_above_keeps_calls_unfrozen_up_to_that_many_held():
    few = Engine(EngineConfig(tracker=TrackerConfig(freeze_above=8)))
    _idle_calls(few, 8)
    assert few.tracker.freezer.frozen == 0
    assert not any(isinstance(v, bytes) for v in few.tracker.calls.values())
    many = Engine(EngineConfig(tracker=TrackerConfig(freeze_above=8)))
    _idle_calls(many, 12)
    frozen = [v for v in many.tracker.calls.values() if isinstance(v, bytes)]
    # each call is judged when compacted, with every call still held: all 12 are over 8
    assert len(frozen) == many.tracker.freezer.frozen == 12


def test_freeze_above_changes_no_record():
    obs = _mixed_traffic(60, seed=7)
    plain, _ = _run(obs, freeze=False)
    engine = Engine(EngineConfig(tracker=TrackerConfig(freeze_above=20)))
    out: list[Record] = []
    for o in obs:
        out += engine.feed(o)
    engine.advance_to(engine.stream_time + 3_600_000_000)
    out += engine.flush()
    assert 0 < engine.tracker.freezer.frozen < _run(obs, freeze=True)[1].tracker.freezer.frozen
    assert out == plain


def test_tracker_config_from_a_checkpoint_before_freeze_above_freezes_as_before():
    config = TrackerConfig(t1_ms=250, freeze_above=7)
    state = config.__getstate__()
    del state["freeze_above"]
    old = TrackerConfig.__new__(TrackerConfig)
    old.__setstate__(state)
    assert old.freeze_above == 0 and old.t1_ms == 250
    assert pickle.loads(pickle.dumps(config)) == config
