"""Consumer benchmark: HEP records/s through decode, parse, dedup, dialogs and detectors,
and resident memory per live dialog.

    .venv/bin/python bench/consumer/run.py [--calls 20000] [--dialogs 1000000]
        [--no-detectors] [--profile] [--repeat N]

Throughput: `--calls` proxy-mirrored calls (13 HEP records each: INVITE, 180, 200, ACK, BYE
and 200 in and out of the proxy, plus the proxy's 100 Trying), overlapping (one new call per
millisecond of capture time, each lasting about two seconds), as HEPv3 bytes built before
timing; the timed loop is what `hepwatch consume` does per record: HEP decode, observation,
`Engine.feed` with every default detector. Memory: `--dialogs` calls set up and left
established (INVITE, 200, ACK), one every `--spacing-us` of capture time (200 calls/s by
default, so transactions expire while calls keep arriving, as in real traffic), stream time
then moved on until every call is frozen (tracking/freezer.py); RSS growth divided by the
number of live dialogs, and RSS added per dialog past the first tenth; and tracemalloc's
live bytes per dialog on `--traced` dialogs built the same way, frozen and never frozen.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from hepbuild import hep3
from sipflow import Flow

from collector.hep import fast
from consumers.engine import Engine, EngineConfig
from consumers.observation import from_hep
from consumers.runtime import sweep, sweep_stats, tune_gc
from consumers.tracking.tracker import TrackerConfig


def _template(full: bool) -> list[tuple[int, bytes, tuple[str, int, str, int]]]:
    f = Flow("CALLID-TEMPLATE@bench")
    f.setup()
    if full:
        f.wait(1.0)
        f.bye("A")
    else:
        f.obs = [o for o in f.obs if o.dst_ip == "10.0.0.1"]  # in-copies only: 3 per call
        f.obs = [o for o in f.obs if not o.payload.startswith((b"SIP/2.0 18", b"SIP/2.0 100"))]
    t0 = f.obs[0].ts_us
    return [(o.ts_us - t0, o.payload, (o.src_ip, o.src_port, o.dst_ip, o.dst_port)) for o in f.obs]


def _records(template, i: int, start_us: int) -> list[tuple[int, bytes]]:
    cid = f"bench-{i:08d}@bench".encode()
    # Each call's SDP is its own, as in real traffic (session ids and media ports differ),
    # so per-body caches hit only where a real call repeats a body; same widths, so every
    # Content-Length stays right.
    n = i % 10_000
    sdp_parts = (
        (b"o=user 1001 ", b"o=user %04d " % n),
        (b"o=user 2002 ", b"o=user %04d " % (9_999 - n)),
        (b"m=audio 40000 ", b"m=audio %05d " % (20_000 + 2 * (i % 20_000))),
    )
    out = []
    for dt, payload, (sip, sport, dip, dport) in template:
        ts = start_us + dt
        body = payload.replace(b"CALLID-TEMPLATE@bench", cid)
        for old, new in sdp_parts:
            body = body.replace(old, new)
        out.append(
            (ts, hep3(body, src=sip, dst=dip, sport=sport, dport=dport, ts=divmod(ts, 1_000_000)))
        )
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def throughput(calls: int, detectors: bool, profile: bool) -> None:
    template = _template(full=True)
    base = 1_700_000_000_000_000
    records: list[tuple[int, bytes]] = []
    for i in range(calls):
        records += _records(template, i, base + i * 1000)
    records.sort(key=lambda r: r[0])
    blobs = [r[1] for r in records]
    engine = Engine(EngineConfig(emit_messages=True), None if detectors else [])
    gc.collect()
    out = 0
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    sweeps_before = sweep_stats.sweeps
    start = time.perf_counter()
    cpu = _cpu()
    batch = []
    for n, blob in enumerate(blobs):  # in batches, as the consumer gets them from Kafka
        batch.append(from_hep(fast.decode(blob), f"bench/0/{n}", "p1"))
        if len(batch) == 500:
            out += len(engine.feed_many(batch))
            batch = []
    out += len(engine.feed_many(batch)) + len(engine.flush())
    # The consumer's collector sweeps (consumers/runtime.py) every minute or after 2M new
    # objects; one full sweep at the end of every run is timed too, whatever its length,
    # so each run pays at least what a sweep costs at its heap size.
    sweep()
    elapsed = time.perf_counter() - start
    cpu = _cpu() - cpu
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
    kinds: dict[str, int] = {}
    print(
        f"consumer throughput: {len(blobs)} HEP records ({calls} calls) in {elapsed:.2f} s"
        f" wall, {cpu:.2f} s CPU = {len(blobs) / cpu:,.0f} records/s (CPU),"
        f" {len(blobs) / elapsed:,.0f} records/s (wall); {out} records out;"
        f" load average {os.getloadavg()[0]:.2f};"
        f" detectors: {', '.join(d.name for d in engine.detectors) or 'none'};"
        f" gc sweeps timed: {sweep_stats.sweeps - sweeps_before}, the last"
        f" {sweep_stats.last_seconds * 1e3:.0f} ms, freeing {sweep_stats.last_collected} objects"
    )
    for k, v in engine.stats.anomalies.items():
        kinds[k] = v
    if kinds:
        print(f"  anomalies on clean calls (should be none): {kinds}")


def _build_dialogs(
    engine: Engine, dialogs: int, spacing_us: int, marks: list[int] | None = None
) -> None:
    template = _template(full=False)
    base = 1_700_000_000_000_000
    for i in range(dialogs):
        if marks is not None and i == dialogs // 10:
            marks.append(_rss())
        for _ts, blob in _records(template, i, base + i * spacing_us):
            engine.feed(from_hep(fast.decode(blob), "m", "p1"))
    # let every transaction pass its 64*T1 linger so only dialog state remains, then the
    # idle calls freeze (4*T1 later), as stream time moves on in a live consumer
    cfg = engine.config.tracker
    engine.advance_to(engine.stream_time + cfg.linger_us + 1_000_000)
    engine.advance_to(engine.stream_time + cfg.freeze_delay_us + 1_000_000)
    gc.collect()


def memory(dialogs: int, spacing_us: int, traced: int) -> None:
    """RSS growth per live established dialog, and the bytes of live Python objects per
    dialog (tracemalloc, on `traced` dialogs built the same way)."""
    engine = Engine(EngineConfig(emit_messages=False))
    gc.collect()
    before = _rss()
    start = time.perf_counter()
    marks: list[int] = []
    _build_dialogs(engine, dialogs, spacing_us, marks)
    after = _rss()
    live = len(engine.tracker)
    frozen = sum(type(c) is bytes for c in engine.tracker.calls.values())
    print(
        f"memory: {live:,} live established dialogs ({frozen:,} frozen; one new call every"
        f" {spacing_us} us of capture time), RSS +{(after - before) / 2**20:,.0f} MiB"
        f" = {(after - before) / max(live, 1):,.0f} bytes per dialog"
        f" (built in {time.perf_counter() - start:.0f} s; load average"
        f" {os.getloadavg()[0]:.2f})"
    )
    if marks and dialogs >= 10:
        # Past the first tenth the calls still in their first 64*T1 + 4*T1 (not frozen
        # yet, with their messages) are a constant: what each further dialog adds.
        print(
            f"memory: RSS added per dialog past the first {dialogs // 10:,}:"
            f" {(after - marks[0]) / (dialogs - dialogs // 10):,.0f} bytes"
        )
    del engine
    for freeze in (True, False) if traced else ():
        import tracemalloc

        gc.collect()
        tracemalloc.start()
        config = EngineConfig(emit_messages=False, tracker=TrackerConfig(freeze_idle=freeze))
        engine = Engine(config)
        base_bytes = tracemalloc.get_traced_memory()[0]
        _build_dialogs(engine, traced, spacing_us)
        used = tracemalloc.get_traced_memory()[0] - base_bytes
        tracemalloc.stop()
        live = len(engine.tracker)
        print(
            f"memory: live Python objects {used / max(live, 1):,.0f} bytes per dialog"
            f" ({live:,} dialogs, {'frozen' if freeze else 'never frozen'}, tracemalloc)"
        )
        del engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--dialogs", type=int, default=1_000_000)
    ap.add_argument("--spacing-us", type=int, default=5000, help="capture time between calls")
    ap.add_argument("--traced", type=int, default=20000, help="dialogs built under tracemalloc")
    ap.add_argument("--no-detectors", action="store_true", help="engine core only")
    ap.add_argument("--profile", action="store_true", help="cProfile the timed loop")
    ap.add_argument("--repeat", type=int, default=1, help="throughput runs")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    tune_gc()
    for _ in range(args.repeat if args.calls else 0):
        throughput(args.calls, not args.no_detectors, args.profile)
    if args.dialogs:
        memory(args.dialogs, args.spacing_us, args.traced)


if __name__ == "__main__":
    main()
