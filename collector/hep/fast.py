"""The hot path: hand-written HEP decoder and HEPv3 encoder built on struct.

This module owns `decode` (HEPv1/v2/v3 bytes -> HepPacket), `encode_v3` (HepPacket -> HEPv3
bytes in Kamailio's chunk order) and `strip_auth_key`. It must give exactly the results of
`declaration.parse_declared` / `declaration.build_declared` (property-tested), following the
validation order documented in `spec`. `find_call_id` and `looks_like_sip` live in `sipscan`
and are re-exported here for the collector.

Speed: Kamailio siptrace always starts a HEPv3 packet with the same ten fixed-size chunks, so
that prefix (87 bytes for IPv4, 111 for IPv6) is unpacked with one precompiled struct and only
the variable chunks that follow go through the generic chunk walk. When the C extension is
built, `decode` hands a plain HEPv3 packet (field chunks only, each at most once, nothing
compressed) to `_speedups.decode_v3`, which builds the same HepPacket; everything else, and
every refusal, goes through the Python decoder here, which stays the reference.
"""

from __future__ import annotations

import struct

from . import spec
from .errors import HepError, RejectReason
from .model import AUTH_KEY, HepPacket
from .sipscan import find_call_id, looks_like_sip

try:
    from ._speedups import decode_v3 as _decode_plain  # type: ignore
except ImportError:  # no compiler at install time: the Python decoder does it all
    _decode_plain = None

__all__ = ["decode", "encode_v3", "find_call_id", "looks_like_sip", "strip_auth_key"]

_TRUNCATED = RejectReason.TRUNCATED
_BAD_CHUNK = RejectReason.BAD_CHUNK

