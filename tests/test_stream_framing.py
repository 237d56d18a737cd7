"""HEPv3 stream framing (PROTOCOL.md A.7): any segmentation, several packets per read."""

from __future__ import annotations

import pytest
from hepbuild import hep3, sip_message

from collector.hep.errors import RejectReason
from collector.listeners.framing import FramingError, StreamFramer


def _stream(n: int) -> tuple[bytes, list[bytes]]:
    packets = [hep3(sip_message(f"call-{i}@x", cseq=i + 1)) for i in range(n)]
    return b"".join(packets), packets


def test_every_split_of_a_two_packet_stream() -> None:
    data, packets = _stream(2)
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        out = framer.feed(data[:cut]) + framer.feed(data[cut:])
        assert out == packets, cut
        assert framer.at_packet_boundary()


def test_every_two_splits_and_byte_by_byte() -> None:
    data, packets = _stream(3)
    step = max(1, len(data) // 40)
    for a in range(0, len(data), step):
        for b in range(a, len(data), step):
            framer = StreamFramer()
            out = framer.feed(data[:a]) + framer.feed(data[a:b]) + framer.feed(data[b:])
            assert out == packets
    framer = StreamFramer()
    out = [p for i in range(len(data)) for p in framer.feed(data[i : i + 1])]
    assert out == packets


def test_many_packets_in_one_read() -> None:
    data, packets = _stream(50)
    assert StreamFramer().feed(data) == packets


def test_shared_two_packet_vector_in_every_split(shared) -> None:
    text = (shared / "vectors/hep/synthetic_tcp_stream_two_hep3.hex").read_text()
    data = bytes.fromhex(" ".join(ln for ln in text.splitlines() if not ln.startswith("#")))
    whole = StreamFramer().feed(data)
    assert len(whole) == 2 and b"".join(whole) == data
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == whole


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", RejectReason.BAD_MAGIC),
        (b"\x02\x10\x02\x11\x13\xc4", RejectReason.BAD_MAGIC),  # HEPv2 is not framed on streams
        (b"HEP3\x00\x03", RejectReason.BAD_LENGTH),
    ],
)
def test_lost_framing_raises(junk: bytes, reason: RejectReason) -> None:
    data, _ = _stream(1)
    framer = StreamFramer()
    with pytest.raises(FramingError) as err:
        framer.feed(data + junk)
    assert err.value.reason is reason


def test_oversize_declared_length() -> None:
    framer = StreamFramer(max_packet_bytes=1000)
    with pytest.raises(FramingError) as err:
        framer.feed(b"HEP3\x10\x00")
    assert err.value.reason is RejectReason.OVERSIZE


def test_partial_packet_is_buffered_not_emitted() -> None:
    data, _ = _stream(1)
    framer = StreamFramer()
    assert framer.feed(data[:-1]) == []
    assert framer.buffered == len(data) - 1
    assert not framer.at_packet_boundary()
