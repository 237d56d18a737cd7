"""Optional C hot path for the HEPv3 accept path; the pure Python code is the reference.

`scan_v3`, `recv_batch` and `frame_batch` are the functions of `collector.hep._speedups` when
the extension was built (setup.py marks it optional), else None; `HAVE_SPEEDUPS` says which.

Contract of `scan_v3(data: bytes, max_size: int, /) -> tuple | None`:

* It returns None whenever `data` is not a *plain* HEPv3 packet, and the caller must then use
  `fast.decode` (which raises the typed HepError or returns the full HepPacket). Plain means:
  magic "HEP3" or "EEP3"; 6 <= total length <= min(len(data), max_size); every chunk header
  complete, chunk length >= 6 and within the total length; only vendor-0 chunks whose type is
  a HepPacket field (0x0001-0x000c, 0x000e, 0x000f, 0x0011, 0x0012, 0x0013), fixed-size ones
  with exactly the `spec.FIXED_VALUE_SIZE` length; no chunk type twice; exactly one 0x000f
  payload chunk (so no compressed 0x0010). Vendor chunks, 0x000d and other generic types
  make it decline too.
* Otherwise it returns
  `(ts_sec, ts_usec, proto_type, capture_id, payload_start, payload_end, auth_start,
  auth_end, corr_start, corr_end, total_length, call_id, is_sip)`
  where the numbers equal the fields `fast.decode(data, max_size)` would give (0, 0, 1, 0 for
  absent chunks), `data[payload_start:payload_end]` is the payload, the auth key and
  correlation id are `data[start:end]` (start = end = -1 when the chunk is absent),
  `len(data) - total_length` is `trailing_bytes`, `call_id == sipscan.find_call_id(payload)`
  and `is_sip == sipscan.looks_like_sip(payload)`.
* It may decline a packet Python accepts, never accept one Python rejects, and never raises
  for any bytes input (TypeError only when `data` is not bytes).

A packet scan_v3 accepted is a version-3, uncompressed HepPacket with no extra chunks and no
duplicate chunks; its addresses, ports, node name and VLAN id are validated but not returned.

Batches. Both batch functions turn every packet into one record, in arrival order:

* fast `(value, key, timestamp_ms, source)` when `fast` is true and the packet is plain (as
  scan_v3 with `max_size`), has no auth key chunk, and is not SIP-typed (proto 1) with a
  payload that `looks_like_sip` rejects. That is exactly a packet `Ingest.accept` without an
  auth policy publishes unchanged apart from cutting trailing bytes: `value` is the packet
  without them, `key` is the Call-ID for SIP-typed packets, else (or when there is none) the
  correlation id chunk, and None when both are absent or empty (the caller uses the sender),
  `timestamp_ms` is `ts_sec * 1000 + ts_usec // 1000`, or `received_us // 1000` when that is 0;
* slow `(packet, None, -1, source)` otherwise: the raw bytes, for `Ingest.accept`.

`source` is an int naming the sender (see below). Records never hold views of the buffers.

`recv_batch(sock, arena, slots, max_size, fast, /)` receives up to `slots` (1..1024) datagrams
from a blocking UDP socket (anything with fileno()) with one recvmmsg call: it takes the
datagrams already queued, or, with the GIL released, waits for one and takes those queued
with it (a non-blocking socket raises BlockingIOError instead of waiting). `arena` is a
writable buffer cut into `slots` equal slots; a slot should hold 65535 bytes, since a longer
datagram is cut to the slot. Returns `(received_us, records, sources, n_slow, fast_bytes,
fast_trailing)`: `received_us` is the wall clock (time.time_ns() // 1000) when the call
returned; `sources[source] == (host, port, fast records from it)` with host and port as
`socket.recvfrom` gives them; `n_slow` counts slow records; `fast_bytes` sums the datagram sizes
of the fast ones and `fast_trailing` counts the fast ones that had trailing bytes. Raises
OSError when recvmmsg fails (retries EINTR).

`frame_batch(data, start, end, max_packet_bytes, max_size, received_us, fast, /)` cuts the
HEPv3 stream in `data[start:end]` (any buffer) exactly like `StreamFramer` and returns
`(records, used, n_slow, fast_bytes, error)`: the records of every complete packet (source 0),
`used` the offset after the last one, and `error` 0, or the framing error `StreamFramer`
raises for the header at `used`: 1 bad magic, 2 total length below 6, 3 total length over
`max_packet_bytes` (see `FRAME_ERRORS`). Bytes after `used` are a partial packet unless
`error` is set. Unlike `StreamFramer.feed`, the packets before a framing error are returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collector.hep.errors import RejectReason

__all__ = ["FRAME_ERRORS", "HAVE_SPEEDUPS", "frame_batch", "recv_batch", "scan_v3"]

ScanResult = tuple[int, int, int, int, int, int, int, int, int, int, int, bytes | None, bool]
# (value, key, timestamp_ms, source); timestamp_ms == -1 marks a slow record.
BatchRecord = tuple[bytes, bytes | None, int, int]
# (host, port, fast records from it)
Source = tuple[str, int, int]
RecvResult = tuple[int, list[BatchRecord], list[Source], int, int, int]
FrameResult = tuple[list[BatchRecord], int, int, int, int]

# frame_batch error codes
FRAME_ERRORS = {
    1: RejectReason.BAD_MAGIC,
    2: RejectReason.BAD_LENGTH,
    3: RejectReason.OVERSIZE,
}

RecvBatchFn = Callable[[Any, Any, int, int, bool], RecvResult]
FrameBatchFn = Callable[[Any, int, int, int, int, int, bool], FrameResult]

scan_v3: Callable[[bytes, int], ScanResult | None] | None
recv_batch: RecvBatchFn | None
frame_batch: FrameBatchFn | None
try:
    from ._speedups import frame_batch, scan_v3
except ImportError:  # not built (no compiler at install time): use the Python path
    scan_v3 = frame_batch = None
try:
    from ._speedups import recv_batch
except ImportError:  # built without it (recvmmsg is Linux only)
    recv_batch = None

HAVE_SPEEDUPS: bool = scan_v3 is not None
