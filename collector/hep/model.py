"""The decoded HEP packet, independent of the wire version it arrived in.

`HepPacket` is what both decoders (the construct declaration and the hand-written fast
path) return, and what the HEPv3 encoder takes. Addresses are kept as packed bytes (4 or 16
octets) so the hot path never formats strings; `src_ip_text` and friends format on demand.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Generic chunk types (vendor 0x0000), PROTOCOL.md A.4.
IP_FAMILY = 0x0001
IP_PROTO = 0x0002
SRC_IP4 = 0x0003
DST_IP4 = 0x0004
SRC_IP6 = 0x0005
DST_IP6 = 0x0006
SRC_PORT = 0x0007
DST_PORT = 0x0008
TS_SEC = 0x0009
TS_USEC = 0x000A
PROTO_TYPE = 0x000B
CAPTURE_ID = 0x000C
KEEPALIVE = 0x000D
AUTH_KEY = 0x000E
PAYLOAD = 0x000F
COMPRESSED_PAYLOAD = 0x0010
CORRELATION_ID = 0x0011
VLAN_ID = 0x0012
NODE_NAME = 0x0013

AF_INET = 2
AF_INET6 = 10
PROTO_SIP = 1


@dataclass(slots=True)
class HepPacket:
    """One HEP packet. `version` is the version it arrived in (1, 2 or 3)."""

    version: int
    family: int = AF_INET
    ip_proto: int = 17
    src_ip: bytes = b"\x00\x00\x00\x00"
    dst_ip: bytes = b"\x00\x00\x00\x00"
    src_port: int = 0
    dst_port: int = 0
    ts_sec: int = 0
    ts_usec: int = 0
    proto_type: int = PROTO_SIP
    capture_id: int = 0
    payload: bytes = b""  # always the inflated payload
    compressed: bool = False  # payload arrived in chunk 0x0010
    auth_key: bytes | None = None
    correlation_id: bytes | None = None
    node_name: bytes | None = None
    vlan_id: int | None = None
    # Every other chunk, generic or vendor, in arrival order: (vendor, type, value).
    # Kept so that re-encoding loses nothing.
    extra_chunks: list[tuple[int, int, bytes]] = field(default_factory=list)
    # Chunk types that appeared more than once (last one wins, PROTOCOL.md A.6 rule 4).
    duplicate_chunks: tuple[int, ...] = ()
    # Bytes after the declared total length (counted, not part of the packet).
    trailing_bytes: int = 0

    @property
    def timestamp_us(self) -> int:
        return self.ts_sec * 1_000_000 + self.ts_usec

    @property
    def src_ip_text(self) -> str:
        return str(ipaddress.ip_address(self.src_ip))

    @property
    def dst_ip_text(self) -> str:
        return str(ipaddress.ip_address(self.dst_ip))
