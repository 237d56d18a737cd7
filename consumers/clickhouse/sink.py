"""The ClickHouse sink: records into the core tables, columnar, exactly once per Kafka offset.

`ClickHouseSink(client, settings.clickhouse)` implements the `consumers.sinks.Sink` protocol:

- `write(records)` buffers records per table (message -> sip_messages, session_change ->
  session_changes, dialog -> dialogs, anomaly -> anomalies). Leg records are ignored: they
  go to the leg correlation stage, not to a table. An unknown kind is an error, never
  dropped silently.
- `flush()` inserts each table's buffer as one columnar INSERT and returns once ClickHouse
  acknowledged it. With the C extension built (and addresses packed), the records of a
  table become one Native block in C (`consumers.clickhouse.native`) sent with
  `raw_insert`; otherwise they are converted to Python lists in chunks while written
  (`consumers.clickhouse.rows`) and serialised by clickhouse-connect. Both write the same
  rows (tests compare them column by column). When an INSERT fails, `flush()` raises
  `SinkFlushError` and keeps that block as it was (same rows, same deduplication token):
  the next `flush()` sends exactly it again before anything written since, so nothing is
  lost or doubled by the retry.
- `position(partition, offset)` stamps `src_partition`/`src_offset` on the rows written
  after it (-1/-1 until called).
- `resume(partition, next_offset)` makes a replay exact: after a consumer restores a
  partition from its checkpoint and re-reads from `next_offset`, the sink reads the ids of
  rows already stored for that partition at offsets >= next_offset and drops records with
  those ids (the set is only what was stored after the checkpoint).

Extra safety, not the mechanism counts rely on: every INSERT carries an
`insert_deduplication_token` derived from its rows (ids and source offsets; tables keep a
non-replicated deduplication window), so an INSERT that was stored although its
acknowledgement was lost is not stored twice by the retry, in the table or in the
materialized views; and tables are ReplacingMergeTree by id.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from consumers.clickhouse.native import HAVE_NATIVE, NativeEncoder, NativeUnsupported
from consumers.clickhouse.rows import (
    IGNORED_KINDS,
    SOURCE_COLUMNS,
    TABLES,
    AddressPacker,
    TableSpec,
    columns_of,
)
from consumers.records import Record
from hepwatch.config import ClickHouseConfig

log = logging.getLogger(__name__)

_IPV6_TYPE = re.compile(r"\bIPv6\b")
INSERT_SETTINGS = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    # ReplacingMergeTree would otherwise sort-merge every inserted block to collapse equal
    # sort keys inside it: half of the engine's time per row, for nothing here (the sink
    # never writes an id twice in a block, and the views downstream see the block as sent
    # anyway). Merges still collapse any duplicate.
    "optimize_on_insert": 0,
}
MAX_BLOCK_ROWS = 100_000


class SinkFlushError(RuntimeError):
    """An INSERT failed; the rows are kept and the next flush() sends them again."""


class PlainAddresses:
    """Addresses passed to the driver as text (its own per-value IPv6 parse), for comparison."""

    invalid = 0

    def __call__(self, text: str) -> str:
        return text

    def column(self, values: list[str]) -> list[str]:
        return list(values)


@dataclass(slots=True)
class _Block:
    """Rows of one table ready to insert, with their token and their ids and sources.

    Either `columns` (lists in spec.all_columns order, sent through the driver) or `records`
    (encoded by the C Native encoder on the first attempt; `payload` keeps the bytes for a
    retry, dropped when an attempt fails so a re-created table is described again).
    """

    rows: int
    token: str
    ids: list[str]
    partitions: list[int]
    offsets: list[int]
    columns: list[list[Any]] | None = None
    records: list[Record] | None = None
    payload: bytes | None = None


@dataclass(slots=True)
class _Buffer:
    """One table's rows not yet in a block: records waiting for conversion, converted chunks."""

    records: list[Record] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    chunks: list[list[list[Any]]] = field(default_factory=list)
    chunk_rows: int = 0

    @property
    def rows(self) -> int:
        return len(self.records) + self.chunk_rows


@dataclass(slots=True)
class _Resume:
    """Ids already stored for one partition at offsets >= the restored position."""

    ids: dict[str, frozenset[str]]  # kind -> ids
    max_offset: int


