"""Shared fixtures: the shared/ folder (optional), a real Kafka-protocol broker."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sharedpath import shared_path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class _SourceFirst(importlib.abc.MetaPathFinder):
    """HEPWATCH_PURE_PYTHON=1: import the interpreted sources of the modules the install
    compiled (setup.py), so one tree tests both builds. Hand-written C extensions, which
    have no Python source, stay."""

    def find_spec(
        self, name: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(("consumers.", "collector.")):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".so"):
            return None
        source = Path(spec.origin).with_name(name.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(name, source) if source.exists() else None


if os.environ.get("HEPWATCH_PURE_PYTHON"):
    sys.meta_path.insert(0, _SourceFirst())

from kafka_broker import TansuBroker  # noqa: E402  (after the path and the finder)


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
