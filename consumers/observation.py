"""One captured copy of a SIP message: the HEP packet's addresses, time and payload.

An `Observation` is what every input (a Kafka record, a pcap frame, an in-process queue item)
becomes before the sans-I/O core sees it. `from_hep` builds one from a decoded HEP packet;
`ref` is the evidence id the anomaly rows carry (Kafka topic/partition/offset, or file#index).
"""

from __future__ import annotations

from typing import Any, Final

from mypy_extensions import mypyc_attr

from collector.hep.model import HepPacket
from consumers.value import Value

_TRANSPORTS: Final = {6: "tcp", 17: "udp", 132: "sctp"}


_FIELDS: Final = (
    "ts_us",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "transport",
    "capture_id",
    "node",
    "correlation_id",
    "ref",
    "payload",
)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Observation(Value):
    """One captured copy. A plain class, not a dataclass: one is built per HEP record, and
    compiled, a dataclass runs the interpreted `__init__` the decorator generates (about 5x
    the cost of this one). Equality, repr and `replace` (`Value`) are a dataclass's."""

    __slots__ = _FIELDS
    FIELDS = _FIELDS

    def __init__(
        self,
        ts_us: int,  # capture time (HEP timestamp), microseconds since the epoch
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        transport: str,  # udp, tcp, tls, sctp, ws, wss or "ip<N>"
        capture_id: int,
        node: str,  # capture node name (Kafka header hep.node, or the capture id as text)
        correlation_id: str,  # HEP chunk 0x0011, "" when absent
        ref: str,  # evidence id: "topic/partition/offset", "file.pcap#17", ...
        payload: bytes,
    ) -> None:
        self.ts_us = ts_us
        self.src_ip = src_ip
        self.src_port = src_port
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        self.transport = transport
        self.capture_id = capture_id
        self.node = node
        self.correlation_id = correlation_id
        self.ref = ref
        self.payload = payload

    def to_tuple(self) -> tuple[object, ...]:
        return (
            self.ts_us,
            self.src_ip,
            self.src_port,
            self.dst_ip,
            self.dst_port,
            self.transport,
            self.capture_id,
            self.node,
            self.correlation_id,
            self.ref,
            self.payload,
        )

    @property
    def src(self) -> tuple[str, int]:
        return (self.src_ip, self.src_port)

    @property
    def dst(self) -> tuple[str, int]:
        return (self.dst_ip, self.dst_port)


def transport_name(ip_proto: int | None, tls_hint: bool = False) -> str:
    if ip_proto is None:
        return "unknown"
    if ip_proto == 6 and tls_hint:
        return "tls"
    return _TRANSPORTS.get(ip_proto, f"ip{ip_proto}")


def from_hep(pkt: HepPacket, ref: str, node: str | None = None) -> Observation:
    """An observation of the SIP payload a HEP packet carries (caller checks proto_type)."""
    corr = pkt.correlation_id
    corr_text = corr.decode("utf-8", "replace") if corr else ""
    if node is None:
        node = pkt.node_name.decode("utf-8", "replace") if pkt.node_name else str(pkt.capture_id)
    # Read as Any: a decoder may hand a bytearray or memoryview, and compiled code would
    # check the declared type.
    packet: Any = pkt
    src_ip, dst_ip = packet.src_ip, packet.dst_ip
    try:
        src = _IP_TEXT.get(src_ip) or _ip_text(src_ip)
        dst = _IP_TEXT.get(dst_ip) or _ip_text(dst_ip)
    except TypeError:  # an unhashable buffer (bytearray, memoryview): not cached
        src, dst = _ip_text(src_ip), _ip_text(dst_ip)
    payload = pkt.payload
    proto = pkt.ip_proto
    return Observation(
        pkt.ts_sec * 1_000_000 + pkt.ts_usec,
        src,
        pkt.src_port or 0,
        dst,
        pkt.dst_port or 0,
        "udp" if proto == 17 else transport_name(proto),
        pkt.capture_id or 0,
        node,
        corr_text,
        ref,
        payload if type(payload) is bytes else bytes(payload or b""),
    )


# packed address -> text: a capture sees the same few proxy and peer addresses over and over
_IP_TEXT: Final[dict[bytes, str]] = {}
_IP_TEXT_LIMIT: Final = 65536


def _ip_text(packed: bytes | bytearray | memoryview) -> str:
    if len(packed) == 4:
        text = f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
    elif len(packed) == 16:
        import socket  # only for IPv6: its import is ~4 ms of a short `hepwatch analyze`

        text = socket.inet_ntop(socket.AF_INET6, packed)
    else:
        return ""
    if len(_IP_TEXT) >= _IP_TEXT_LIMIT:
        _IP_TEXT.clear()
    _IP_TEXT[bytes(packed)] = text
    return text
