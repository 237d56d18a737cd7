"""Per-partition checkpoints: analysis state, input offset and output position, together.

The Kafka Streams model on a directory (DESIGN "Consumers"): a partition's `Engine` is
pickled with the next input offset and the byte length of the partition's output file, all
in one file replaced atomically (write, fsync, rename). Restoring a partition loads the
engine, truncates the output to the saved length and resumes reading at the saved offset.
Processing is deterministic in its input, so whatever was written after the checkpoint is
written again, once: at-least-once input, no duplicate output.

Order on save: flush and fsync the output, then write the checkpoint, then (the caller)
commit the offset to Kafka. A crash between any two steps leaves a consistent pair.
"""

from __future__ import annotations

import logging
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from consumers.engine import Engine
from consumers.records import Record
from consumers.sinks import record_json

log = logging.getLogger("hepwatch.consume")

# Bumped whenever the pickled engine state changes shape: an older checkpoint is then set
# aside with a logged error and the partition starts empty, instead of restoring objects
# that lack fields the code now reads. 2: frozen calls and packed SDP summaries.
FORMAT_VERSION = 2


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


@dataclass(slots=True)
class Checkpoint:
    next_offset: int
    output_bytes: int
    engine: Engine


class CheckpointStore:
    """Checkpoint files `<dir>/<topic>-<partition>.ckpt`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, topic: str, partition: int) -> Path:
        return self.directory / f"{_safe(topic)}-{partition}.ckpt"

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        path = self.path(topic, partition)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = pickle.loads(zlib.decompress(blob))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')}")
            return Checkpoint(data["next_offset"], data["output_bytes"], data["engine"])
        except Exception as exc:  # a damaged checkpoint must not stop the partition
            bad = path.with_suffix(".ckpt.bad")
            os.replace(path, bad)
            log.error("checkpoint %s unreadable (%s); moved to %s, starting empty", path, exc, bad)
            return None

    def save(self, topic: str, partition: int, ckpt: Checkpoint) -> int:
        data = {
            "version": FORMAT_VERSION,
            "next_offset": ckpt.next_offset,
            "output_bytes": ckpt.output_bytes,
            "engine": ckpt.engine,
        }
        blob = zlib.compress(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), 1)
        path = self.path(topic, partition)
        tmp = path.with_suffix(".ckpt.tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(blob)


class PartitionOutput:
    """The JSON-lines output (`sinks.record_json` lines) of one partition, truncatable to a
    checkpoint; binary so its length is the byte offset a checkpoint keeps."""

    def __init__(self, directory: Path, topic: str, partition: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{_safe(topic)}-{partition}.jsonl"
        self._f: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 (lives as long as the partition)

    def truncate(self, size: int) -> None:
        self._f.flush()
        current = self._f.seek(0, os.SEEK_END)
        if current > size:
            self._f.truncate(size)
            log.info("%s: dropped %d bytes written after the checkpoint", self.path, current - size)
        self._f.seek(0, os.SEEK_END)

    def write(self, records: list[Record]) -> None:
        if records:
            self._f.write("".join(record_json(r) + "\n" for r in records).encode())

    def sync(self) -> int:
        """Flush to disk; returns the durable length."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
