"""Where `hepwatch consume` writes its partitions' records, and how each target stays
exactly-once across a crash, a rebalance or a redelivery.

`consumers.service` drives one `Outputs` per process through the same steps for either
target: `open` a partition when it is assigned (with its checkpoint, if any), `write` the
records a partition's input produced, `flush` before every checkpoint (and more often for
ClickHouse), `close_partition` when it is revoked, `close` at the end.

- `JsonlOutputs` (`jsonl:DIR`): one JSON-lines file per partition
  (`checkpoint.PartitionOutput`); the checkpoint keeps the file length and a restore
  truncates the file to it, so what was written after the checkpoint is written again once.
- `ClickHouseOutputs` (`clickhouse:DSN`): one `ClickHouseSink` shared by every partition.
  Rows carry the partition and offset of their input (`sink.position`); restoring a
  partition calls `sink.resume(partition, next_offset)`, which loads the ids already stored
  from that offset on and drops them from the replay. The file-length truncation does not
  apply (a checkpoint stores 0). The connection is opened lazily and reopened after a failed
  connect, and any failure to connect, migrate, resume or insert raises `SinkUnavailable`:
  the service pauses its partitions, keeps what is buffered and calls `flush` again later;
  the sink keeps its buffer, so the retry inserts exactly it.
  Several `ClickHouseOutputs` on one chDB directory in one process (consume's first stage
  and its legs stage, each in its own thread with its own client) take turns: chDB is not
  safe for concurrent use, so their client calls hold one lock per directory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from consumers.checkpoint import Checkpoint, PartitionOutput
from consumers.records import Record
from hepwatch.config import ClickHouseConfig

log = logging.getLogger("hepwatch.consume")


_chdb_locks: dict[Path, threading.Lock] = {}
_chdb_locks_guard = threading.Lock()


def _client_lock(dsn: str) -> contextlib.AbstractContextManager[Any]:
    """The lock every client of this chDB directory in this process holds for its calls; a
    no-op for ClickHouse servers (each client has its own HTTP session)."""
    scheme, _, rest = dsn.partition("://")
    location = rest.split("?", 1)[0]
    if scheme.lower() != "chdb" or location in (":memory:", "memory"):
        return contextlib.nullcontext()
    path = Path(unquote(location)).expanduser().resolve()
    with _chdb_locks_guard:
        return _chdb_locks.setdefault(path, threading.Lock())


class SinkUnavailable(Exception):
    """The output cannot take records right now (ClickHouse down, locked, refusing inserts);
    whatever was written is still buffered and a later `flush` retries it."""


class Outputs(Protocol):
    def open(self, topic: str, partition: int, ckpt: Checkpoint | None, start: int) -> None:
        """A partition was assigned: restored from `ckpt`, or fresh when None, reading from
        `start` (the checkpoint's next offset, the committed offset, or 0 when unknown)."""

    def write(self, partition: int, offset: int, records: list[Record]) -> None:
        """Records produced by the partition's input up to `offset`."""

    def flush(self) -> dict[int, int]:
        """Store everything written; returns each open partition's output position (what a
        checkpoint keeps). Raises SinkUnavailable (buffer kept) when the target is down."""

    def due(self) -> bool:
        """True when a flush should happen before the next checkpoint."""

    def discard(self) -> None:
        """Drop what was written and not flushed (its input will be replayed elsewhere);
        every open partition must be reopened from its checkpoint before writing again."""

    def close_partition(self, partition: int) -> None: ...

    def close(self) -> None:
        """Release everything; does not flush (the service flushes first when it can)."""


class JsonlOutputs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[int, PartitionOutput] = {}

    def open(self, topic: str, partition: int, ckpt: Checkpoint | None, start: int) -> None:
        output = PartitionOutput(self.directory, topic, partition)
        output.truncate(ckpt.output_bytes if ckpt is not None else 0)
        self.files[partition] = output

    def write(self, partition: int, offset: int, records: list[Record]) -> None:
        self.files[partition].write(records)

    def flush(self) -> dict[int, int]:
        return {p: f.sync() for p, f in self.files.items()}

    def due(self) -> bool:
        return False  # files are synced at checkpoints only

    def discard(self) -> None:
        pass  # reopening a partition truncates its file to the checkpoint

    def close_partition(self, partition: int) -> None:
        output = self.files.pop(partition, None)
        if output is not None:
            output.close()

    def close(self) -> None:
        for partition in list(self.files):
            self.close_partition(partition)


class ClickHouseOutputs:
    def __init__(self, dsn: str, cfg: ClickHouseConfig) -> None:
        scheme = dsn.partition("://")[0].lower()
        if scheme not in ("chdb", "http", "https"):
            raise ValueError(f"ClickHouse DSN {dsn!r}: expected chdb:///path or http(s)://...")
        self.dsn = dsn
        self.cfg = cfg
        self._lock = _client_lock(dsn)
        self.client: Any = None
        self.sink: Any = None
        self.partitions: set[int] = set()
        # Partitions restored (or started fresh) whose stored ids are not loaded yet: no row
        # of theirs may be inserted before `sink.resume` ran for them.
        self.pending_resume: dict[int, int] = {}
        # Records written while not connected or before their partition's resume (input
        # consumed just before a pause): written to the sink once `flush` got that far.
        self._early: list[tuple[int, int, list[Record]]] = []

    # -- connection ------------------------------------------------------------------------

    def _ensure_sink(self) -> Any:
        if self.sink is not None:
            return self.sink
        from consumers.clickhouse.client import connect, describe_dsn
        from consumers.clickhouse.migrations import apply_migrations
        from consumers.clickhouse.sink import ClickHouseSink

        client = connect(self.dsn)
        try:
            applied = apply_migrations(client, self.cfg)
        except Exception:
            client.close()
            raise
        if applied:
            log.info("ClickHouse %s: applied migrations %s", describe_dsn(self.dsn), applied)
        self.client = client
        self.sink = ClickHouseSink(client, self.cfg)
        log.info("ClickHouse sink open on %s", describe_dsn(self.dsn))
        return self.sink

    def _resume_pending(self, sink: Any) -> None:
        for partition, next_offset in sorted(self.pending_resume.items()):
            sink.resume(partition, next_offset)
            del self.pending_resume[partition]

    # -- Outputs ---------------------------------------------------------------------------

    def open(self, topic: str, partition: int, ckpt: Checkpoint | None, start: int) -> None:
        # Without a checkpoint rows may still exist from `start` on (a crash after a flush,
        # before the first checkpoint), so they are deduplicated too.
        self.partitions.add(partition)
        self.pending_resume[partition] = ckpt.next_offset if ckpt is not None else start

    def write(self, partition: int, offset: int, records: list[Record]) -> None:
        if self.sink is None or partition in self.pending_resume:
            self._early.append((partition, offset, records))
            return
        self.sink.position(partition, offset)
        self.sink.write(records)

    def flush(self) -> dict[int, int]:
        try:
            with self._lock:
                sink = self._ensure_sink()
                self._resume_pending(sink)
                if self._early:
                    for partition, offset, records in self._early:
                        sink.position(partition, offset)
                        sink.write(records)
                    self._early = []
                sink.flush()
        except Exception as exc:
            raise SinkUnavailable(str(exc)) from exc
        return dict.fromkeys(self.partitions, 0)

    def due(self) -> bool:
        if self.sink is None or self.pending_resume or self._early:
            return True  # connect, or load stored ids, before rows pile up behind it
        return bool(self.sink.due())

    def discard(self) -> None:
        self._early = []
        if self.sink is not None and self.client is not None:
            from consumers.clickhouse.sink import ClickHouseSink

            # A fresh sink over the same client: the unflushed buffer (and the dedup ids,
            # reloaded by the reopened partitions' resume) are dropped with the old one.
            self.sink = ClickHouseSink(self.client, self.cfg)
        self.pending_resume.clear()

    def close_partition(self, partition: int) -> None:
        self.partitions.discard(partition)
        self.pending_resume.pop(partition, None)

    def close(self) -> None:
        self.sink = None
        if self.client is not None:
            try:
                with self._lock:
                    self.client.close()
            except Exception as exc:  # closing a broken connection must not mask the exit
                log.warning("closing the ClickHouse client: %s", exc)
            self.client = None


def outputs_for(sink: str, cfg: ClickHouseConfig) -> JsonlOutputs | ClickHouseOutputs:
    scheme, _, target = sink.partition(":")
    if scheme == "clickhouse":
        return ClickHouseOutputs(target, cfg)
    return JsonlOutputs(Path(target))
