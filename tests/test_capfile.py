"""collector.capfile: pcap and pcapng read without a packet library.

Files are written here from the format layouts (both byte orders, µs/ns pcap, pcapng with
several interfaces and sections); dpkt's readers, which the project used before, are the
reference wherever they read a file correctly (one interface per pcapng file)."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from collector import capfile
from collector.capfile import CaptureTruncated, NotACapture, iter_frames

T0 = 1_700_000_000

# --- writers, from the format layouts ------------------------------------------------------------


def pcap_bytes(
    records: list[tuple[int, int, bytes]], *, order: str = "<", nano: bool = False, linktype=1
) -> bytes:
    """records: (seconds, fraction in µs or ns, frame)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for sec, frac, frame in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def _opt(order: str, code: int, data: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(data)) + data + b"\0" * (-len(data) % 4)


def _block(order: str, btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order: str = "<", *, major: int = 1) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, major, 0, -1) + _opt(order, 0, b"")
    return _block(order, 0x0A0D0D0A, body)


def idb(order: str = "<", linktype: int = 1, *, tsresol: int | None = None, tsoffset=0) -> bytes:
    opts = _opt(order, 2, b"eth0\0")  # if_name, to be skipped
    if tsresol is not None:
        opts += _opt(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += _opt(order, 14, struct.pack(order + "q", tsoffset))
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + opts + _opt(order, 0, b""))


def epb(order: str, iface: int, ticks: int, frame: bytes, *, comment: bytes = b"") -> bytes:
    head = struct.pack(
        order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    opts = _opt(order, 1, comment) + _opt(order, 0, b"") if comment else b""
    return _block(order, 6, head + frame + b"\0" * (-len(frame) % 4) + opts)


def pb(order: str, iface: int, ticks: int, frame: bytes) -> bytes:
    head = struct.pack(
        order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    return _block(order, 2, head + frame + b"\0" * (-len(frame) % 4))


def other_blocks(order: str) -> bytes:
    """A name resolution block, an interface statistics block and a custom block."""
    return (
        _block(order, 4, struct.pack(order + "HH", 0, 0))
        + _block(order, 5, struct.pack(order + "III", 0, 0, 0))
        + _block(order, 0x40000BAD, b"abcdefgh")
    )


def frames(
    n: int, seed: int = 1, sizes: tuple[int, ...] = (0, 1, 3, 14, 60, 333, 1514, 9000)
) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice(sizes)) for _ in range(n)]


SMALL = (0, 1, 3, 14, 61)


def with_dpkt(path: Path) -> list[tuple[int, int, bytes]]:
    """What the previous reader gave: dpkt's times rounded to µs, its link type, the bytes."""
    with path.open("rb") as f:
        ng = f.read(4) == capfile.PCAPNG_MAGIC
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if ng else dpkt.pcap.Reader(f)
        return [(round(ts * 1_000_000), reader.datalink(), bytes(b)) for ts, b in reader]


def read(path: Path, chunk: int) -> list[tuple[int, int, bytes]]:
    capfile.CHUNK = chunk
    try:
        return list(iter_frames(path))
    finally:
        capfile.CHUNK = 1 << 20


CHUNKS = [1 << 20, 5, 64]  # small chunks put every record across a refill somewhere

# --- pcap ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_pcap_reads_what_dpkt_read(tmp_path: Path, order: str, nano: bool, chunk: int) -> None:
    rng = random.Random(2)
    top = 1_000_000_000 if nano else 1_000_000
    fracs = [0, 1, 499, 500, 501, 1500, 2500, top - 1] + [rng.randrange(top) for _ in range(60)]
    recs = [
        (T0 + i, frac, f) for i, (frac, f) in enumerate(zip(fracs, frames(len(fracs)), strict=True))
    ]
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(recs, order=order, nano=nano, linktype=113))
    got = read(path, chunk)
    assert got == with_dpkt(path)
    assert all(lt == 113 for _, lt, _ in got) and [f for *_, f in got] == [f for *_, f in recs]
    if nano:  # half to even at 500 ns: 0 -> 0, 500 -> 0 (even), 1500 -> 2, 2500 -> 2
        assert [us - (T0 + i) * 1_000_000 for i, (us, _, _) in enumerate(got[:8])] == [
            0, 0, 0, 0, 1, 2, 2, 1_000_000,
        ]  # fmt: skip


