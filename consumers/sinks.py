"""Where the consumers' records go: the `Sink` protocol and the JSON-lines sink.

The sans-I/O core (`consumers.engine`) emits typed records (`consumers.records`: message,
session_change, dialog, anomaly); a sink stores them. The protocol is three calls:

- `write(records)`: take a batch, in emission order. A sink may buffer; it must not reorder
  records of one call, and must accept every record kind (ignoring kinds it does not store
  is allowed, silently losing one it does store is not).
- `flush()`: make everything written so far durable (a file fsync, a ClickHouse INSERT
  acknowledged). The consumer commits Kafka offsets only after `flush()` returns, so a crash
  replays from the last flush; records carry deterministic ids (`record_ids.record_id`), which
  lets a table that deduplicates by id (ReplacingMergeTree) absorb the replay.
- `close()`: flush and release; the sink is not used afterwards.

A ClickHouse sink implements the same three methods: one table per record kind, rows from
`record.to_dict()` (times are µs since the epoch in fields ending `_us`; the anomaly's
family-specific fields in `fields`), batched in `write` and inserted in `flush`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from consumers.records import Record


@runtime_checkable
class Sink(Protocol):
    def write(self, records: Iterable[Record]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def record_json(record: Record) -> str:
    """One record as a single-line JSON object; `kind` says which record it is."""
    return json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonLinesSink:
    """One JSON object per line, one line per record, to a file path or an open text stream.

    With a path the file is opened for append (`append=False` truncates it), written as
    UTF-8, and `flush()` fsyncs it; with a stream the caller owns it: `flush()` flushes it
    and `close()` leaves it open.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str], *, append: bool = True) -> None:
        if isinstance(target, (str, os.PathLike)):
            self.path: Path | None = Path(target)
            self._stream: IO[str] = open(  # noqa: SIM115 - closed in close()
                self.path, "a" if append else "w", encoding="utf-8", newline="\n"
            )
            self._owned = True
        else:
            self.path = None
            self._stream = target
            self._owned = False
        self.written = 0
        self._closed = False

    def write(self, records: Iterable[Record]) -> None:
        if self._closed:
            raise ValueError("write to a closed sink")
        lines = [record_json(r) for r in records]
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self.written += len(lines)

    def flush(self) -> None:
        if self._closed:
            return
        self._stream.flush()
        if self._owned:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._owned:
            self._stream.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
