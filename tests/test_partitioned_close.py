"""A stopping consumer leaves its group within a bound: `PartitionedConsumer._close`."""

from __future__ import annotations

import logging
import threading
import time

from consumers import partitioned
from consumers.partitioned import PartitionedConsumer


class _CloseThatHangs:
    """What librdkafka's close does when a group request in flight never gets its answer."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    def close(self) -> None:
        self.called.set()
        self.release.wait(60)


class _CloseThatReturns:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _stage() -> PartitionedConsumer:
    stage = PartitionedConsumer.__new__(PartitionedConsumer)
    stage.log = logging.getLogger("test.partitioned")
    return stage


def test_a_close_that_hangs_is_abandoned_after_the_bound_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(partitioned, "CLOSE_TIMEOUT_S", 0.3)
    consumer = _CloseThatHangs()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "test.partitioned"):
        _stage()._close(consumer)  # type: ignore[arg-type]
    took = time.monotonic() - started
    consumer.release.set()
    assert consumer.called.is_set()
    assert took < 30  # returned on the bound, not when close() did
    assert "did not close within" in caplog.text


def test_a_close_that_returns_is_waited_for_without_a_warning(caplog):
    consumer = _CloseThatReturns()
    with caplog.at_level(logging.WARNING, "test.partitioned"):
        _stage()._close(consumer)  # type: ignore[arg-type]
    assert consumer.closed
    assert caplog.text == ""
