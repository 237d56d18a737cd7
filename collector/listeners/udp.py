"""UDP listener: one blocking receive loop on its own thread.

A blocking receive loop is the fastest way to drain a UDP socket from Python (DESIGN
measured 250-350k packets/s lossless against 53k for asyncio's datagram protocol), and
every datagram is one HEP packet (v1, v2 or v3). With the C extension the loop takes up to
`BATCH` datagrams per recvmmsg call and gets them back as Kafka-ready records
(`speedups.recv_batch`), so Python works per batch, not per packet; without it, one
`recvfrom_into` per datagram feeds `Ingest.accept`. The socket gets a large receive buffer
to ride out bursts; when the kernel caps the request (net.core.rmem_max) the listener says
so once, with the figure it got and the sysctl to raise it.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import socket
import threading
import time

from collector.hep import speedups
from collector.ingest import Ingest, ListenerStats

log = logging.getLogger("hepwatch.udp")

_RECV_SIZE = 65535
# Datagrams per recvmmsg call, each into its own 64 KiB slot of a 4 MiB arena.
BATCH = 64


def open_udp_socket(host: str, port: int, receive_buffer: int) -> tuple[socket.socket, int]:
    """Bind a UDP socket with the requested receive buffer; returns it and the buffer granted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    # Linux reports double the usable size (it counts bookkeeping overhead).
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    sock.bind((host, port))
    return sock, granted


class UdpListener:
    def __init__(
        self, host: str, port: int, ingest: Ingest, *, receive_buffer: int, max_senders: int = 1000
    ) -> None:
        self.sock, granted = open_udp_socket(host, port, receive_buffer)
        self.address = self.sock.getsockname()[:2]
        self.name = f"udp://{host}:{self.address[1]}"
        self.stats = ListenerStats("udp", self.name, max_senders=max_senders)
        self.receive_buffer = granted
        if granted < receive_buffer:
            log.warning(
                "%s: asked for a %d-byte receive buffer, the kernel granted %d; "
                "raise it with `sysctl -w net.core.rmem_max=%d` to absorb bursts without loss",
                self.name,
                receive_buffer,
                granted,
                receive_buffer,
            )
        self._ingest = ingest
        self._running = False
        self._thread = threading.Thread(
            target=self._run, name=f"udp-{self.address[1]}", daemon=True
        )

    def start(self) -> None:
        self._running = True
        self._thread.start()
        log.info("listening on %s (receive buffer %d bytes)", self.name, self.receive_buffer)

    def _run(self) -> None:
        if speedups.recv_batch is not None:
            self._run_batches(speedups.recv_batch)
        else:
            self._run_single()

    def _run_batches(self, recv_batch: speedups.RecvBatchFn) -> None:
        # Anonymous memory: only the pages datagrams are written to become resident.
        arena = mmap.mmap(-1, BATCH * _RECV_SIZE)
        sock = self.sock
        ingest = self._ingest
        accept_batch = ingest.accept_batch
        max_size = ingest.max_packet_bytes
        fast = ingest.batch_fast_path
        stats = self.stats
        while self._running:
            try:
                batch = recv_batch(sock, arena, BATCH, max_size, fast)
            except OSError:
                if not self._running:
                    return
                log.exception("%s: receive failed", self.name)
                continue
            if not self._running:
                # Accept what came with stop()'s wake-up datagram, then stop.
                accept_batch(*_without_empty(batch), stats)
                return
            accept_batch(*batch, stats)

    def _run_single(self) -> None:
        # recvfrom_into a reused buffer: recvfrom(65535) allocates and shrinks a 64 KiB
        # object per datagram, which alone lost a fifth of the packets at 200k/s here.
        buf = bytearray(_RECV_SIZE)
        view = memoryview(buf)
        recv_into = self.sock.recvfrom_into
        accept = self._ingest.accept
        stats = self.stats
        clock = time.time_ns
        while self._running:
            try:
                size, addr = recv_into(buf)
                data = bytes(view[:size])
            except OSError:
                if not self._running:
                    return
                log.exception("%s: receive failed", self.name)
                continue
            if not self._running:
                return  # the wake-up datagram sent by stop()
            accept(data, addr[0], addr[1], clock() // 1000, stats)

    def stop(self) -> None:
        """Stop receiving; the datagrams already read are accepted before this returns."""
        if not self._running:
            return
        self._running = False
        # Unblock recvfrom with an empty datagram to ourselves, then wait for the thread.
        host, port = self.address
        family = self.sock.family
        target = "::1" if family == socket.AF_INET6 and host in ("::", "0.0.0.0") else host
        if target in ("0.0.0.0", ""):
            target = "127.0.0.1"
        with socket.socket(family, socket.SOCK_DGRAM) as wake, contextlib.suppress(OSError):
            wake.sendto(b"", (target, port))
        self._thread.join(timeout=5)
        self.sock.close()

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on this socket (from /proc/net/udp), if readable."""
        return udp_socket_drops(self.sock)


def _without_empty(batch: speedups.RecvResult) -> speedups.RecvResult:
    """The batch without its empty datagrams (slow records of no bytes), e.g. stop()'s."""
    received_us, records, sources, n_slow, fast_bytes, fast_trailing = batch
    kept = [r for r in records if r[2] >= 0 or r[0]]
    n_slow -= len(records) - len(kept)
    return received_us, kept, sources, n_slow, fast_bytes, fast_trailing


def udp_socket_drops(sock: socket.socket) -> int | None:
    """The `drops` column of /proc/net/udp{,6} for this socket (matched by inode)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                for line in fh:
                    cols = line.split()
                    if len(cols) > 12 and cols[9] == inode:
                        return int(cols[-1])
        except OSError:
            return None
    return None
