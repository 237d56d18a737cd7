"""pcap/pcapng replay: frames written with dpkt's writers, read back as HEP, sent for real."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest
from hepbuild import hep12, kamailio_packet, sip_request

from collector import replay as rp
from collector.hep.fast import decode

SRC4, DST4 = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 5])
SRC6 = bytes.fromhex("20010db8000000000000000000000010")
DST6 = bytes.fromhex("20010db8000000000000000000000020")
T0 = 1700000000.123456

# --- frame builders, written from the header layouts (not with dpkt's packers) -------------------


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def ipv4(proto: int, l4: bytes, *, ident: int = 1, frag: int = 0, src=SRC4, dst=DST4) -> bytes:
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), ident, frag, 64, proto, 0)
    return head + src + dst + l4


def ipv6(proto: int, l4: bytes, *, src=SRC6, dst=DST6) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + src + dst + l4


def ether(ip: bytes, *, vlan: int | None = None) -> bytes:
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    head = bytes(6) + bytes([2, 0, 0, 0, 0, 1])
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + ip


def link(linktype: int, ip: bytes) -> bytes:
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    family = 2 if ip[0] >> 4 == 4 else 30
    if linktype == rp.LINKTYPE_ETHERNET:
        return ether(ip)
    if linktype == rp.LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 1, 6, bytes(8), ethertype) + ip
    if linktype == rp.LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 1, 0, 6, bytes(8)) + ip
    if linktype == rp.LINKTYPE_NULL:
        return struct.pack("<I", family) + ip  # host order of a little-endian capturer
    if linktype == rp.LINKTYPE_LOOP:
        return struct.pack(">I", family) + ip
    return ip  # raw IP


Frame = tuple[float, bytes]


def write_capture(path: Path, frames: list[Frame], *, fmt: str = "pcap", **kw: object) -> Path:
    with path.open("wb") as f:
        writer = dpkt.pcapng.Writer(f, **kw) if fmt == "pcapng" else dpkt.pcap.Writer(f, **kw)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)
    return path


def hep_of(items: list[tuple[float, bytes]]) -> list[bytes]:
    return [h for _ts, h in items]


SIP_A = sip_request("a@host")
SIP_B = sip_request("b@host", method="OPTIONS")
HEP_UDP = kamailio_packet(sip_request("hep-in-udp"))
HEPV2 = hep12(2, sip_request("hep-v2"))


# --- what a capture yields ---------------------------------------------------------------


def mixed_frames() -> list[Frame]:
    return [
        (T0, ether(ipv4(17, udp(40000, 9060, HEP_UDP)))),
        (T0 + 1, ether(ipv4(17, udp(40000, 9060, HEPV2)))),
        (T0 + 2, ether(ipv4(17, udp(5060, 5062, SIP_A)))),
        (T0 + 3, ether(ipv6(17, udp(5070, 5071, SIP_B)))),
        (T0 + 4, ether(ipv4(17, udp(53, 53, b"\x12\x34\x01\x00\x00\x01" + bytes(20))))),  # DNS
        (T0 + 5, ether(ipv4(17, udp(4000, 4002, b"\x80\x00" + bytes(170))))),  # RTP
        (T0 + 6, ether(ipv4(17, udp(4000, 4002, b"\x01\x10\x02\x11")))),  # v1-looking junk
        (T0 + 7, ether(ipv4(1, b"\x08\x00" + bytes(30)))),  # ICMP
        (T0 + 8, bytes(12) + b"\x08\x06" + bytes(28)),  # ARP
        (T0 + 9, ether(ipv4(17, udp(1, 2, b"")), vlan=5)[:-8] + b"\x00\x01"),  # cut UDP header
    ]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_mixed_capture(tmp_path: Path, fmt: str) -> None:
    path = write_capture(tmp_path / f"mixed.{fmt}", mixed_frames(), fmt=fmt)
    scanner = rp.CaptureScanner(capture_id=77)
    got = list(rp.scan_capture(path, scanner))
    assert [h for _, h in got[:2]] == [HEP_UDP, HEPV2]  # HEP is passed on untouched
    assert [round(ts, 6) for ts, _ in got] == [round(T0 + i, 6) for i in range(4)]
    sip4, sip6 = decode(got[2][1]), decode(got[3][1])
    assert (sip4.version, sip4.family, sip4.ip_proto, sip4.proto_type) == (3, 2, 17, 1)
    assert (sip4.src_ip, sip4.dst_ip, sip4.src_port, sip4.dst_port) == (SRC4, DST4, 5060, 5062)
    assert (sip4.ts_sec, sip4.ts_usec) == (1700000002, 123456)
    assert (sip4.capture_id, sip4.payload) == (77, SIP_A)
    assert (sip6.family, sip6.src_ip, sip6.dst_ip, sip6.payload) == (10, SRC6, DST6, SIP_B)
    stats = scanner.stats
    assert (stats.frames, stats.hep, stats.sip_wrapped) == (10, 2, 2)
    assert (stats.ignored_payloads, stats.not_udp_tcp, stats.not_ip, stats.malformed) == (
        3,
        1,
        1,
        1,
    )


@pytest.mark.parametrize(
    "linktype",
    [
        rp.LINKTYPE_ETHERNET,
        rp.LINKTYPE_LINUX_SLL,
        rp.LINKTYPE_LINUX_SLL2,
        rp.LINKTYPE_RAW,
        rp.LINKTYPE_NULL,
        rp.LINKTYPE_LOOP,
    ],
)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_link_types(tmp_path: Path, linktype: int, fmt: str) -> None:
    frames = [
        (T0, link(linktype, ipv4(17, udp(1, 9060, HEP_UDP)))),
        (T0, link(linktype, ipv4(17, udp(5060, 5060, SIP_A)))),
        (T0, link(linktype, ipv6(17, udp(5060, 5060, SIP_B)))),
        (T0, link(linktype, ipv6(6, tcp(5060, 5060, 1, SIP_A)))),
    ]
    path = write_capture(tmp_path / "l.cap", frames, fmt=fmt, linktype=linktype)
    got = hep_of(list(rp.iter_hep_packets(path)))
    assert got[0] == HEP_UDP
    assert [decode(h).payload for h in got[1:]] == [SIP_A, SIP_B, SIP_A]
    assert [decode(h).ip_proto for h in got[1:]] == [17, 17, 6]


def test_nanosecond_pcap_keeps_microseconds(tmp_path: Path) -> None:
    path = write_capture(
        tmp_path / "ns.pcap", [(T0, ether(ipv4(17, udp(5060, 5060, SIP_A))))], nano=True
    )
    pkt = decode(hep_of(list(rp.iter_hep_packets(path)))[0])
    assert (pkt.ts_sec, pkt.ts_usec) == (1700000000, 123456)


def test_vlan_tagged_ethernet(tmp_path: Path) -> None:
    frames = [(T0, ether(ipv4(17, udp(5060, 5060, SIP_A)), vlan=100))]
    got = hep_of(list(rp.iter_hep_packets(write_capture(tmp_path / "v.pcap", frames))))
    assert [decode(h).payload for h in got] == [SIP_A]


def test_sip_over_tcp_is_framed_by_content_length(tmp_path: Path) -> None:
    with_body = sip_request("body@host", body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n")
    stream = SIP_A + b"\r\n\r\n" + with_body + SIP_B  # CRLF keep-alives between messages
    cut1, cut2 = len(SIP_A) + 10, len(SIP_A) + len(with_body) - 5
    segments = [stream[:cut1], stream[cut1:cut2], stream[cut2:]]
    seq = 1000
    frames = [(T0, ether(ipv4(6, tcp(40000, 5060, seq - 1, b"", flags=0x02))))]  # SYN
    for i, seg in enumerate(segments):
        frames.append((T0 + i + 1, ether(ipv4(6, tcp(40000, 5060, seq, seg)))))
        if i == 0:  # a retransmission of the first segment changes nothing
            frames.append((T0 + 1.5, ether(ipv4(6, tcp(40000, 5060, seq, seg)))))
        seq += len(seg)
    got = list(rp.iter_hep_packets(write_capture(tmp_path / "t.pcap", frames)))
    assert [decode(h).payload for _, h in got] == [SIP_A, with_body, SIP_B]
    assert [round(ts - T0) for ts, _ in got] == [1, 3, 3]  # time of the completing segment
    assert all(decode(h).ip_proto == 6 for _, h in got)


def test_hep3_over_tcp_is_split_by_its_framing(tmp_path: Path) -> None:
    packets = [kamailio_packet(sip_request(f"tcp-{i}")) for i in range(4)]
    stream = b"".join(packets)
    cuts = [0, len(packets[0]) + len(packets[1]), len(packets[0]) * 2 + 3, len(stream)]
    frames = []
    for i in range(3):
        seg = stream[cuts[i] : cuts[i + 1]]
        frames.append((T0 + i, ether(ipv4(6, tcp(5060, 9060, 7 + cuts[i], seg)))))
    got = hep_of(list(rp.iter_hep_packets(write_capture(tmp_path / "h.pcap", frames))))
    assert got == packets


def test_tcp_gap_drops_the_broken_message_and_resyncs(tmp_path: Path) -> None:
    first, second = kamailio_packet(b"one"), kamailio_packet(b"two")
    frames = [
        (T0, ether(ipv4(6, tcp(1, 2, 100, first[:20])))),
        # first[20:] was never captured; the next segment starts a new packet
        (T0, ether(ipv4(6, tcp(1, 2, 100 + len(first), second)))),
    ]
    scanner = rp.CaptureScanner()
    got = hep_of(list(rp.scan_capture(write_capture(tmp_path / "g.pcap", frames), scanner)))
    assert got == [second]
    assert scanner.stats.tcp_resyncs == 1


def test_fragmented_udp_is_reassembled(tmp_path: Path) -> None:
    big = sip_request("frag@host", body=b"a=x\r\n" * 600)
    l4 = udp(5060, 5060, big)
    pieces = [l4[i : i + 1480] for i in range(0, len(l4), 1480)]
    frames = []
    for n, piece in enumerate(pieces):
        more = 0x2000 if n < len(pieces) - 1 else 0
        frames.append((T0 + n, ether(ipv4(17, piece, ident=42, frag=more | (n * 1480 // 8)))))
    frames.insert(0, frames.pop())  # fragments may arrive out of order
    scanner = rp.CaptureScanner()
    got = hep_of(list(rp.scan_capture(write_capture(tmp_path / "f.pcap", frames), scanner)))
    assert [decode(h).payload for h in got] == [big]
    assert scanner.stats.fragments == len(pieces)


def test_not_a_capture_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"this is not a capture")
    with pytest.raises(ValueError, match="not a pcap"):
        list(rp.iter_hep_packets(path))


def test_shared_two_packet_stream_over_tcp(tmp_path: Path) -> None:
    # The project's own stand-in for the shared stream vector: 2 packets back to back.
    stream = kamailio_packet(SIP_A, correlation_id=b"c", auth_key=b"k") + kamailio_packet(
        SIP_B, src=SRC6, dst=DST6
    )
    frames = [(T0, ether(ipv4(6, tcp(1, 2, i, stream[i : i + 1])))) for i in range(len(stream))]
    got = hep_of(list(rp.iter_hep_packets(write_capture(tmp_path / "s.pcap", frames))))
    assert b"".join(got) == stream and len(got) == 2


# --- sending -----------------------------------------------------------------------------


def test_parse_target() -> None:
    assert rp.parse_target("udp://127.0.0.1:9060") == ("udp", "127.0.0.1", 9060)
    assert rp.parse_target("tcp://[::1]:9061") == ("tcp", "::1", 9061)
    for bad in ("http://h:1", "udp://h", "h:9060", "udp://:9060", "tcp://h:99999"):
        with pytest.raises(ValueError):
            rp.parse_target(bad)


def test_pacer() -> None:
    pacer = rp.Pacer(10.0)
    assert [round(pacer.delay(100.0), 3) for _ in range(3)] == [0.0, 0.1, 0.2]
    assert pacer.delay(101.0) == 0.0  # behind schedule: no waiting, no catching up later
    assert rp.Pacer(None).delay(5.0) == 0.0
    with pytest.raises(ValueError):
        rp.Pacer(0)


def replay_frames() -> list[Frame]:
    frames = mixed_frames()[:4]  # HEPv3, HEPv2, SIP v4, SIP v6
    frames.append((T0 + 5, ether(ipv4(6, tcp(5060, 5060, 1, SIP_A + SIP_B)))))
    return frames


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_replay_to_udp(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "r.pcapng", replay_frames(), fmt="pcapng")
    expected = hep_of(list(rp.iter_hep_packets(path, capture_id=9)))
    assert len(expected) == 6
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    received: list[bytes] = []

    def receive() -> None:
        while len(received) < 2 * len(expected):
            received.append(sock.recv(65535))

    thread = run_in_thread(receive)
    port = sock.getsockname()[1]
    result = rp.replay(path, f"udp://127.0.0.1:{port}", rate=None, loop=2, capture_id=9)
    thread.join(5)
    sock.close()
    assert received == expected * 2
    assert (result.packets, result.sent, result.skipped) == (12, 12, 0)
    assert result.bytes_sent == 2 * sum(map(len, expected))
    assert "sent 12 of 12" in str(result)


def test_replay_to_tcp_skips_v1_v2(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "r.pcap", replay_frames())
    expected = [h for h in hep_of(list(rp.iter_hep_packets(path))) if h[:4] == b"HEP3"]
    assert len(expected) == 5
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    chunks: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            while data := conn.recv(65536):
                chunks.append(data)

    thread = run_in_thread(serve)
    port = server.getsockname()[1]
    start = time.monotonic()
    result = rp.replay(path, f"tcp://127.0.0.1:{port}", rate=50.0, loop=1)
    elapsed = time.monotonic() - start
    thread.join(5)
    server.close()
    stream = b"".join(chunks)
    assert stream == b"".join(expected)
    assert (result.packets, result.sent, result.skipped) == (6, 5, 1)  # the HEPv2 packet
    assert elapsed >= 4 / 50 * 0.9  # 5 packets at 50/s: the last one is due after 80 ms


def test_replay_rejects_bad_arguments(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "r.pcap", replay_frames())
    with pytest.raises(ValueError):
        rp.replay(path, "udp://127.0.0.1:9", loop=0)
    with pytest.raises(ValueError):
        rp.replay(path, "ftp://127.0.0.1:9")


def test_the_stream_vector_is_split_when_shared_is_present(tmp_path: Path) -> None:
    from hepvectors import load_hex, shared_hep_dir

    folder = shared_hep_dir()
    if folder is None:
        pytest.skip("shared/vectors/hep is not present")
    stream = load_hex(folder / "synthetic_tcp_stream_two_hep3.hex")
    frames = [
        (T0, ether(ipv4(6, tcp(1, 2, 0, stream[:400])))),
        (T0, ether(ipv4(6, tcp(1, 2, 400, stream[400:])))),
    ]
    got = hep_of(list(rp.iter_hep_packets(write_capture(tmp_path / "v.pcap", frames))))
    assert got == [stream[:393], stream[393:]]
