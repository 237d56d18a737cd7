"""CheckpointStore: round trip, and checkpoints it cannot use set aside instead of restored."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import pytest

from consumers.checkpoint import FORMAT_VERSION, Checkpoint, CheckpointStore
from consumers.engine import Engine, EngineConfig


def test_round_trip_keeps_offset_output_length_and_engine(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    engine = Engine(EngineConfig())
    store.save("hep", 3, Checkpoint(1234, 99, engine))
    got = store.load("hep", 3)
    assert got is not None
    assert (got.next_offset, got.output_bytes) == (1234, 99)
    assert isinstance(got.engine, Engine)
    assert store.load("hep", 4) is None


@pytest.mark.parametrize(
    "blob",
    [
        # a checkpoint of an older state layout: unpickles, but its objects lack new fields
        zlib.compress(
            pickle.dumps(
                {"version": FORMAT_VERSION - 1, "next_offset": 7, "output_bytes": 0, "engine": {}}
            )
        ),
        b"not a checkpoint at all",
    ],
    ids=["older-format", "damaged"],
)
def test_unusable_checkpoint_is_set_aside_and_the_partition_starts_empty(
    tmp_path: Path, blob: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path)
    path = store.path("hep", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    assert store.load("hep", 0) is None
    assert not path.exists()
    assert path.with_suffix(".ckpt.bad").read_bytes() == blob
    assert "unreadable" in caplog.text