class ClickHouseSink:
    """See the module docstring. Not thread-safe: one consumer loop owns it."""

    def __init__(
        self,
        client: Client,
        cfg: ClickHouseConfig,
        *,
        pack_addresses: bool = True,
        chunk_rows: int = 8192,
        native: bool | None = None,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.chunk_rows = chunk_rows
        self.pack_addresses = pack_addresses
        if native and not (HAVE_NATIVE and pack_addresses):
            raise ValueError("the Native encoder needs the C extension and packed addresses")
        # Native: records kept as they are until the flush encodes them in C into one Native
        # block (raw_insert); else converted to lists in chunks for the driver's insert.
        self.native = HAVE_NATIVE and pack_addresses if native is None else native
        self.addresses: AddressPacker | PlainAddresses = (
            AddressPacker() if pack_addresses else PlainAddresses()
        )
        self._partition = -1
        self._offset = -1
        self._buffers: dict[str, _Buffer] = {kind: _Buffer() for kind in TABLES}
        self._inflight: dict[str, _Block] = {}
        self._resume: dict[int, _Resume] = {}
        self._types: dict[str, list[str]] = {}
        self._encoders: dict[str, NativeEncoder | None] = {}
        self._described: dict[str, list[str]] = {}
        self._first_unflushed: float | None = None
        self._closed = False
        self._insert_settings: dict[str, Any] = dict(INSERT_SETTINGS)
        if cfg.cluster:
            # A Distributed table queues inserts by default; flush() must mean stored.
            self._insert_settings["distributed_foreground_insert"] = 1
        self.rows_written: dict[str, int] = {spec.table: 0 for spec in TABLES.values()}
        self.duplicates_dropped = 0
        self.ignored = 0  # leg records
        self.flush_failures = 0
        self.convert_seconds = 0.0  # time spent turning records into columns
        self.insert_seconds = 0.0  # time spent in INSERTs (driver serialisation included)

    # -- Sink protocol ---------------------------------------------------------------------

    def write(self, records: Iterable[Record]) -> None:
        if self._closed:
            raise ValueError("write to a closed sink")
        partition, offset = self._partition, self._offset
        # Kept until the partition is resumed again, not only up to the largest stored
        # offset: a replay feeds the engine in other batches and its wall-clock timers fire
        # elsewhere, so a stored record can come back stamped past that offset.
        resume = self._resume.get(partition) if self._resume else None
        buffers = self._buffers
        touched: set[str] = set()
        for rec in records:
            kind = rec.kind
            buf = buffers.get(kind)
            if buf is None:
                if kind in IGNORED_KINDS:
                    self.ignored += 1
                    continue
                raise ValueError(f"ClickHouseSink: no table for record kind {kind!r}")
            if resume is not None and rec.id in resume.ids.get(kind, ()):
                self.duplicates_dropped += 1
                continue
            buf.records.append(rec)
            touched.add(kind)
        for kind in touched:
            buf = buffers[kind]
            added = len(buf.records) - len(buf.partitions)
            buf.partitions.extend(itertools.repeat(partition, added))
            buf.offsets.extend(itertools.repeat(offset, added))
            if not self.native and len(buf.records) >= self.chunk_rows:
                self._convert(kind)
        if touched and self._first_unflushed is None:
            self._first_unflushed = time.monotonic()

    def flush(self) -> None:
        """Insert every buffered row; raises SinkFlushError (rows kept) when an INSERT fails."""
        failures: list[str] = []
        for kind, spec in TABLES.items():
            block = self._inflight.get(kind)
            if block is not None and not self._insert(spec, block, failures):
                continue  # the failed block goes first next time; newer rows wait behind it
            if self._buffers[kind].rows:
                block = self._seal(kind)
                self._inflight[kind] = block
                self._insert(spec, block, failures)
        if failures:
            self.flush_failures += 1
            raise SinkFlushError("; ".join(failures))
        self._first_unflushed = None

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True

    # -- source positions and exact replay -------------------------------------------------

    def position(self, partition: int, offset: int) -> None:
        """Rows written from now on came from this Kafka partition and offset."""
        self._partition = partition
        self._offset = offset

    def resume(self, partition: int, next_offset: int) -> None:
        """After a restore: drop re-emitted records whose rows are already stored.

        Reads the ids stored (or buffered here) for `partition` at offsets >= `next_offset`;
        from then on records of that partition with one of those ids are dropped (until the
        next `resume` of the partition).
        """
        ids: dict[str, frozenset[str]] = {}
        max_offset = -1
        for kind, spec in TABLES.items():
            try:
                rows = self.client.query(
                    f"SELECT id, src_offset FROM {spec.table} "
                    "WHERE src_partition = {p:Int32} AND src_offset >= {o:Int64}",
                    parameters={"p": partition, "o": next_offset},
                ).result_rows
            except Exception as exc:
                raise SinkFlushError(
                    f"resume of partition {partition}: reading {spec.table} failed: {exc}"
                ) from exc
            found = {row[0] for row in rows}
            for row in rows:
                max_offset = max(max_offset, int(row[1]))
            for rid, off in self._buffered_ids(kind, partition, next_offset):
                found.add(rid)
                max_offset = max(max_offset, off)
            if found:
                ids[kind] = frozenset(found)
        if ids:
            self._resume[partition] = _Resume(ids=ids, max_offset=max_offset)
            log.info(
                "partition %d resumes at %d: %d stored rows up to offset %d will be skipped",
                partition, next_offset, sum(len(v) for v in ids.values()), max_offset,
            )  # fmt: skip
        else:
            self._resume.pop(partition, None)

    # -- state -----------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        """Rows written and not yet acknowledged by ClickHouse."""
        return sum(b.rows for b in self._buffers.values()) + sum(
            b.rows for b in self._inflight.values()
        )

    def due(self, now: float | None = None) -> bool:
        """True when a flush is due: batch_rows buffered, or flush_interval_s since the first."""
        if self._first_unflushed is None:
            return bool(self._inflight)
        if self.buffered_rows >= self.cfg.batch_rows:
            return True
        now = time.monotonic() if now is None else now
        return now - self._first_unflushed >= self.cfg.flush_interval_s

    # -- internals -------------------------------------------------------------------------

    def _convert(self, kind: str) -> None:
        buf = self._buffers[kind]
        if not buf.records:
            return
        t0 = time.perf_counter()
        cols = columns_of(TABLES[kind], buf.records, self.addresses)
        cols.append(buf.partitions)
        cols.append(buf.offsets)
        buf.chunks.append(cols)
        buf.chunk_rows += len(buf.records)
        buf.records, buf.partitions, buf.offsets = [], [], []
        self.convert_seconds += time.perf_counter() - t0

    def _seal(self, kind: str) -> _Block:
        """Move a table's buffer into one block with its deduplication token."""
        buf = self._buffers[kind]
        t0 = time.perf_counter()
        records: list[Record] | None = None
        columns: list[list[Any]] | None = None
        if self.native and not buf.chunks:
            records, partitions, offsets = buf.records, buf.partitions, buf.offsets
            ids = [r.id for r in records]
            rows = len(records)
        else:
            self._convert(kind)
            if len(buf.chunks) == 1:
                columns = buf.chunks[0]
            else:
                columns = [
                    list(itertools.chain.from_iterable(chunk[i] for chunk in buf.chunks))
                    for i in range(len(buf.chunks[0]))
                ]
            ids, partitions, offsets = columns[0], columns[-2], columns[-1]
            rows = buf.chunk_rows
        self._buffers[kind] = _Buffer()
        spec = TABLES[kind]
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{spec.table}\x1e{rows}\x1e".encode())
        h.update("\x1f".join(ids).encode("utf-8", "surrogatepass"))
        h.update(repr((partitions, offsets)).encode())
        self.convert_seconds += time.perf_counter() - t0
        return _Block(
            rows=rows,
            token=f"hepwatch-{h.hexdigest()}",
            ids=ids,
            partitions=partitions,
            offsets=offsets,
            columns=columns,
            records=records,
        )

    def _insert(self, spec: TableSpec, block: _Block, failures: list[str]) -> bool:
        t0 = time.perf_counter()
        settings = {**self._insert_settings, "insert_deduplication_token": block.token}
        try:
            if block.records is not None:
                payload = block.payload or self._encode(spec, block)
                if payload is not None:
                    block.payload = payload
                    t0 = time.perf_counter()
                    self.client.raw_insert(
                        spec.table, spec.all_columns, payload, settings=settings, fmt="Native"
                    )
                else:
                    self._insert_columns(spec, block, settings)
            else:
                self._insert_columns(spec, block, settings)
        except Exception as exc:
            self._types.pop(spec.table, None)  # the table may have been re-created
            self._encoders.pop(spec.table, None)
            block.payload = None
            log.warning("insert of %d rows into %s failed: %s", block.rows, spec.table, exc)
            failures.append(f"insert of {block.rows} rows into {spec.table} failed: {exc}")
            return False
        finally:
            self.insert_seconds += time.perf_counter() - t0
        del self._inflight[spec.kind]
        self.rows_written[spec.table] += block.rows
        return True

    def _encode(self, spec: TableSpec, block: _Block) -> bytes | None:
        """The block as one Native block, or None when this table has to take the list path."""
        t0 = time.perf_counter()
        try:
            encoder = self._encoder(spec)
            if encoder is None:
                return None
            assert block.records is not None
            return encoder.encode(block.records, block.partitions, block.offsets)
        finally:
            self.convert_seconds += time.perf_counter() - t0

    def _encoder(self, spec: TableSpec) -> NativeEncoder | None:
        if spec.table in self._encoders:
            return self._encoders[spec.table]
        self._column_types(spec)
        try:
            encoder: NativeEncoder | None = NativeEncoder(
                spec, self._described[spec.table], self.addresses
            )
        except NativeUnsupported as exc:
            log.warning("%s: inserting through the driver's lists (%s)", spec.table, exc)
            encoder = None
        self._encoders[spec.table] = encoder
        return encoder

    def _insert_columns(self, spec: TableSpec, block: _Block, settings: dict[str, Any]) -> None:
        if block.columns is None:  # a native block whose table the encoder cannot write
            assert block.records is not None
            t0 = time.perf_counter()
            cols = columns_of(spec, block.records, self.addresses)
            cols += [block.partitions, block.offsets]
            block.columns = cols
            self.convert_seconds += time.perf_counter() - t0
        ctx = self.client.create_insert_context(
            spec.table,
            spec.all_columns,
            column_type_names=self._column_types(spec),
            column_oriented=True,
            settings=settings,
        )
        # The driver cuts an insert into ~2 MB Native blocks (about 1000 of these wide
        # rows); one block per INSERT halved the engine's time per row in chDB.
        ctx.req_block_size = min(block.rows, MAX_BLOCK_ROWS)
        ctx.data = block.columns
        self.client.data_insert(ctx)

    def _column_types(self, spec: TableSpec) -> list[str]:
        """The table's column types, IPv6 sent as FixedString(16) when addresses are packed."""
        types = self._types.get(spec.table)
        if types is not None:
            return types
        described = {
            row[0]: row[1] for row in self.client.query(f"DESCRIBE TABLE {spec.table}").result_rows
        }
        missing = [c for c in spec.all_columns if c not in described]
        if missing:
            raise SinkFlushError(
                f"table {spec.table} has no column {', '.join(missing)}; "
                "run `hepwatch schema apply`"
            )
        types = [described[c] for c in spec.all_columns]
        self._described[spec.table] = types
        if self.pack_addresses:
            types = [_IPV6_TYPE.sub("FixedString(16)", t) for t in types]
        self._types[spec.table] = types
        return types

    def _buffered_ids(self, kind: str, partition: int, offset: int) -> list[tuple[str, int]]:
        """(id, offset) of rows held here for `partition` at offsets >= `offset`."""
        out: list[tuple[str, int]] = []
        buf = self._buffers[kind]
        for rec, p, o in zip(buf.records, buf.partitions, buf.offsets, strict=True):
            if p == partition and o >= offset:
                out.append((rec.id, o))
        blocks = [(cols[0], cols[-2], cols[-1]) for cols in buf.chunks]
        if kind in self._inflight:
            b = self._inflight[kind]
            blocks.append((b.ids, b.partitions, b.offsets))
        for ids, partitions, offsets in blocks:
            for rid, p, o in zip(ids, partitions, offsets, strict=True):
                if p == partition and o >= offset:
                    out.append((rid, o))
        return out


__all__ = ["SOURCE_COLUMNS", "ClickHouseSink", "PlainAddresses", "SinkFlushError"]
