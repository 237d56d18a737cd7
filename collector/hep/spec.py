"""Facts about the HEP wire formats that both decoders must agree on.

This module owns the tables taken from PROTOCOL.md A.1-A.6 (magics, fixed chunk sizes, which
generic chunks map onto `HepPacket` fields) and the one semantic step shared by the two
decoders: bounded inflation of a 0x0010 payload. Nothing here parses a packet.

Validation order (both decoders follow it, so they reject a packet for the same reason):

Dispatch: empty input -> TRUNCATED; "HEP3"/"EEP3" -> v3; first byte 1 or 2 -> v1/v2;
fewer than 4 bytes that are a prefix of a magic -> TRUNCATED; anything else -> BAD_MAGIC.

HEPv3: fewer than 6 bytes -> TRUNCATED; total length < 6 -> BAD_LENGTH; total length >
max_size -> OVERSIZE; total length > bytes available -> TRUNCATED; then chunks in wire order,
the first bad chunk deciding: fewer than 6 bytes left for a chunk header -> TRUNCATED, chunk
length < 6 or running past the total length -> BAD_CHUNK, a fixed-size generic chunk with the
wrong length -> BAD_CHUNK; finally, if the winning payload chunk is 0x0010, it is inflated
(BAD_COMPRESSION, or OVERSIZE when it inflates past max_size).

HEPv1/v2: datagram longer than max_size -> OVERSIZE; fewer than 4 bytes -> TRUNCATED; hp_l
not 16/40, or family not matching it (2 with 16, 10 with 40, Kamailio's receiver rule) ->
BAD_LENGTH; fewer bytes than the header (plus the 12-byte v2 time block) -> TRUNCATED.

Chunk mapping: a vendor-0 chunk whose type is in FIELD_TYPES sets a `HepPacket` field (last
one wins; the type is listed once in `duplicate_chunks` when it repeats). IPv4 and IPv6
address chunks set the same fields, as do 0x000f and 0x0010: the last one in wire order wins
and, being different types, that is not reported as a duplicate. Every other chunk is kept in
`extra_chunks`.
"""

from __future__ import annotations

import zlib

from .errors import HepError, RejectReason
from .model import (
    AUTH_KEY,
    CAPTURE_ID,
    COMPRESSED_PAYLOAD,
    CORRELATION_ID,
    DST_IP4,
    DST_IP6,
    DST_PORT,
    IP_FAMILY,
    IP_PROTO,
    KEEPALIVE,
    NODE_NAME,
    PAYLOAD,
    PROTO_TYPE,
    SRC_IP4,
    SRC_IP6,
    SRC_PORT,
    TS_SEC,
    TS_USEC,
    VLAN_ID,
)

MAGIC_HEP3 = b"HEP3"
MAGIC_EEP3 = b"EEP3"
MAGICS = (MAGIC_HEP3, MAGIC_EEP3)
CHUNK_HEADER_SIZE = 6
MAX_TOTAL_LENGTH = 0xFFFF

# v1/v2 header length (hp_l) -> the address family it must carry and the address size.
HEP12_LAYOUTS = {16: (2, 4), 40: (10, 16)}
HEP2_TIME_BLOCK = 12  # u32 sec, u32 usec, u16 capture id, 2 pad bytes (all little-endian)

# Value sizes of the generic chunks whose chunk length the A.4 table fixes. 0x0027/0x0028 are
# typed uint16 but have no length in the table, so they stay opaque octet strings.
FIXED_VALUE_SIZE: dict[int, int] = {
    IP_FAMILY: 1,
    IP_PROTO: 1,
    SRC_IP4: 4,
    DST_IP4: 4,
    SRC_IP6: 16,
    DST_IP6: 16,
    SRC_PORT: 2,
    DST_PORT: 2,
    TS_SEC: 4,
    TS_USEC: 4,
    PROTO_TYPE: 1,
    CAPTURE_ID: 4,
    KEEPALIVE: 2,
    VLAN_ID: 2,
    0x0014: 8,  # source MAC (uint64 in the spec, opaque here)
    0x0015: 8,  # destination MAC
    0x0016: 2,  # Ethernet type
    0x0017: 1,  # TCP flags
    0x0018: 1,  # IP TOS
    0x0020: 2,  # MOS
    0x0021: 2,  # R-factor
    0x0023: 4,  # jitter
}

# Generic chunk types that land in a HepPacket field rather than in extra_chunks.
FIELD_TYPES = frozenset(
    {
        IP_FAMILY,
        IP_PROTO,
        SRC_IP4,
        DST_IP4,
        SRC_IP6,
        DST_IP6,
        SRC_PORT,
        DST_PORT,
        TS_SEC,
        TS_USEC,
        PROTO_TYPE,
        CAPTURE_ID,
        AUTH_KEY,
        PAYLOAD,
        COMPRESSED_PAYLOAD,
        CORRELATION_ID,
        VLAN_ID,
        NODE_NAME,
    }
)


def inflate(buf: bytes, max_size: int) -> bytes:
    """Inflate a 0x0010 value (zlib or gzip framing), never producing more than max_size bytes."""
    inflater = zlib.decompressobj(47)
    try:
        # max_length stops a zip bomb after max_size + 1 bytes instead of after it has exploded.
        out = inflater.decompress(buf, max_size + 1)
    except zlib.error as exc:
        raise HepError(RejectReason.BAD_COMPRESSION, str(exc)) from None
    if len(out) > max_size:
        raise HepError(RejectReason.OVERSIZE, f"payload inflates past {max_size} bytes")
    if not inflater.eof:
        raise HepError(RejectReason.BAD_COMPRESSION, "compressed stream is incomplete")
    return out


def check_extra_chunk(vendor: int, ctype: int, value: bytes) -> None:
    """Refuse an extra chunk an encoder could not write so that decoding gives it back."""
    if vendor == 0 and ctype in FIELD_TYPES:
        raise ValueError(f"chunk 0x{ctype:04x} is a HepPacket field, not an extra chunk")
    if vendor == 0 and ctype in FIXED_VALUE_SIZE and len(value) != FIXED_VALUE_SIZE[ctype]:
        raise ValueError(
            f"chunk 0x{ctype:04x} needs a {FIXED_VALUE_SIZE[ctype]}-byte value, got {len(value)}"
        )
    if not (0 <= vendor <= 0xFFFF and 0 <= ctype <= 0xFFFF):
        raise ValueError(f"chunk vendor/type out of range: {vendor}/{ctype}")
