"""Shared fixtures: the shared/ folder (optional), a real Kafka-protocol broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sharedpath import shared_path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_broker import TansuBroker


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_path()
    if path is None:
        pytest.skip("../shared is not present (vectors and testbed live there, not in the project)")
    return path


@pytest.fixture(scope="session")
def broker() -> Iterator[TansuBroker]:
    b = TansuBroker()
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker of the test's own, which the test may stop and restart."""
    b = TansuBroker()
    b.start()
    yield b
    b.stop()
