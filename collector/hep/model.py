"""The decoded HEP packet, independent of the wire version it arrived in.

`HepPacket` is what both decoders (the construct declaration and the hand-written fast
path) return, and what the HEPv3 encoder takes. Addresses are kept as packed bytes (4 or 16
octets) so the hot path never formats strings; `src_ip_text` and friends format on demand.
"""

from __future__ import annotations

from typing import ClassVar, Final, TypeAlias

from mypy_extensions import mypyc_attr

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


# What the addresses may be: the decoders give bytes; a caller building a packet may pass
# any of these (`consumers.observation.from_hep` takes them all).
Buffer: TypeAlias = bytes | bytearray | memoryview

_FIELDS: Final = (
    "version",
    "family",
    "ip_proto",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "ts_sec",
    "ts_usec",
    "proto_type",
    "capture_id",
    "payload",
    "compressed",
    "auth_key",
    "correlation_id",
    "node_name",
    "vlan_id",
    "extra_chunks",
    "duplicate_chunks",
    "trailing_bytes",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class HepPacket:
    """One HEP packet. `version` is the version it arrived in (1, 2 or 3).

    Compiled (setup.py), with a dataclass's construction, equality and repr: the decoders
    build one per packet, and a dataclass would run an interpreted `__init__` of twenty
    arguments for each, after writing and compiling its methods at import. Equality and repr
    are written here rather than taken from `consumers.value.Value`: the collector does not
    depend on the consumers."""

    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS
    __slots__ = _FIELDS

    def __init__(
        self,
        version: int,
        family: int = AF_INET,
        ip_proto: int = 17,
        src_ip: Buffer = b"\x00\x00\x00\x00",
        dst_ip: Buffer = b"\x00\x00\x00\x00",
        src_port: int = 0,
        dst_port: int = 0,
        ts_sec: int = 0,
        ts_usec: int = 0,
        proto_type: int = PROTO_SIP,
        capture_id: int = 0,
        payload: bytes = b"",  # always the inflated payload
        compressed: bool = False,  # payload arrived in chunk 0x0010
        auth_key: bytes | None = None,
        correlation_id: bytes | None = None,
        node_name: bytes | None = None,
        vlan_id: int | None = None,
        # Every other chunk, generic or vendor, in arrival order: (vendor, type, value).
        # Kept so that re-encoding loses nothing.
        extra_chunks: list[tuple[int, int, bytes]] | None = None,
        # Chunk types that appeared more than once (last one wins, PROTOCOL.md A.6 rule 4).
        duplicate_chunks: tuple[int, ...] = (),
        # Bytes after the declared total length (counted, not part of the packet).
        trailing_bytes: int = 0,
    ) -> None:
        self.version = version
        self.family = family
        self.ip_proto = ip_proto
        self.src_ip = src_ip
        self.dst_ip = dst_ip
        self.src_port = src_port
        self.dst_port = dst_port
        self.ts_sec = ts_sec
        self.ts_usec = ts_usec
        self.proto_type = proto_type
        self.capture_id = capture_id
        self.payload = payload
        self.compressed = compressed
        self.auth_key = auth_key
        self.correlation_id = correlation_id
        self.node_name = node_name
        self.vlan_id = vlan_id
        self.extra_chunks: list[tuple[int, int, bytes]] = (
            [] if extra_chunks is None else extra_chunks
        )
        self.duplicate_chunks = duplicate_chunks
        self.trailing_bytes = trailing_bytes

    def to_tuple(self) -> tuple[object, ...]:
        return (
            self.version,
            self.family,
            self.ip_proto,
            self.src_ip,
            self.dst_ip,
            self.src_port,
            self.dst_port,
            self.ts_sec,
            self.ts_usec,
            self.proto_type,
            self.capture_id,
            self.payload,
            self.compressed,
            self.auth_key,
            self.correlation_id,
            self.node_name,
            self.vlan_id,
            self.extra_chunks,
            self.duplicate_chunks,
            self.trailing_bytes,
        )

    def __eq__(self, other: object) -> bool:  # defined alone: unhashable, as a dataclass
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, HepPacket)
        return self.to_tuple() == other.to_tuple()

    def __repr__(self) -> str:
        inner = ", ".join([f"{n}={v!r}" for n, v in zip(_FIELDS, self.to_tuple(), strict=True)])
        return f"HepPacket({inner})"

    @property
    def timestamp_us(self) -> int:
        return self.ts_sec * 1_000_000 + self.ts_usec

    @property
    def src_ip_text(self) -> str:
        import ipaddress  # for display only: not worth its import on every start-up

        return str(ipaddress.ip_address(bytes(self.src_ip)))

    @property
    def dst_ip_text(self) -> str:
        import ipaddress

        return str(ipaddress.ip_address(bytes(self.dst_ip)))