def collect(path: Path) -> tuple[list[tuple[int, int, bytes]], bool]:
    """The frames read, and whether the reader said the file was truncated after them."""
    out: list[tuple[int, int, bytes]] = []
    try:
        for item in iter_frames(path):
            out.append(item)
    except CaptureTruncated:
        return out, True
    return out, False


def test_pcap_cut_anywhere_is_what_dpkt_read(tmp_path: Path) -> None:
    """A cut inside a record header stops with CaptureTruncated; a cut inside the data
    gives the last frame short (as dpkt did)."""
    data = pcap_bytes([(T0 + i, i, f) for i, f in enumerate(frames(5, sizes=SMALL))])
    path = tmp_path / "cut.pcap"
    for cut in range(24, len(data)):
        path.write_bytes(data[:cut])
        want: list[tuple[int, int, bytes]] = []
        with path.open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            try:
                for ts, b in reader:
                    want.append((round(ts * 1_000_000), 1, bytes(b)))
            except dpkt.NeedData:
                truncated = True
            else:
                truncated = False
        assert collect(path) == (want, truncated), cut


# --- pcapng --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("tsresol", [None, 6, 9, 3, 0x80 | 20])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_pcapng_one_interface_reads_what_dpkt_read(
    tmp_path: Path, order: str, tsresol: int | None, chunk: int
) -> None:
    per_s = {None: 10**6, 6: 10**6, 9: 10**9, 3: 10**3, 0x80 | 20: 2**20}[tsresol]
    rng = random.Random(3)
    data = shb(order) + other_blocks(order) + idb(order, 113, tsresol=tsresol, tsoffset=7)
    for i, f in enumerate(frames(50)):
        ticks = (T0 + i) * per_s + rng.randrange(per_s)
        data += (pb if i % 7 == 3 else epb)(order, 0, ticks, f)
        if i == 10:
            data += other_blocks(order) + epb(order, 0, ticks, f, comment=b"retransmitted")
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    got = read(path, chunk)
    assert got == with_dpkt(path) and len(got) == 51
    assert got[0][0] // 1_000_000 == T0 + 7  # if_tsoffset in seconds


@pytest.mark.parametrize("chunk", CHUNKS)
def test_pcapng_interfaces_and_sections_each_keep_their_own(tmp_path: Path, chunk: int) -> None:
    """Two interfaces (Ethernet in µs, Linux cooked in ns) in a little-endian section, then a
    big-endian section with one raw-IP interface in ms: every packet gets its own."""
    a, b, c, d = frames(4, seed=9)
    data = shb("<") + idb("<", 1) + epb("<", 0, T0 * 10**6 + 1, a)
    data += idb("<", 113, tsresol=9) + epb("<", 1, T0 * 10**9 + 2_300, b)
    data += epb("<", 0, T0 * 10**6 + 3, c)
    data += shb(">") + other_blocks(">") + idb(">", 101, tsresol=3) + epb(">", 0, T0 * 1000 + 4, d)
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    assert read(path, chunk) == [
        (T0 * 10**6 + 1, 1, a),
        (T0 * 10**6 + 2, 113, b),  # 2.3 µs
        (T0 * 10**6 + 3, 1, c),
        (T0 * 10**6 + 4_000, 101, d),
    ]


def test_pcapng_packet_of_an_undescribed_interface_is_kept_as_unknown(tmp_path: Path) -> None:
    data = shb() + idb() + epb("<", 0, 5, b"one") + epb("<", 3, 6, b"two")
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    assert list(iter_frames(path)) == [
        (5, 1, b"one"),
        (6, capfile.LINKTYPE_UNKNOWN_INTERFACE, b"two"),
    ]


