"""Optional C hot path for the HEPv3 accept path; the pure Python code is the reference.

`scan_v3(data, max_size)` is `collector.hep._speedups.scan_v3` when the extension was built
(setup.py marks it optional), else None; `HAVE_SPEEDUPS` says which.

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
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HAVE_SPEEDUPS", "scan_v3"]

ScanResult = tuple[int, int, int, int, int, int, int, int, int, int, int, bytes | None, bool]

scan_v3: Callable[[bytes, int], ScanResult | None] | None
try:
    from ._speedups import scan_v3
except ImportError:  # not built (no compiler at install time): use the Python path
    scan_v3 = None

HAVE_SPEEDUPS: bool = scan_v3 is not None
