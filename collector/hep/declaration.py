"""The HEP wire formats as construct declarations: the reference definition of the formats.

This module owns `HEP3_CHUNK`, `HEP3_PACKET`, `HEP3_DATAGRAM`, `HEP1` and `HEP2` (PROTOCOL.md
A.2-A.4), plus `parse_declared` / `build_declared`, the slow but obviously-correct codec that
the hand-written fast path in `fast.py` is property-tested against. Every rule of A.6 is an
`Ensure` inside the declaration, so a construct failure always maps onto one RejectReason
(see `spec` for the order in which rules are applied).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from construct import (
    Bytes,
    Construct,
    Container,
    ExplicitError,
    FixedSized,
    GreedyBytes,
    GreedyRange,
    If,
    Int8ub,
    Int16ub,
    Int16ul,
    Int32ub,
    Int32ul,
    Int64ub,
    OneOf,
    Padding,
    Rebuild,
    StreamError,
    Struct,
    Switch,
    Terminated,
    TerminatedError,
    ValidationError,
    stream_size,
    this,
)
from construct import ConstructError as _ConstructError

from . import spec
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
    HepPacket,
)

Predicate = Callable[[Any], bool]


class Rejected(ExplicitError):
    """A declared rule failed. ExplicitError so that GreedyRange re-raises instead of stopping."""

    def __init__(self, reason: RejectReason, detail: str, path: str | None = None) -> None:
        super().__init__(detail, path=path)
        self.reason = reason
        self.detail = detail


class Ensure(Construct):
    """Zero-width rule checked while parsing: refuses the packet with `reason` when false."""

    def __init__(self, predicate: Predicate, reason: RejectReason, detail: str) -> None:
        super().__init__()
        self.predicate = predicate
        self.reason = reason
        self.detail = detail
        self.flagbuildnone = True

    def _parse(self, stream: Any, context: Any, path: str) -> None:
        if not self.predicate(context):
            raise Rejected(self.reason, self.detail, path=path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> None:
        return None  # builders validate their input before building

    def _sizeof(self, context: Any, path: str) -> int:
        return 0


def _bytes_left(context: Any) -> int:
    stream = context._io
    return int(stream_size(stream) - stream.tell())


# --- HEPv3 -----------------------------------------------------------------------------------

# Typed values of the generic chunks (vendor 0); the fixed-size ones are exactly the sizes in
# spec.FIXED_VALUE_SIZE. Any other chunk value is an octet string.
GENERIC_VALUES: dict[int, Construct] = {
    IP_FAMILY: Int8ub,
    IP_PROTO: Int8ub,
    SRC_IP4: Bytes(4),
    DST_IP4: Bytes(4),
    SRC_IP6: Bytes(16),
    DST_IP6: Bytes(16),
    SRC_PORT: Int16ub,
    DST_PORT: Int16ub,
    TS_SEC: Int32ub,
    TS_USEC: Int32ub,
    PROTO_TYPE: Int8ub,
    CAPTURE_ID: Int32ub,
    KEEPALIVE: Int16ub,
    VLAN_ID: Int16ub,
    0x0014: Int64ub,
    0x0015: Int64ub,
    0x0016: Int16ub,
    0x0017: Int8ub,
    0x0018: Int8ub,
    0x0020: Int16ub,
    0x0021: Int16ub,
    0x0023: Int32ub,
}


def _value_key(ctx: Any) -> int | None:
    return ctx.type if ctx.vendor == 0 else None


def _fixed_size(ctx: Any) -> int | None:
    return spec.FIXED_VALUE_SIZE.get(ctx.type) if ctx.vendor == 0 else None


def _chunk_length(ctx: Any) -> int:
    fixed = _fixed_size(ctx)
    return spec.CHUNK_HEADER_SIZE + (fixed if fixed is not None else len(ctx.value))


def _fixed_size_ok(ctx: Any) -> bool:
    fixed = _fixed_size(ctx)
    return fixed is None or ctx.length - spec.CHUNK_HEADER_SIZE == fixed


HEP3_CHUNK = Struct(
    "vendor" / Int16ub,
    "type" / Int16ub,
    "length" / Rebuild(Int16ub, _chunk_length),  # counts the 6-byte chunk header
    Ensure(lambda ctx: ctx.length >= 6, RejectReason.BAD_CHUNK, "chunk length below 6"),
    Ensure(
        lambda ctx: ctx.length - 6 <= _bytes_left(ctx),
        RejectReason.BAD_CHUNK,
        "chunk runs past the total length",
    ),
    Ensure(_fixed_size_ok, RejectReason.BAD_CHUNK, "fixed-size chunk with the wrong length"),
    "value" / FixedSized(this.length - 6, Switch(_value_key, GENERIC_VALUES, GreedyBytes)),
)

# A partial chunk header stops GreedyRange early; Terminated then refuses the leftover bytes.
HEP3_CHUNKS = Struct("chunks" / GreedyRange(HEP3_CHUNK), Terminated)


def _total_length(ctx: Any) -> int:
    return spec.CHUNK_HEADER_SIZE + sum(_chunk_length(c) for c in ctx.body.chunks)


HEP3_PACKET = Struct(
    "magic" / OneOf(Bytes(4), spec.MAGICS),
    "total_length" / Rebuild(Int16ub, _total_length),  # counts the 6-byte packet header
    Ensure(lambda ctx: ctx.total_length >= 6, RejectReason.BAD_LENGTH, "total length below 6"),
    Ensure(
        lambda ctx: ctx.total_length <= ctx._params.max_size,
        RejectReason.OVERSIZE,
        "total length above the maximum",
    ),
    "body" / FixedSized(this.total_length - 6, HEP3_CHUNKS),
)

# A UDP datagram or a stream record: one packet, then bytes the packet does not claim.
HEP3_DATAGRAM = Struct("packet" / HEP3_PACKET, "trailing" / GreedyBytes)

# --- HEPv1 / HEPv2 (Kamailio sipcapture hep.h structs, not packed) -------------------------------


def _layout_ok(ctx: Any) -> bool:
    layout = spec.HEP12_LAYOUTS.get(ctx.hp_l)
    return layout is not None and layout[0] == ctx.family


def _hep12(version: int) -> Struct:
    address = Switch(this.hp_l, {16: Bytes(4), 40: Bytes(16)})
    return Struct(
        Ensure(
            lambda ctx: _bytes_left(ctx) <= ctx._params.max_size,
            RejectReason.OVERSIZE,
            "datagram above the maximum",
        ),
        "version" / OneOf(Int8ub, [version]),
        "hp_l" / Rebuild(Int8ub, lambda ctx: 16 if len(ctx.src_ip) == 4 else 40),
        "family" / Int8ub,
        "ip_proto" / Int8ub,
        Ensure(
            lambda ctx: ctx.hp_l in spec.HEP12_LAYOUTS,
            RejectReason.BAD_LENGTH,
            "hp_l is neither 16 nor 40",
        ),
        Ensure(_layout_ok, RejectReason.BAD_LENGTH, "hp_l does not match the address family"),
        "src_port" / Int16ub,
        "dst_port" / Int16ub,
        "src_ip" / address,
        "dst_ip" / address,
        "time"
        / If(
            version == 2,
            Struct(
                "ts_sec" / Int32ul,  # little-endian: Kamailio to_le()
                "ts_usec" / Int32ul,
                "capture_id" / Int16ul,  # host order on the (x86) sender
                Padding(2),  # sizeof(struct hep_timehdr) == 12
            ),
        ),
        "payload" / GreedyBytes,  # no length field: the payload ends with the datagram
    )


HEP1 = _hep12(1)
HEP2 = _hep12(2)

# --- codec ---------------------------------------------------------------------------------------


def parse_declared(data: bytes, max_size: int = 65535) -> HepPacket:
    """Decode a HEPv1/v2/v3 packet with the declarations. Raises only HepError."""
    if not data:
        raise HepError(RejectReason.TRUNCATED, "empty input")
    try:
        if data[:4] in spec.MAGICS:
            return _from_v3(HEP3_DATAGRAM.parse(data, max_size=max_size), max_size)
        if data[0] in (1, 2):
            fmt = HEP1 if data[0] == 1 else HEP2
            return _from_v12(fmt.parse(data, max_size=max_size))
    except Rejected as exc:
        raise HepError(exc.reason, exc.detail) from None
    except (StreamError, TerminatedError) as exc:
        raise HepError(RejectReason.TRUNCATED, _first_line(exc)) from None
    except ValidationError as exc:
        raise HepError(RejectReason.BAD_MAGIC, _first_line(exc)) from None
    except _ConstructError as exc:  # not expected; keeps the "only HepError" promise
        raise HepError(RejectReason.BAD_CHUNK, _first_line(exc)) from None
    if len(data) < 4 and any(m.startswith(data) for m in spec.MAGICS):
        raise HepError(RejectReason.TRUNCATED, "shorter than the magic")
    raise HepError(RejectReason.BAD_MAGIC, f"starts with {data[:4].hex()}")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _from_v12(c: Container) -> HepPacket:
    pkt = HepPacket(
        version=c.version,
        family=c.family,
        ip_proto=c.ip_proto,
        src_ip=c.src_ip,
        dst_ip=c.dst_ip,
        src_port=c.src_port,
        dst_port=c.dst_port,
        payload=c.payload,
    )
    if c.time is not None:
        pkt.ts_sec = c.time.ts_sec
        pkt.ts_usec = c.time.ts_usec
        pkt.capture_id = c.time.capture_id
    return pkt


_FIELD_OF: dict[int, str] = {
    IP_FAMILY: "family",
    IP_PROTO: "ip_proto",
    SRC_IP4: "src_ip",
    SRC_IP6: "src_ip",
    DST_IP4: "dst_ip",
    DST_IP6: "dst_ip",
    SRC_PORT: "src_port",
    DST_PORT: "dst_port",
    TS_SEC: "ts_sec",
    TS_USEC: "ts_usec",
    PROTO_TYPE: "proto_type",
    CAPTURE_ID: "capture_id",
    AUTH_KEY: "auth_key",
    PAYLOAD: "payload",
    COMPRESSED_PAYLOAD: "payload",
    CORRELATION_ID: "correlation_id",
    VLAN_ID: "vlan_id",
    NODE_NAME: "node_name",
}


def _from_v3(c: Container, max_size: int) -> HepPacket:
    pkt = HepPacket(version=3, trailing_bytes=len(c.trailing))
    seen: set[int] = set()
    duplicates: list[int] = []
    for chunk in c.packet.body.chunks:
        if chunk.vendor != 0 or chunk.type not in spec.FIELD_TYPES:
            value = chunk.value
            if not isinstance(value, bytes):  # a typed fixed-size chunk: keep its wire bytes
                value = GENERIC_VALUES[chunk.type].build(value)
            pkt.extra_chunks.append((chunk.vendor, chunk.type, value))
            continue
        if chunk.type in seen and chunk.type not in duplicates:
            duplicates.append(chunk.type)
        seen.add(chunk.type)
        setattr(pkt, _FIELD_OF[chunk.type], chunk.value)
        if chunk.type in (PAYLOAD, COMPRESSED_PAYLOAD):
            pkt.compressed = chunk.type == COMPRESSED_PAYLOAD
    pkt.duplicate_chunks = tuple(duplicates)
    if pkt.compressed:
        pkt.payload = spec.inflate(pkt.payload, max_size)
    return pkt


def _v3_chunks(pkt: HepPacket, include_auth_key: bool) -> list[Container]:
    """The chunks of a HEPv3 packet in the order `fast.encode_v3` writes them (Kamailio's)."""

    def chunk(ctype: int, value: Any, vendor: int = 0) -> Container:
        return Container(vendor=vendor, type=ctype, value=value)

    out = [chunk(IP_FAMILY, pkt.family), chunk(IP_PROTO, pkt.ip_proto)]
    for ip, v4, v6 in ((pkt.src_ip, SRC_IP4, SRC_IP6), (pkt.dst_ip, DST_IP4, DST_IP6)):
        if len(ip) not in (4, 16):
            raise ValueError(f"an address must be 4 or 16 bytes, got {len(ip)}")
        out.append(chunk(v4 if len(ip) == 4 else v6, ip))
    out += [
        chunk(SRC_PORT, pkt.src_port),
        chunk(DST_PORT, pkt.dst_port),
        chunk(TS_SEC, pkt.ts_sec),
        chunk(TS_USEC, pkt.ts_usec),
        chunk(PROTO_TYPE, pkt.proto_type),
        chunk(CAPTURE_ID, pkt.capture_id),
    ]
    if pkt.correlation_id is not None:
        out.append(chunk(CORRELATION_ID, pkt.correlation_id))
    if include_auth_key and pkt.auth_key is not None:
        out.append(chunk(AUTH_KEY, pkt.auth_key))
    if pkt.node_name is not None:
        out.append(chunk(NODE_NAME, pkt.node_name))
    if pkt.vlan_id is not None:
        out.append(chunk(VLAN_ID, pkt.vlan_id))
    for vendor, ctype, value in pkt.extra_chunks:
        spec.check_extra_chunk(vendor, ctype, value)
        typed = GENERIC_VALUES.get(ctype) if vendor == 0 else None
        out.append(chunk(ctype, typed.parse(value) if typed is not None else value, vendor))
    out.append(chunk(PAYLOAD, pkt.payload))
    return out


def build_declared(pkt: HepPacket, *, include_auth_key: bool = False) -> bytes:
    """Encode `pkt` as HEPv3 with the declaration. Raises ValueError if it cannot be encoded."""
    body = Container(chunks=_v3_chunks(pkt, include_auth_key))
    packet = Container(magic=spec.MAGIC_HEP3, body=body)
    try:
        return bytes(HEP3_PACKET.build(packet))
    except _ConstructError as exc:
        raise ValueError(f"cannot encode as HEPv3: {_first_line(exc)}") from None
