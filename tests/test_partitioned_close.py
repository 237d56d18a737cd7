"""A stopping consumer leaves its group within a bound: `PartitionedConsumer._close`, and
past it (plus a grace) the process ends even when the interpreter lock never comes back."""

from __future__ import annotations

import logging
import subprocess
import sys
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


_SCRIPT = """
import logging, re, sys, time
from consumers import partitioned
from consumers.partitioned import PartitionedConsumer

partitioned.CLOSE_TIMEOUT_S = 0.2
partitioned.CLOSE_WATCHDOG_GRACE_S = 0.8


class Consumer:
    def close(self):
        if sys.argv[1] == "hog":
            # holds the interpreter lock for good, as the close seen in CI did: the regex
            # engine never releases it, and this backtracks for longer than any test runs
            re.fullmatch(r"(a+)+b", "a" * 64)


stage = PartitionedConsumer.__new__(PartitionedConsumer)
stage.log = logging.getLogger("test")
stage._close(Consumer())
time.sleep(2)  # past the bound and the grace: a watchdog left armed would end us here
print("stopped", flush=True)
"""


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=60
    )


def test_a_close_that_never_gives_the_interpreter_back_ends_the_process():
    started = time.monotonic()
    out = _run("hog")
    assert out.returncode == 1 and "stopped" not in out.stdout
    assert "Timeout (0:00:01)!" in out.stderr
    assert "in _close" in out.stderr  # every thread's stack, the stopping one included
    assert time.monotonic() - started < 30


def test_the_watchdog_is_disarmed_once_the_close_returns():
    out = _run("returns")
    assert out.returncode == 0 and out.stdout == "stopped\n", out.stderr