def test_pcapng_cut_anywhere_gives_a_prefix_then_truncated(tmp_path: Path) -> None:
    blocks = [shb(), idb()] + [epb("<", 0, i, f) for i, f in enumerate(frames(4, sizes=SMALL))]
    data = b"".join(blocks)
    ends = [len(b"".join(blocks[: n + 1])) for n in range(len(blocks))]
    full, truncated = collect(_write(tmp_path / "full.pcapng", data))
    assert not truncated and len(full) == 4
    path = tmp_path / "cut.pcapng"
    for cut in range(ends[1], len(data)):
        path.write_bytes(data[:cut])
        whole = sum(1 for e in ends[2:] if e <= cut)
        assert collect(path) == (full[:whole], cut not in ends), cut


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_pcapng_block_with_mismatched_lengths_stops_as_truncated(tmp_path: Path) -> None:
    bad = bytearray(epb("<", 0, 2, b"two"))
    bad[-4:] = struct.pack("<I", len(bad) + 4)
    path = _write(tmp_path / "x.pcapng", shb() + idb() + epb("<", 0, 1, b"one") + bytes(bad))
    assert collect(path) == ([(1, 1, b"one")], True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"INVITE sip:x SIP/2.0\r\n",
        bytes.fromhex("0a0d0d0a") + b"\x00" * 10,  # pcapng magic, header cut short
        shb()[:8] + b"\x01\x02\x03\x04" + shb()[12:] + idb(),  # unknown byte-order magic
        shb(major=2) + idb() + epb("<", 0, 1, b"x"),
        shb() + epb("<", 0, 1, b"x"),  # no interface description at all
    ],
)
def test_not_a_capture(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NotACapture):
        list(iter_frames(_write(tmp_path / "x.cap", data)))


def test_header_cut_short_is_truncated(tmp_path: Path) -> None:
    for data in (pcap_bytes([])[:20], shb()[:-3], shb() + idb()[:-1]):
        with pytest.raises(CaptureTruncated):
            list(iter_frames(_write(tmp_path / "x.cap", data)))


# --- through the analysis ------------------------------------------------------------------------


def test_analyze_reads_each_pcapng_interface_with_its_link_type(tmp_path: Path) -> None:
    """HEP on an Ethernet interface and the same calls as plain SIP on a Linux cooked one:
    every frame becomes an observation (the previous reader took the first interface's link
    type for all packets and rejected the cooked ones as not IP)."""
    from test_analyze import as_hep, as_sip, hold_call, run_json

    f = hold_call()
    data = shb() + idb("<", 1) + idb("<", 113)
    for (t_hep, hep), (t_sip, sip) in zip(as_hep(f), as_sip(f), strict=True):
        cooked = struct.pack("!HHH8sH", 0, 1, 6, bytes(8), 0x0800) + sip[14:]
        data += epb("<", 0, t_hep, hep) + epb("<", 1, t_sip, cooked)
    doc = run_json(str(_write(tmp_path / "two.pcapng", data)))
    st = doc["stats"]
    assert st["packets"] == st["observations"] == 2 * len(f.obs)
    assert (st["hep"], st["sip_wrapped"], st["rejected"]) == (len(f.obs), len(f.obs), {})
    assert doc["messages"] == 10 and len(doc["dialogs"]) == 1


def test_dpkt_is_loaded_only_for_frames_off_the_fast_path(tmp_path: Path) -> None:
    from test_analyze import as_hep, hold_call

    plain = tmp_path / "plain.pcap"
    plain.write_bytes(pcap_bytes([(t // 10**6, t % 10**6, fr) for t, fr in as_hep(hold_call())]))
    vlan = tmp_path / "vlan.pcap"
    tagged = [fr[:12] + b"\x81\x00\x00\x07" + fr[12:] for _, fr in as_hep(hold_call())]
    vlan.write_bytes(pcap_bytes([(T0, i, fr) for i, fr in enumerate(tagged)]))
    code = (
        "import sys\nfrom consumers.analyze import analyze\n"
        "r = analyze(sys.argv[1])\n"
        "print(r.engine.messages, 'dpkt' in sys.modules)\n"
    )
    for path, loaded in ((plain, "False"), (vlan, "True")):
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["10", loaded], out
