"""Durable, bounded, append-only FIFO of Kafka records on disk.

The collector appends here whatever it accepted while the broker is unreachable and drains
it, in order, once the broker is back, also after a restart. This module owns the spool
directory: the segment files, the ack cursor and the lock file. It is pure file I/O and
knows nothing about Kafka; `SpoolRecord` carries exactly what a Kafka record needs.

Directory layout::

    00000000000000000007.seg   segment files, named by a zero-padded sequence number
    00000000000000000008.seg   (the newest one is the one being written)
    cursor                     the durable ack cursor
    lock                       flock()ed while a Spool has the directory open

Segment file: records back to back, no file header. One record::

    offset size
    0      1    magic/version byte 0xE1 (0xE0 marks a record, low nibble = format version 1)
    1      4    crc32 (zlib) of bytes 5 .. end of record, so it covers length and body
    5      4    body length (u32)
    9      1    flags; bit 0: the key is present (a None key and an empty key differ)
    10     8    timestamp_ms (i64)
    18     4    key length (u32)
    22     1    header count (u8)
    23     ...  key, then per header: name length (u8), value length (u16), UTF-8 name,
                value; then the value, which is the rest of the body

All integers are little-endian. Header names are at most 255 bytes, header values at most
65535 bytes, at most 255 headers per record.

Cursor file (25 bytes): b"HWCR", version 1 (u8), segment (u64), offset (u64), crc32 of the
preceding 21 bytes. It names the end of the last acked record and is replaced atomically
(temp file, fsync, rename, directory fsync) on every ack, so a restart resumes exactly
after the last acked record. Segments wholly before it are deleted.

Durability: appends go to an in-memory buffer that is written to the segment file when it
reaches 1 MiB, when the segment rolls, when the drain side catches up with the writer, and
by a background thread ("hepwatch-spool-flush") every `fsync_interval_s`, which also
fsyncs what was written. So a process crash loses at most the appends of the last interval
that were still buffered, an OS crash at most those of the last interval or two; an append
is durable once `flush()` or `close()` returned. With `fsync_interval_s <= 0` every append
is written and fsynced before it returns (strict and slow). Acks are durable on return.

Recovery: every segment is scanned and checked record by record (length + CRC; about 0.7 s
per GiB). Bytes after the last valid record of a segment are a torn write: they are
truncated and counted in `recovered_torn_records`. An invalid record followed by valid ones
is corruption: the drain side skips it (by its length when the record after it is valid,
else by scanning forward to the next valid record), counts it in `corrupt_records` and logs
it. Writing always continues in a new segment, never after a recovered tail.

Bound: `max_bytes` bounds the bytes in segment files plus the write buffer, acked-but-not-
yet-deleted bytes included, so it is a real disk budget. Space is returned when a segment
is wholly acked (and, once everything is acked, by retiring the write segment).
`segment_bytes` is capped at `max_bytes // 4` so that acks free space in steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zlib import crc32

__all__ = ["Spool", "SpoolPosition", "SpoolRecord", "decode_body", "encode_record"]

log = logging.getLogger("hepwatch.spool")

MAGIC = 0xE1
_HDR = struct.Struct("<BII")  # magic, crc32, body length
_HDR_SIZE = _HDR.size
_MAGIC_CRC = struct.Struct("<BI")
_LEN_FIXED = struct.Struct("<IBqIB")  # body length + the fixed body fields
_FIXED = struct.Struct("<BqIB")  # flags, timestamp_ms, key length, header count
_FIXED_SIZE = _FIXED.size
_HEADER_LENS = struct.Struct("<BH")
_FLAG_KEY = 0x01

_CURSOR_MAGIC = b"HWCR"
_CURSOR = struct.Struct("<4sBQQ")
_CURSOR_CRC = struct.Struct("<I")

_SEGMENT_RE = re.compile(r"\d{20}\.seg")
_WRITE_CHUNK = 1 << 20  # write the buffer out once it holds this much
_READ_CHUNK = 1 << 20
_LOG_INTERVAL_S = 10.0  # rate limit of the overflow, write-error and corruption logs
_NAME_CACHE_MAX = 1024

MiB = 1 << 20


class SpoolRecord(NamedTuple):
    """One Kafka record as the spool stores it."""

    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: list[tuple[str, bytes]]


class SpoolPosition(NamedTuple):
    """Where a record read from the spool sits; pass it to `Spool.ack`.

    `offset`/`end` are the record's byte range in segment `segment`; `index` is its ordinal
    among the records read since the spool was opened (valid for this process only).
    """

    segment: int
    offset: int
    end: int
    index: int


@dataclass(slots=True, eq=False)
class _Segment:
    seq: int
    path: Path
    size: int = 0  # valid bytes; for the write segment including the buffer
    flushed: int = 0  # bytes handed to the OS (write segment only; equals size when sealed)
    records: int = 0  # valid records from the segment's base offset on
    sealed: bool = True
    first_index: int | None = None  # read index of the segment's first record after its base


_name_cache: dict[str, bytes] = {}


def _encode_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 255:
        raise ValueError(f"header name longer than 255 bytes: {name[:40]!r}...")
    if len(_name_cache) < _NAME_CACHE_MAX:
        _name_cache[name] = raw
    return raw


def encode_record(rec: SpoolRecord) -> bytes:
    """The on-disk frame of one record (header + body)."""
    key, value, ts, headers = rec
    k = b"" if key is None else key
    if headers:
        if len(headers) > 255:
            raise ValueError("more than 255 headers")
        parts: list[bytes] = []
        for name, hval in headers:
            nb = _name_cache.get(name)
            if nb is None:
                nb = _encode_name(name)
            if len(hval) > 0xFFFF:
                raise ValueError(f"header {name!r} value longer than 65535 bytes")
            parts.append(_HEADER_LENS.pack(len(nb), len(hval)))
            parts.append(nb)
            parts.append(hval)
        hb = b"".join(parts)
    else:
        hb = b""
    blen = _FIXED_SIZE + len(k) + len(hb) + len(value)
    if blen > 0xFFFFFFFF:
        raise ValueError("record too large")
    body = b"".join(
        (
            _LEN_FIXED.pack(blen, 0 if key is None else _FLAG_KEY, ts, len(k), len(headers)),
            k,
            hb,
            value,
        )
    )
    return _MAGIC_CRC.pack(MAGIC, crc32(body)) + body


def decode_body(buf: bytes, start: int, end: int) -> SpoolRecord:
    """Decode the body at buf[start:end]; ValueError (or struct.error) if it is malformed."""
    flags, ts, klen, nh = _FIXED.unpack_from(buf, start)
    q = start + _FIXED_SIZE
    if flags & _FLAG_KEY:
        key: bytes | None = buf[q : q + klen]
        q += klen
    elif klen:
        raise ValueError("key length without key flag")
    else:
        key = None
    headers: list[tuple[str, bytes]] = []
    for _ in range(nh):
        nl, vl = _HEADER_LENS.unpack_from(buf, q)
        q += 3
        name_end = q + nl
        name = buf[q:name_end].decode()
        q = name_end + vl
        headers.append((name, buf[name_end:q]))
    if q > end:
        raise ValueError("record fields run past the record")
    return SpoolRecord(key, buf[q:end], ts, headers)


def _valid_end(buf: bytes | mmap.mmap, mv: memoryview, p: int, limit: int) -> int:
    """End offset of the record at p if it is complete and its CRC matches, else 0."""
    if p + _HDR_SIZE > limit:
        return 0
    magic, crc, blen = _HDR.unpack_from(buf, p)
    end = p + _HDR_SIZE + blen
    if magic != MAGIC or blen < _FIXED_SIZE or end > limit:
        return 0
    if crc32(mv[p + 5 : end]) != crc:
        return 0
    return end


def _next_valid(buf: bytes | mmap.mmap, mv: memoryview, p: int, limit: int) -> int:
    """Offset of the first valid record after the invalid one at p, or limit if none.

    A record whose length field is plausible and is followed by a valid record (or the
    end) is skipped whole: trusting its length avoids mistaking bytes inside its value for
    a record. Otherwise scan byte by byte for the magic of a record that checks out.
    """
    if p + _HDR_SIZE <= limit:
        magic, _crc, blen = _HDR.unpack_from(buf, p)
        end = p + _HDR_SIZE + blen
        if magic == MAGIC and end <= limit and (end == limit or _valid_end(buf, mv, end, limit)):
            return end
    magic_byte = bytes((MAGIC,))
    q = p + 1
    while True:
        q = buf.find(magic_byte, q, limit)
        if q < 0:
            return limit
        if _valid_end(buf, mv, q, limit):
            return q
        q += 1


def _scan_segment(path: Path, base: int, size: int) -> tuple[int, int]:
    """(valid records from base on, end of the last valid record) of one segment file."""
    if size <= base:
        return 0, size
    records = 0
    valid_end = base
    with (
        open(path, "rb") as f,
        mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm,
        memoryview(mm) as mv,
    ):
        p = base
        while p < size:
            end = _valid_end(mm, mv, p, size)
            if end:
                records += 1
                p = valid_end = end
                continue
            # Corruption in the middle is left for the reader to skip, count and log.
            p = _next_valid(mm, mv, p, size)
    return records, valid_end


def _pwrite_all(fd: int, data: bytearray, offset: int) -> None:
    done = 0
    with memoryview(data) as view:
        while done < len(data):
            # Positional writes: after a partial write that raised, the retry overwrites
            # the partial bytes instead of appending after them.
            done += os.pwrite(fd, view[done:], offset + done)


class _RateLimit:
    """Lets a message through at most once per interval and counts what it held back."""

    __slots__ = ("held", "interval", "last")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.held = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


class Spool:
    """A durable, bounded FIFO of `SpoolRecord`s in one directory.

    Thread-safety: any number of threads may append; one drain thread calls `read_batch`,
    `ack` and `rewind`. Acks must arrive in order.

    Counters (plain attributes, monotonic for the life of the object): appended_records,
    overflow_records, acked_records, recovered_torn_records (at open), corrupt_records,
    write_errors.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 64 * MiB,
        fsync_interval_s: float = 1.0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        self.fsync_interval_s = fsync_interval_s

        self.appended_records = 0
        self.overflow_records = 0
        self.acked_records = 0
        self.recovered_torn_records = 0
        self.corrupt_records = 0
        self.write_errors = 0

        # _lock: write buffer, segment list, counters; held briefly, and across a file write
        # only when a segment rolls. _io_lock: serialises writes to the segment files, so
        # appenders keep filling a fresh buffer while the old one is written (holding _lock
        # there cost 2-3x in append throughput with two appender threads). _read_lock: the
        # drain side. Lock order: _read_lock, _io_lock, _lock.
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False

        self._segments: list[_Segment] = []
        self._wbuf = bytearray()
        self._wfd = -1
        self._writer: _Segment
        self._unsynced_fds: list[int] = []  # sealed segments still to fsync and close
        self._writer_dirty = False  # written to the OS since the last fsync
        self._dir_dirty = False
        self._disk_bytes = 0
        self._total_records = 0
        self._acked_in_head = 0  # records acked in the oldest live segment (from its base)
        self._head_acked_offset = 0

        self._overflow_log = _RateLimit(_LOG_INTERVAL_S)
        self._write_error_log = _RateLimit(_LOG_INTERVAL_S)
        self._corrupt_log = _RateLimit(_LOG_INTERVAL_S)

        # Drain side.
        self._rseg: _Segment
        self._roff = 0
        self._rindex = 0
        self._rfd = -1
        self._rfd_seq = -1
        self._rbuf = b""
        self._rbuf_seq = -1
        self._rbuf_off = 0
        self._ack_seq = 0
        self._ack_off = 0
        self._acked_index = 0
        self._hwm: tuple[int, int] = (0, 0)  # (segment, end) of the furthest record read

        self.directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            os.close(self._dir_fd)
            raise RuntimeError(f"spool directory {self.directory} is in use") from None
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            os.close(self._dir_fd)
            raise

        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="hepwatch-spool-flush", daemon=True
            )
            self._flusher.start()

    # ------------------------------------------------------------------ recovery

    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}.seg"

    def _load_cursor(self) -> tuple[int, int] | None:
        path = self.directory / "cursor"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) == _CURSOR.size + _CURSOR_CRC.size:
            magic, version, seq, off = _CURSOR.unpack_from(data)
            (crc,) = _CURSOR_CRC.unpack_from(data, _CURSOR.size)
            if magic == _CURSOR_MAGIC and version == 1 and crc == crc32(data[: _CURSOR.size]):
                return seq, off
        # The cursor is replaced atomically, so this is damage, not a torn write. Starting
        # over re-delivers acked records, which beats losing unacked ones.
        log.error("spool cursor %s is corrupt; draining from the oldest segment", path)
        return None

    def _recover(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "cursor.tmp").unlink()
        seqs = sorted(
            int(p.name[:20]) for p in self.directory.iterdir() if _SEGMENT_RE.fullmatch(p.name)
        )
        cursor = self._load_cursor()
        cseq, coff = cursor if cursor is not None else (-1, 0)

        for seq in seqs:
            if seq < cseq:  # wholly acked; a crash came between cursor write and delete
                self._segment_path(seq).unlink()
        segments: list[_Segment] = []
        head_base = 0
        for seq in (s for s in seqs if s >= cseq):
            path = self._segment_path(seq)
            size = path.stat().st_size
            base = coff if seq == cseq else 0
            if base > size:
                # Acked data the OS had not written when it crashed; nothing is lost.
                log.warning(
                    "spool cursor points past the end of segment %d (%d > %d bytes)",
                    seq,
                    base,
                    size,
                )
                base = size
            records, valid_end = _scan_segment(path, base, size)
            if valid_end < size:
                log.warning(
                    "spool segment %d: dropping a torn tail of %d bytes at offset %d",
                    seq,
                    size - valid_end,
                    valid_end,
                )
                with open(path, "r+b") as f:
                    f.truncate(valid_end)
                    os.fsync(f.fileno())
                self.recovered_torn_records += 1
            seg = _Segment(seq, path, size=valid_end, flushed=valid_end, records=records)
            if not segments:
                head_base = base
            segments.append(seg)
            self._disk_bytes += valid_end
            self._total_records += records

        # Wholly acked leading segments go now; the cursor still orders them before the rest.
        while segments and head_base >= segments[0].size:
            seg = segments.pop(0)
            self._disk_bytes -= seg.size
            seg.path.unlink()
            head_base = 0

        self._segments = segments
        # Always write into a fresh segment: the recovered ones stay exactly as scanned.
        self._wfd, self._writer = self._create_segment(max([*seqs, cseq]) + 1)
        self._segments.append(self._writer)
        head = self._segments[0]
        head.first_index = 0
        self._head_acked_offset = head_base
        self._rseg = head
        self._roff = head_base
        self._ack_seq, self._ack_off = head.seq, head_base
        self._hwm = (head.seq, head_base)
        if self._total_records:
            log.info(
                "spool %s: recovered %d records (%d bytes) in %d segments",
                self.directory,
                self._total_records,
                self._disk_bytes - head_base,
                len(self._segments),
            )

    # ------------------------------------------------------------------ writer

    def _create_segment(self, seq: int) -> tuple[int, _Segment]:
        path = self._segment_path(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._dir_dirty = True
        return fd, _Segment(seq, path, sealed=False)

    def _log_write_error(self, exc: OSError) -> None:
        self.write_errors += 1
        if self._write_error_log.due():
            log.error(
                "spool write to %s failed (%s); %d bytes kept in memory for retry",
                self._writer.path,
                exc,
                len(self._wbuf),
            )

    def _write_out(self) -> None:
        """Write the buffer to the write segment (no fsync); raises OSError."""
        with self._io_lock:
            with self._lock:
                data = self._wbuf
                if not data or self._closed:
                    return
                self._wbuf = bytearray()
                w = self._writer
                fd = self._wfd
            # Only _io_lock is held: appenders keep filling the new buffer meanwhile. Readers
            # stop at w.flushed, so they never see these bytes before they are written.
            try:
                _pwrite_all(fd, data, w.flushed)
            except OSError as exc:
                with self._lock:
                    data += self._wbuf
                    self._wbuf = data
                    self._log_write_error(exc)
                raise
            with self._lock:
                w.flushed += len(data)
                self._writer_dirty = True

    def _write_out_quietly(self) -> bool:
        try:
            self._write_out()
        except OSError:
            return False
        return True

    def _roll(self, w: _Segment) -> bool:
        """Seal w (if it is still the write segment) and start the next segment.

        False if that failed; the caller then keeps appending to w.
        """
        with self._io_lock, self._lock:
            if self._writer is not w or self._closed:
                return True
            try:
                fd, new = self._create_segment(w.seq + 1)
            except OSError as exc:
                self._log_write_error(exc)
                return False
            if self._wbuf:
                try:
                    _pwrite_all(self._wfd, self._wbuf, w.flushed)
                except OSError as exc:
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        new.path.unlink()
                    self._log_write_error(exc)
                    return False
                w.flushed += len(self._wbuf)
                self._wbuf = bytearray()
            w.sealed = True
            w.size = w.flushed
            # The flusher thread fsyncs and closes the old file, keeping the fsync off the
            # appenders' path; recovery handles a torn tail in any segment, not just the last.
            self._unsynced_fds.append(self._wfd)
            self._writer_dirty = False
            self._wfd, self._writer = fd, new
            self._segments.append(new)
        return True

    def _overflow_locked(self, count: int) -> None:
        self.overflow_records += count
        self._overflow_log.held += count
        if self._overflow_log.due():
            log.warning(
                "spool %s full (%d of %d bytes used): dropped %d records since the last "
                "warning, %d in total",
                self.directory,
                self._disk_bytes,
                self.max_bytes,
                self._overflow_log.held,
                self.overflow_records,
            )
            self._overflow_log.held = 0

    def append(self, rec: SpoolRecord) -> bool:
        """Append one record; False (counted, logged) if the spool is full."""
        frame = encode_record(rec)
        n = len(frame)
        may_roll = True
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("spool is closed")
                if self._disk_bytes + n > self.max_bytes:
                    self._overflow_locked(1)
                    return False
                w = self._writer
                if not (may_roll and w.size and w.size + n > self.segment_bytes):
                    self._wbuf += frame
                    w.size += n
                    w.records += 1
                    self._total_records += 1
                    self._disk_bytes += n
                    self.appended_records += 1
                    full = len(self._wbuf) >= _WRITE_CHUNK
                    break
            may_roll = self._roll(w)
        if self._flusher is None:
            self.flush()
        elif full:
            self._write_out_quietly()
        return True

    def append_many(self, recs: Iterable[SpoolRecord]) -> int:
        """Append records in order; returns n: recs[:n] were accepted.

        At the first record that does not fit, it and every later one are counted as
        overflow, so what was accepted is always a prefix.
        """
        frames = [encode_record(r) for r in recs]
        total = len(frames)
        accepted = 0
        may_roll = True
        full = False
        while accepted < total:
            roll = False
            with self._lock:
                if self._closed:
                    raise RuntimeError("spool is closed")
                w = self._writer
                while accepted < total:
                    frame = frames[accepted]
                    n = len(frame)
                    if self._disk_bytes + n > self.max_bytes:
                        self._overflow_locked(total - accepted)
                        break
                    if may_roll and w.size and w.size + n > self.segment_bytes:
                        roll = True
                        break
                    self._wbuf += frame
                    w.size += n
                    w.records += 1
                    self._total_records += 1
                    self._disk_bytes += n
                    self.appended_records += 1
                    accepted += 1
                full = len(self._wbuf) >= _WRITE_CHUNK
            if not roll:
                break
            may_roll = self._roll(w)
        if accepted:
            if self._flusher is None:
                self.flush()
            elif full:
                self._write_out_quietly()
        return accepted

    # ------------------------------------------------------------------ sync

    def _take_sync_work_locked(self) -> tuple[list[int], bool]:
        fds = self._unsynced_fds
        self._unsynced_fds = []
        if self._writer_dirty:
            fds.append(os.dup(self._wfd))  # a dup survives the original being closed
            self._writer_dirty = False
        dir_dirty = self._dir_dirty
        self._dir_dirty = False
        return fds, dir_dirty

    def _do_sync(self, fds: list[int], dir_dirty: bool) -> None:
        error: OSError | None = None
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("spool fsync failed: %s", exc)
                error = exc
            finally:
                os.close(fd)
        if dir_dirty:
            os.fsync(self._dir_fd)
        if error is not None:
            raise error

    def _sync_pending(self) -> None:
        """fsync what was written; the fsyncs run without holding _lock."""
        with self._lock:
            if self._closed:
                return
            fds, dir_dirty = self._take_sync_work_locked()
        self._do_sync(fds, dir_dirty)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval_s):
            try:
                self._write_out_quietly()
                self._sync_pending()
            except Exception:
                log.exception("spool background flush failed")

    def flush(self) -> None:
        """Write and fsync everything appended so far; raises OSError if that fails."""
        self._write_out()
        self._sync_pending()

    # ------------------------------------------------------------------ drain

    def _next_segment_locked(self, seq: int) -> _Segment | None:
        for seg in self._segments:
            if seg.seq > seq:
                return seg
        return None

    def _segment_locked(self, seq: int) -> _Segment | None:
        for seg in self._segments:
            if seg.seq == seq:
                return seg
        return None

    def _enter_segment(self, seg: _Segment, offset: int) -> None:
        self._rseg = seg
        self._roff = offset
        if offset == 0:
            seg.first_index = self._rindex

    def _reader_fd(self, seg: _Segment) -> int:
        if self._rfd_seq != seg.seq:
            self._close_reader_fd()
            self._rfd = os.open(seg.path, os.O_RDONLY)
            self._rfd_seq = seg.seq
        return self._rfd

    def _close_reader_fd(self) -> None:
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd, self._rfd_seq = -1, -1

    def _fill(self, seg: _Segment, offset: int, need: int, avail: int) -> None:
        size = min(avail - offset, max(_READ_CHUNK, need))
        self._rbuf = os.pread(self._reader_fd(seg), size, offset)
        self._rbuf_seq = seg.seq
        self._rbuf_off = offset
        if len(self._rbuf) < min(size, need):
            raise OSError(f"spool segment {seg.path} is shorter than expected")

    def read_batch(self, max_records: int) -> list[tuple[SpoolPosition, SpoolRecord]]:
        """The oldest records not yet read, in order, at most max_records of them."""
        out: list[tuple[SpoolPosition, SpoolRecord]] = []
        with self._read_lock:
            if self._closed:
                raise RuntimeError("spool is closed")
            while len(out) < max_records:
                with self._lock:
                    seg = self._rseg
                    # Caught up with what the writer has written: its buffer must become
                    # readable, or a slow trickle of appends would wait for the flusher.
                    catch_up = not seg.sealed and seg.flushed <= self._roff < seg.size
                    avail = seg.size if seg.sealed else seg.flushed
                    at_end = self._roff >= avail
                    if at_end and seg.sealed:
                        nxt = self._next_segment_locked(seg.seq)
                        if nxt is not None:
                            self._enter_segment(nxt, 0)
                            continue
                if catch_up:
                    if not self._write_out_quietly():
                        break
                    continue
                if at_end:
                    break
                self._read_records(seg, avail, max_records, out)
            if out:
                last = out[-1][0]
                if (last.segment, last.end) > self._hwm:
                    self._hwm = (last.segment, last.end)
        return out

    def _read_records(
        self,
        seg: _Segment,
        avail: int,
        max_records: int,
        out: list[tuple[SpoolPosition, SpoolRecord]],
    ) -> None:
        """Decode records of seg from the read offset up to avail (exclusive) into out."""
        off = self._roff
        if self._rbuf_seq != seg.seq or not (
            self._rbuf_off <= off and off + _HDR_SIZE <= self._rbuf_off + len(self._rbuf)
        ):
            self._fill(seg, off, _HDR_SIZE, avail)
        buf = self._rbuf
        base = self._rbuf_off
        limit = min(len(buf), avail - base)  # buffer-relative
        p = off - base
        seq = seg.seq
        index = self._rindex
        unpack_hdr = _HDR.unpack_from
        corrupt = False
        while len(out) < max_records and p < limit:
            if p + _HDR_SIZE > limit:
                if base + p + _HDR_SIZE > avail:
                    corrupt = True
                else:
                    self._fill(seg, base + p, _HDR_SIZE, avail)
                break
            magic, crc, blen = unpack_hdr(buf, p)
            end = p + _HDR_SIZE + blen
            if end > limit and magic == MAGIC and base + end <= avail:
                self._fill(seg, base + p, end - p, avail)  # record runs past the buffer
                break
            if magic != MAGIC or end > limit or crc32(buf[p + 5 : end]) != crc:
                corrupt = True
                break
            try:
                rec = decode_body(buf, p + _HDR_SIZE, end)
            except (ValueError, struct.error, IndexError, UnicodeDecodeError):
                corrupt = True
                break
            out.append((SpoolPosition(seq, base + p, base + end, index), rec))
            index += 1
            p = end
        self._roff = base + p
        self._rindex = index
        if corrupt:
            self._skip_corrupt(seg, base + p, avail)

    def _skip_corrupt(self, seg: _Segment, off: int, avail: int) -> None:
        """Skip the invalid bytes at off: count, log, and move the read offset past them."""
        data = os.pread(self._reader_fd(seg), avail - off, off)
        with memoryview(data) as mv:
            nxt = off + _next_valid(data, mv, 0, len(data))
        with self._lock:
            self.corrupt_records += 1
        self._corrupt_log.held += 1
        if self._corrupt_log.due():
            log.error(
                "spool segment %d: corrupt record at offset %d, skipped %d bytes "
                "(%d corrupt records skipped since the last report, %d in total)",
                seg.seq,
                off,
                nxt - off,
                self._corrupt_log.held,
                self.corrupt_records,
            )
            self._corrupt_log.held = 0
        self._roff = nxt

    def ack(self, position: SpoolPosition) -> None:
        """Mark every record up to and including position as delivered.

        Persists the cursor (fsync) before returning, so ack per delivered batch, not per
        record. Acking a position at or before the cursor is a no-op.
        """
        with self._read_lock:
            if self._closed:
                raise RuntimeError("spool is closed")
            target = (position.segment, position.end)
            if target <= (self._ack_seq, self._ack_off):
                return
            if target > self._hwm:
                raise ValueError(f"ack of {position} which was never read")
            self._write_cursor(*target)
            delta = position.index + 1 - self._acked_index
            self._ack_seq, self._ack_off = target
            self._acked_index = position.index + 1
            with self._lock:
                if target > (self._rseg.seq, self._roff):
                    # A late ack after a rewind: those records need not be read again.
                    seg = self._segment_locked(position.segment)
                    assert seg is not None
                    self._rseg, self._roff = seg, position.end
                    self._rindex = position.index + 1
                self.acked_records += delta
                dead = self._retire_acked_locked(position)
                w = self._writer
                retire_writer = (
                    self._segments[0] is w
                    and self._head_acked_offset >= w.size
                    and w.size >= max(1, self.segment_bytes // 8)
                )
            if retire_writer and self._roll(w):
                # Everything was acked: give the write segment's disk space back.
                with self._lock:
                    if self._segments[0] is w and w.sealed and self._head_acked_offset >= w.size:
                        dead.append(self._segments.pop(0))
                        self._total_records -= w.records
                        self._disk_bytes -= w.size
                        self._acked_in_head = 0
                        self._head_acked_offset = 0
            for seg in dead:
                if seg.seq == self._rfd_seq:
                    # An open descriptor would keep the deleted file's blocks allocated.
                    self._close_reader_fd()
                try:
                    seg.path.unlink()
                except OSError as exc:
                    log.error("spool could not delete acked segment %s: %s", seg.path, exc)

    def _retire_acked_locked(self, position: SpoolPosition) -> list[_Segment]:
        """Drop the segments wholly acked by position from the books; returns them."""
        dead: list[_Segment] = []
        while self._segments[0].seq < position.segment:
            dead.append(self._segments.pop(0))
        head = self._segments[0]
        assert head.first_index is not None
        self._acked_in_head = position.index + 1 - head.first_index
        self._head_acked_offset = position.end
        if position.end >= head.size:
            # Records skipped as corrupt were counted when appended or recovered; whatever
            # is left in a wholly acked segment is such a record.
            self._total_records -= head.records - self._acked_in_head
            head.records = self._acked_in_head
            if head is not self._writer:
                dead.append(self._segments.pop(0))
                self._acked_in_head = 0
                self._head_acked_offset = 0
        for seg in dead:
            self._total_records -= seg.records
            self._disk_bytes -= seg.size
        return dead

    def rewind(self) -> None:
        """Move the read position back to the ack cursor: unacked records are read again."""
        with self._read_lock, self._lock:
            seg = self._segment_locked(self._ack_seq)
            if seg is not None:
                off = self._ack_off
            else:
                seg = self._next_segment_locked(self._ack_seq)
                assert seg is not None  # the write segment is always newer
                off = 0
            # Re-reading is deterministic, so records get the indexes they had before and
            # first_index of later segments stays valid.
            self._rindex = self._acked_index
            self._enter_segment(seg, off)

    def _write_cursor(self, seq: int, off: int) -> None:
        data = _CURSOR.pack(_CURSOR_MAGIC, 1, seq, off)
        data += _CURSOR_CRC.pack(crc32(data))
        tmp = self.directory / "cursor.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "cursor")
        os.fsync(self._dir_fd)

    # ------------------------------------------------------------------ state

    @property
    def depth_records(self) -> int:
        """Records appended and not yet acked."""
        with self._lock:
            return self._total_records - self._acked_in_head

    @property
    def depth_bytes(self) -> int:
        """Bytes (as framed on disk) of the records not yet acked."""
        with self._lock:
            return self._disk_bytes - self._head_acked_offset

    @property
    def disk_bytes(self) -> int:
        """Bytes in segment files and the write buffer; this is what max_bytes bounds."""
        with self._lock:
            return self._disk_bytes

    def __len__(self) -> int:
        return self.depth_records

    def close(self) -> None:
        """Write out and fsync everything, persist the cursor, release the directory."""
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
        with self._read_lock:
            with self._io_lock, self._lock:
                if self._closed:
                    return
                if self._wbuf:
                    _pwrite_all(self._wfd, self._wbuf, self._writer.flushed)
                    self._writer.flushed += len(self._wbuf)
                    self._wbuf = bytearray()
                    self._writer_dirty = True
                fds, dir_dirty = self._take_sync_work_locked()
                self._closed = True
            self._do_sync(fds, dir_dirty)
            self._write_cursor(self._ack_seq, self._ack_off)
            os.close(self._wfd)
            self._close_reader_fd()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            os.close(self._dir_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
