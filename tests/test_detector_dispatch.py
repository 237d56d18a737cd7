"""Detector dispatch: the engine calls a detector only for the events it declares
(`Detector.wants`), and that changes nothing.

Every scenario the detector tests build (each zero-argument test of tests/test_detector_*.py
and tests/test_tracking_core.py, run with the engine's input intercepted: what it was fed
until its `flush`) is fed to two engines with every default detector and the same config:
one dispatching, one calling every detector for every event as before. Their records must
be equal, record for record.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from consumers.detectors import default_detectors
from consumers.detectors.base import Detector
from consumers.engine import Engine, EngineConfig
from consumers.records import Record

MODULES = [
    *sorted(
        p.stem
        for p in Path(__file__).parent.glob("test_detector_*.py")
        if p.stem != "test_detector_dispatch"
    ),
    "test_tracking_core",
]


class _AllDetectors(Engine):
    """The engine as it was: every detector gets every event."""

    def _route(self, route: tuple[bool, str, int, bool]) -> tuple[Detector, ...]:
        return tuple(self.detectors)


_FEED, _FLUSH = Engine.feed, Engine.flush  # before the test intercepts them


def _records(engine: Engine, obs: list[Any]) -> list[Record]:
    out: list[Record] = []
    for o in obs:
        out += _FEED(engine, o)
    return out + _FLUSH(engine)


def test_declarations_narrow_something() -> None:
    engine = Engine(EngineConfig())
    assert len(engine._route((True, "ACK", 0, False))) < len(engine.detectors)
    assert len(engine._route((False, "INVITE", 180, False))) < len(engine.detectors)
    assert len(engine._route((False, "INVITE", 200, True))) < len(engine.detectors)
    assert [d.name for d in engine._route((False, "BYE", 481, False))].count("dialog_481") == 1
    assert engine._enders and len(engine._enders) < len(engine.detectors)


@pytest.mark.parametrize("module_name", MODULES)
def test_dispatch_gives_the_records_of_calling_every_detector(
    module_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared = 0
    fed: dict[int, list[Any]] = {}
    feed, feed_many, flush = Engine.feed, Engine.feed_many, Engine.flush

    def feed_seen(self: Engine, obs: Any) -> list[Record]:
        fed.setdefault(id(self), []).append(obs)
        return feed(self, obs)

    def feed_many_seen(self: Engine, observations: list[Any]) -> list[Record]:
        fed.setdefault(id(self), []).extend(observations)
        return feed_many(self, observations)

    def flush_and_compare(self: Engine) -> list[Record]:
        nonlocal compared
        obs = fed.pop(id(self), [])
        if obs and type(self) is Engine:
            config = self.config
            t1 = config.tracker.t1_ms
            routed = _records(Engine(copy.deepcopy(config), default_detectors(t1)), obs)
            every = _records(_AllDetectors(copy.deepcopy(config), default_detectors(t1)), obs)
            assert routed == every
            compared += 1
        return flush(self)

    monkeypatch.setattr(Engine, "feed", feed_seen)
    monkeypatch.setattr(Engine, "feed_many", feed_many_seen)
    monkeypatch.setattr(Engine, "flush", flush_and_compare)
    module = importlib.import_module(module_name)
    for name, fn in vars(module).items():
        if name.startswith("test_") and callable(fn) and not inspect.signature(fn).parameters:
            fn()
    assert compared > 0
