"""HEPv3 stream framing for TCP and TLS (PROTOCOL.md A.7), sans-I/O.

A stream is a plain concatenation of HEP3 packets: read the 6-byte header, check the
magic, take the 16-bit total length L (6 <= L <= 65535) and cut exactly L bytes, whatever
the segmentation. There is no resynchronisation marker, so a bad magic or length means
framing is lost and the connection must be closed: `feed` raises `FramingError` then.
HEPv1/v2 carry no length and are not accepted on streams.
"""

from __future__ import annotations

from collector.hep.errors import RejectReason

_MAGICS = (b"HEP3", b"EEP3")


class FramingError(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class StreamFramer:
    """Cuts a byte stream into HEPv3 packets; keeps at most one partial packet buffered."""

    __slots__ = ("_buf", "max_packet_bytes")

    def __init__(self, max_packet_bytes: int = 65535) -> None:
        self._buf = bytearray()
        self.max_packet_bytes = max_packet_bytes

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete packets they finish, in order."""
        buf = self._buf
        if not buf:
            # Common case: whole packets in one read; slice without copying into the buffer.
            packets, used = self._cut(data)
            if used < len(data):
                buf += data[used:]
            return packets
        buf += data
        packets, used = self._cut(buf)
        if used:
            del buf[:used]
        return packets

    def _cut(self, data: bytes | bytearray) -> tuple[list[bytes], int]:
        packets: list[bytes] = []
        off = 0
        end = len(data)
        limit = self.max_packet_bytes
        while end - off >= 6:
            if data[off : off + 4] not in _MAGICS:
                raise FramingError(
                    RejectReason.BAD_MAGIC, f"stream lost framing: {bytes(data[off : off + 4])!r}"
                )
            length = (data[off + 4] << 8) | data[off + 5]
            if length < 6:
                raise FramingError(RejectReason.BAD_LENGTH, f"total length {length} below 6")
            if length > limit:
                raise FramingError(RejectReason.OVERSIZE, f"total length {length} over {limit}")
            if end - off < length:
                break
            packets.append(bytes(data[off : off + length]))
            off += length
        return packets, off

    def at_packet_boundary(self) -> bool:
        """True when no partial packet is pending (a clean place for the peer to close)."""
        return not self._buf