_CHUNK = struct.Struct(">HHH")
_CHUNK_VT = struct.Struct(">IH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_V12_PORTS = struct.Struct(">HH")
_V2_TIME = struct.Struct("<IIH")
_ZERO4 = b"\x00\x00\x00\x00"


def _kamailio_prefix(
    v6: bool,
) -> tuple[struct.Struct, tuple[int, ...], tuple[int, ...], int, int]:
    """Kamailio's chunks 0001,0002,0003/0005,0004/0006,0007,0008,0009,000a,000b,000c.

    Each chunk header is read as (vendor << 16 | type, length), so recognising the prefix is
    two tuple comparisons of small ints. Returns (struct, types, lengths, end offset, seen mask).
    """
    a = "16s" if v6 else "4s"
    fmt = f">IHB IHB IH{a} IH{a} IHH IHH IHI IHI IHB IHI"
    types = (1, 2, 5, 6, 7, 8, 9, 10, 11, 12) if v6 else (1, 2, 3, 4, 7, 8, 9, 10, 11, 12)
    alen = 22 if v6 else 10
    lengths = (7, 7, alen, alen, 8, 8, 10, 10, 7, 10)
    return struct.Struct(fmt), types, lengths, 6 + sum(lengths), sum(1 << t for t in types)


# Keyed by the low byte of the third chunk's type (at offset 23), which tells the two apart.
_PREFIXES = {3: _kamailio_prefix(False), 5: _kamailio_prefix(True)}
_KAM_END = _PREFIXES[3][3]  # 93, the shorter of the two

# Chunk length (header included) of each field chunk type 0..0x13; 0 = variable length.
_FIELD_LENGTH = tuple(
    spec.CHUNK_HEADER_SIZE + spec.FIXED_VALUE_SIZE[t]
    if t in spec.FIXED_VALUE_SIZE and t in spec.FIELD_TYPES
    else 0
    for t in range(0x14)
)
_IS_FIELD = tuple(t in spec.FIELD_TYPES for t in range(0x14))
_EXTRA_LENGTH = {
    t: spec.CHUNK_HEADER_SIZE + size
    for t, size in spec.FIXED_VALUE_SIZE.items()
    if t not in spec.FIELD_TYPES
}


def decode(data: bytes, max_size: int = 65535) -> HepPacket:
    """Decode one HEPv1/v2/v3 packet. Raises HepError (and nothing else) if it is refused."""
    if _decode_plain is not None and type(data) is bytes:
        pkt = _decode_plain(data, max_size, HepPacket)
        if pkt is not None:
            return pkt
    return decode_python(data, max_size)


def decode_python(data: bytes, max_size: int = 65535) -> HepPacket:
    """`decode` without the C extension: the reference the C path is tested against."""
    n = len(data)
    magic = data[:4]
    if magic == b"HEP3" or magic == b"EEP3":
        return _decode_v3(data, n, max_size)
    if n and (data[0] == 1 or data[0] == 2):
        return _decode_v12(data, n, max_size)
    if n < 4 and (b"HEP3".startswith(data) or b"EEP3".startswith(data)):
        raise HepError(_TRUNCATED, "shorter than the magic")
    raise HepError(RejectReason.BAD_MAGIC, f"starts with {magic.hex()}")


def _decode_v3(data: bytes, n: int, max_size: int) -> HepPacket:
    if n < 6:
        raise HepError(_TRUNCATED, "shorter than the HEPv3 header")
    total = data[4] << 8 | data[5]
    if total < 6:
        raise HepError(RejectReason.BAD_LENGTH, f"total length {total}")
    if total > max_size:
        raise HepError(RejectReason.OVERSIZE, f"total length {total} above {max_size}")
    if total > n:
        raise HepError(_TRUNCATED, f"total length {total}, only {n} bytes")

    family = 2
    ip_proto = 17
    src_ip = dst_ip = _ZERO4
    src_port = dst_port = ts_sec = ts_usec = capture_id = 0
    proto_type = 1
    payload = b""
    compressed = False
    auth_key = correlation_id = node_name = None
    vlan_id = None
    extra: list[tuple[int, int, bytes]] = []
    duplicates: list[int] | None = None
    seen = 0
    off = 6

    prefix = _PREFIXES.get(data[23]) if total >= _KAM_END else None
    if prefix is not None and total >= prefix[3]:
        k = prefix[0].unpack_from(data, 6)
        if k[0::3] == prefix[1] and k[1::3] == prefix[2]:
            (
                family,
                ip_proto,
                src_ip,
                dst_ip,
                src_port,
                dst_port,
                ts_sec,
                ts_usec,
                proto_type,
                capture_id,
            ) = k[2::3]
            seen = prefix[4]
            off = prefix[3]

    unpack_chunk = _CHUNK_VT.unpack_from
    while off < total:
        if total - off < 6:
            raise HepError(_TRUNCATED, f"partial chunk header at offset {off}")
        vt, clen = unpack_chunk(data, off)  # vt = vendor << 16 | type
        if clen < 6:
            raise HepError(_BAD_CHUNK, f"chunk 0x{vt:08x} length {clen}")
        end = off + clen
        if end > total:
            raise HepError(_BAD_CHUNK, f"chunk 0x{vt:08x} runs past the total length")
        v = off + 6
        off = end
        if vt >= 0x14 or not _IS_FIELD[vt]:  # vendor chunks have vt >= 0x10000
            if vt in _EXTRA_LENGTH and clen != _EXTRA_LENGTH[vt]:
                raise HepError(_BAD_CHUNK, f"chunk 0x{vt:04x} length {clen}")
            extra.append((vt >> 16, vt & 0xFFFF, data[v:end]))
            continue
        ctype = vt
        fixed = _FIELD_LENGTH[ctype]
        if fixed and clen != fixed:
            raise HepError(_BAD_CHUNK, f"chunk 0x{ctype:04x} length {clen}")
        bit = 1 << ctype
        if seen & bit:
            if duplicates is None:
                duplicates = [ctype]
            elif ctype not in duplicates:
                duplicates.append(ctype)
        seen |= bit
        if ctype < 0x0D:
            if ctype < 0x07:
                if ctype == 0x01:
                    family = data[v]
                elif ctype == 0x02:
                    ip_proto = data[v]
                elif ctype & 1:  # 0x03 or 0x05
                    src_ip = data[v:end]
                else:  # 0x04 or 0x06
                    dst_ip = data[v:end]
            elif ctype == 0x07:
                src_port = data[v] << 8 | data[v + 1]
            elif ctype == 0x08:
                dst_port = data[v] << 8 | data[v + 1]
            elif ctype == 0x09:
                ts_sec = _U32.unpack_from(data, v)[0]
            elif ctype == 0x0A:
                ts_usec = _U32.unpack_from(data, v)[0]
            elif ctype == 0x0B:
                proto_type = data[v]
            else:
                capture_id = _U32.unpack_from(data, v)[0]
        elif ctype == 0x0F:
            payload = data[v:end]
            compressed = False
        elif ctype == 0x11:
            correlation_id = data[v:end]
        elif ctype == 0x0E:
            auth_key = data[v:end]
        elif ctype == 0x10:
            payload = data[v:end]
            compressed = True
        elif ctype == 0x13:
            node_name = data[v:end]
        else:  # 0x12, the only field type left
            vlan_id = data[v] << 8 | data[v + 1]

    if compressed:
        payload = spec.inflate(payload, max_size)
    return HepPacket(
        3,
        family,
        ip_proto,
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        ts_sec,
        ts_usec,
        proto_type,
        capture_id,
        payload,
        compressed,
        auth_key,
        correlation_id,
        node_name,
        vlan_id,
        extra,
        () if duplicates is None else tuple(duplicates),
        n - total,
    )


def _decode_v12(data: bytes, n: int, max_size: int) -> HepPacket:
    if n > max_size:
        raise HepError(RejectReason.OVERSIZE, f"datagram of {n} bytes above {max_size}")
    if n < 4:
        raise HepError(_TRUNCATED, "shorter than the HEPv1/v2 header")
    version, hp_l, family, ip_proto = data[0], data[1], data[2], data[3]
    layout = spec.HEP12_LAYOUTS.get(hp_l)
    if layout is None:
        raise HepError(RejectReason.BAD_LENGTH, f"hp_l {hp_l} is neither 16 nor 40")
    want_family, alen = layout
    if family != want_family:
        raise HepError(RejectReason.BAD_LENGTH, f"hp_l {hp_l} with family {family}")
    header = hp_l + spec.HEP2_TIME_BLOCK if version == 2 else hp_l
    if n < header:
        raise HepError(_TRUNCATED, f"{n} bytes, header needs {header}")
    src_port, dst_port = _V12_PORTS.unpack_from(data, 4)
    pkt = HepPacket(
        version,
        family,
        ip_proto,
        data[8 : 8 + alen],
        data[8 + alen : hp_l],
        src_port,
        dst_port,
        payload=data[header:],
    )
    if version == 2:
        pkt.ts_sec, pkt.ts_usec, pkt.capture_id = _V2_TIME.unpack_from(data, hp_l)
    return pkt


# --- encoder ---------------------------------------------------------------------------------

_PREFIX4 = struct.Struct(">4sH IHB IHB IH4s IH4s IHH IHH IHI IHI IHB IHI")
_PREFIX6 = struct.Struct(">4sH IHB IHB IH16s IH16s IHH IHH IHI IHI IHB IHI")


def encode_v3(pkt: HepPacket, *, include_auth_key: bool = False) -> bytes:
    """Encode `pkt` as HEPv3 (uncompressed 0x000f payload). Raises ValueError if impossible.

    Chunk order is Kamailio's: 1, 2, 3/4 or 5/6, 7, 8, 9, 10, 11, 12, [0x11], [0x0e only with
    include_auth_key], [0x13], [0x12], extra chunks in order, 0x0f.
    """
    src_ip = pkt.src_ip
    dst_ip = pkt.dst_ip
    tail: list[bytes] = []
    size = 0
    try:
        for ctype, value in (
            (0x11, pkt.correlation_id),
            (0x0E, pkt.auth_key if include_auth_key else None),
            (0x13, pkt.node_name),
        ):
            if value is not None:
                tail.append(_CHUNK.pack(0, ctype, 6 + len(value)))
                tail.append(value)
                size += 6 + len(value)
        if pkt.vlan_id is not None:
            tail.append(_CHUNK.pack(0, 0x12, 8) + _U16.pack(pkt.vlan_id))
            size += 8
        for vendor, ctype, value in pkt.extra_chunks:
            spec.check_extra_chunk(vendor, ctype, value)
            tail.append(_CHUNK.pack(vendor, ctype, 6 + len(value)))
            tail.append(value)
            size += 6 + len(value)
        payload = pkt.payload
        tail.append(_CHUNK.pack(0, 0x0F, 6 + len(payload)))
        tail.append(payload)
        size += 6 + len(payload)

        if len(src_ip) == 4 and len(dst_ip) == 4:
            total = _KAM_END + size
            prefix_struct = _PREFIX4
        elif len(src_ip) == 16 and len(dst_ip) == 16:
            total = _KAM_END + 24 + size
            prefix_struct = _PREFIX6
        else:
            return _encode_mixed(pkt, b"".join(tail), size)
        if total > spec.MAX_TOTAL_LENGTH:
            raise ValueError(f"HEPv3 packet of {total} bytes is too long")
        fam_len = 6 + len(src_ip)
        prefix = prefix_struct.pack(
            b"HEP3",
            total,
            1,
            7,
            pkt.family,
            2,
            7,
            pkt.ip_proto,
            3 if fam_len == 10 else 5,
            fam_len,
            src_ip,
            4 if fam_len == 10 else 6,
            fam_len,
            dst_ip,
            7,
            8,
            pkt.src_port,
            8,
            8,
            pkt.dst_port,
            9,
            10,
            pkt.ts_sec,
            10,
            10,
            pkt.ts_usec,
            11,
            7,
            pkt.proto_type,
            12,
            10,
            pkt.capture_id,
        )
    except struct.error as exc:
        raise ValueError(f"cannot encode as HEPv3: {exc}") from None
    tail.insert(0, prefix)
    return b"".join(tail)


def _encode_mixed(pkt: HepPacket, tail: bytes, size: int) -> bytes:
    """The rare packet whose two addresses differ in family (or have a bad length)."""
    parts = [
        _CHUNK.pack(0, 1, 7) + bytes((pkt.family,)) + _CHUNK.pack(0, 2, 7) + bytes((pkt.ip_proto,))
    ]
    for ip, v4, v6 in ((pkt.src_ip, 3, 5), (pkt.dst_ip, 4, 6)):
        if len(ip) not in (4, 16):
            raise ValueError(f"an address must be 4 or 16 bytes, got {len(ip)}")
        parts.append(_CHUNK.pack(0, v4 if len(ip) == 4 else v6, 6 + len(ip)) + ip)
    parts.append(
        struct.pack(
            ">HHHH HHHH HHHI HHHI HHHB HHHI",
            *(0, 7, 8, pkt.src_port, 0, 8, 8, pkt.dst_port),
            *(0, 9, 10, pkt.ts_sec, 0, 10, 10, pkt.ts_usec),
            *(0, 11, 7, pkt.proto_type, 0, 12, 10, pkt.capture_id),
        )
    )
    parts.append(tail)
    body = b"".join(parts)
    total = 6 + len(body)
    if total > spec.MAX_TOTAL_LENGTH:
        raise ValueError(f"HEPv3 packet of {total} bytes is too long")
    return b"HEP3" + _U16.pack(total) + body


# --- auth key removal ------------------------------------------------------------------------

_AUTH_HEADER_START = b"\x00\x00\x00\x0e"  # vendor 0, type 0x000e


def strip_auth_key(data: bytes) -> bytes:
    """Remove every 0x000e chunk from a HEPv3 packet and fix its total length.

    Returns `data` itself when there is no such chunk; bytes after the total length are kept
    as they are. Meant for packets `decode` accepted: it checks only the framing it walks
    (HepError if that is broken), and input in which the 4-byte header of an auth chunk never
    occurs is returned unchecked.
    """
    if _AUTH_HEADER_START not in data:
        return data  # no auth chunk can exist (its 4-byte header is nowhere in the buffer)
    n = len(data)
    if data[:4] not in spec.MAGICS:
        raise HepError(RejectReason.BAD_MAGIC, "not a HEPv3 packet")
    if n < 6:
        raise HepError(_TRUNCATED, "shorter than the HEPv3 header")
    total = data[4] << 8 | data[5]
    if total < 6:
        raise HepError(RejectReason.BAD_LENGTH, f"total length {total}")
    if total > n:
        raise HepError(_TRUNCATED, f"total length {total}, only {n} bytes")
    off = 6
    prefix = _PREFIXES.get(data[23]) if total >= _KAM_END else None
    if prefix is not None and total >= prefix[3]:
        k = prefix[0].unpack_from(data, 6)
        if k[0::3] == prefix[1] and k[1::3] == prefix[2]:
            off = prefix[3]
    cuts: list[tuple[int, int]] = []
    while off < total:
        if total - off < 6:
            raise HepError(_TRUNCATED, f"partial chunk header at offset {off}")
        vendor, ctype, clen = _CHUNK.unpack_from(data, off)
        if clen < 6 or off + clen > total:
            raise HepError(_BAD_CHUNK, f"chunk 0x{ctype:04x} length {clen}")
        if vendor == 0 and ctype == AUTH_KEY:
            cuts.append((off, off + clen))
        off += clen
    if not cuts:
        return data
    parts = []
    start = 6
    for cut_start, cut_end in cuts:
        parts.append(data[start:cut_start])
        start = cut_end
    parts.append(data[start:])
    body = b"".join(parts)
    new_total = total - sum(e - s for s, e in cuts)
    return data[:4] + _U16.pack(new_total) + body
