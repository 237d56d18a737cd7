"""Micro-benchmark of the disk spool: appends/s and drain records/s for 800-byte records.

Run: .venv/bin/python bench/spool.py [--records N] [--dir PATH] [--batch N]

A record is shaped like what the collector spools: an 800-byte HEPv3 value, a Call-ID
key and the four contract headers. Appends cycle through a pool of 1024 distinct records
(holding N record objects alive would make the benchmark measure the garbage collector).
Drain is read_batch + ack per batch (each ack persists the cursor with fsync), as the
publisher's drain loop does it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from collector.spool import Spool, SpoolRecord, encode_record

VALUE_BYTES = 800


def make_records(n: int) -> list[SpoolRecord]:
    value = os.urandom(VALUE_BYTES)
    return [
        SpoolRecord(
            key=f"{i:08x}-a84b4c76e66710@pc33.atlanta.example.com".encode(),
            value=value,
            timestamp_ms=1_700_000_000_000 + i,
            headers=[
                ("hepwatch.node", b"collector-1"),
                ("hepwatch.received_ms", b"1700000000123"),
                ("hepwatch.sender", b"10.20.30.40:9060"),
                ("hepwatch.hep_version", b"3"),
            ],
        )
        for i in range(n)
    ]


def cycle(pool: list[SpoolRecord], n: int) -> Iterator[SpoolRecord]:
    size = len(pool)
    return (pool[i % size] for i in range(n))


def bench_append(directory: Path, pool: list[SpoolRecord], n: int, threads: int) -> float:
    spool = Spool(directory, max_bytes=1 << 40)
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def run() -> None:
        append = spool.append
        recs = cycle(pool, per)
        barrier.wait()
        for r in recs:
            append(r)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    spool.flush()
    elapsed = time.perf_counter() - t0
    spool.close()
    return per * threads / elapsed


def bench_append_many(directory: Path, pool: list[SpoolRecord], n: int, batch: int) -> float:
    spool = Spool(directory, max_bytes=1 << 40)
    chunks = [pool[i : i + batch] for i in range(0, len(pool), batch)]
    t0 = time.perf_counter()
    done = 0
    while done < n:
        for chunk in chunks:
            spool.append_many(chunk)
        done += len(pool)
    spool.flush()
    elapsed = time.perf_counter() - t0
    spool.close()
    return done / elapsed


def bench_recover(directory: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    spool = Spool(directory, max_bytes=1 << 40)
    elapsed = time.perf_counter() - t0
    n = len(spool)
    spool.close()
    return elapsed, n


def bench_drain(directory: Path, batch: int) -> tuple[float, int]:
    spool = Spool(directory, max_bytes=1 << 40)
    n = 0
    t0 = time.perf_counter()
    while True:
        got = spool.read_batch(batch)
        if not got:
            break
        spool.ack(got[-1][0])
        n += len(got)
    elapsed = time.perf_counter() - t0
    assert len(spool) == 0
    spool.close()
    return n / elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=1000, help="records per read_batch/ack")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the spool")
    args = ap.parse_args()

    pool = make_records(1024)
    frame = len(encode_record(pool[0]))
    mib = args.records * frame / (1 << 20)
    root = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        print(f"{args.records} records, value {VALUE_BYTES} B, {frame} B on disk, {mib:.0f} MiB")
        for threads in (1, 4):
            d = root / f"append-{threads}"
            rate = bench_append(d, pool, args.records, threads)
            print(f"append, {threads} thread(s):      {rate:>10,.0f} records/s")
            shutil.rmtree(d)
        d = root / "main"
        rate = bench_append_many(d, pool, args.records, 128)
        print(f"append_many (128/call):     {rate:>10,.0f} records/s")
        elapsed, n = bench_recover(d)
        print(f"reopen + recover:           {elapsed * 1000:>10,.0f} ms for {n} records")
        rate, n = bench_drain(d, args.batch)
        print(f"drain (batch {args.batch}, ack each): {rate:>10,.0f} records/s ({n} records)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
