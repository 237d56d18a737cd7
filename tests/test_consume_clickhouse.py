"""`hepwatch consume --sink clickhouse:chdb:///...` on a real broker (tansu) and real chDB:
rows stored exactly once through a crash, a rebalance and a ClickHouse outage.

The expected rows are not written down: after each test the topic is read back and every
partition is run through `consumers.engine.Engine` offline with the consumer's settings,
which gives the id of every record the consumer must have stored (message ids come from the
Kafka position of their first copy, dialog ids from the call). The checks: each table holds
exactly those ids, no id twice (counted without FINAL, before any merge), and the
per-minute view counted every message once.

chDB lets one process open a data directory, and a process open one directory, so the
database is read by a short subprocess once the consumer is gone, and two consumers of
one group each write to a directory of their own: exactly-once is a property of each
partition (rows carry their partition and offset, a restored partition skips the ids stored
from its checkpoint on), so the union of the two directories must hold every id once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from consumer_proc import ConsumerProc
from hepbuild import hep3
from kafka_broker import TansuBroker, free_port
from sipflow import Flow

from collector.hep import fast
from consumers.checkpoint import CheckpointStore
from consumers.engine import Engine, EngineConfig
from consumers.observation import from_hep
from consumers.tracking.tracker import TrackerConfig

pytestmark = pytest.mark.integration

TABLES = {
    "message": "sip_messages",
    "session_change": "session_changes",
    "dialog": "dialogs",
    "anomaly": "anomalies",
}
# As consumer_proc sets them (T1 50 ms; the reorder and dedup windows are the defaults).
ENGINE = dict(reorder_window_ms=300, dedup_window_ms=2000, t1_ms=50)
ENV = {
    "HEPWATCH_CONSUMER__LEGS_STAGE": "false",
    "HEPWATCH_CLICKHOUSE__FLUSH_INTERVAL_S": "0.2",
    "HEPWATCH_CLICKHOUSE__RETRY_BACKOFF_S": "0.2",
}

# Runs in a subprocess: open a chDB directory, run queries, print the rows as JSON.
_QUERY = """
import json, sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
queries = json.loads(sys.argv[2])
out = [[list(map(str, row)) for row in client.query(q).result_rows] for q in queries]
client.close()
print(json.dumps(out))
"""
# Runs in a subprocess: hold a chDB directory (its lock) until stdin closes.
_HOLD = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print("held", flush=True)
sys.stdin.read()
client.close()
"""


def chdb_query(directory: Path, queries: list[str]) -> list[list[list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _QUERY, str(directory), json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored(directory: Path) -> tuple[dict[str, list[str]], list[list[str]], int]:
    """Ids per record kind (one entry per row), ids stored twice, and the view's sum."""
    kinds = list(TABLES)
    queries = [f"SELECT id FROM {TABLES[k]}" for k in kinds]
    queries += [
        f"SELECT '{TABLES[k]}', id, count() FROM {TABLES[k]} GROUP BY id HAVING count() > 1"
        for k in kinds
    ]
    queries.append("SELECT sum(messages) FROM sip_minute_counts")
    res = chdb_query(directory, queries)
    ids = {k: [row[0] for row in res[i]] for i, k in enumerate(kinds)}
    doubled = [row for rows in res[len(kinds) : 2 * len(kinds)] for row in rows]
    return ids, doubled, int(float(res[-1][0][0] or 0))


# -- input -------------------------------------------------------------------------------------


def whole_call(call_id: str) -> Flow:
    f = Flow(call_id)
    f.setup()
    f.wait(1.0)
    f.bye("B" if sum(call_id.encode()) % 2 else "A")
    return f


def call_halves(call_id: str) -> tuple[Flow, Flow]:
    """A call's setup (INVITE .. ACK) and its end (BYE, 200), as separate flows."""
    f = Flow(call_id)
    f.setup()
    cut = len(f.obs)
    f.wait(1.0)
    f.bye("B" if sum(call_id.encode()) % 2 else "A")
    first, second = Flow(call_id), Flow(call_id)
    first.obs, second.obs = f.obs[:cut], f.obs[cut:]
    return first, second


class Feed:
    """Publishes flows as the collector does and keeps each partition's end offset from the
    delivery reports (tansu's high watermark lags behind by a batch, so it is not used)."""

    def __init__(self, broker: TansuBroker, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True}
        )
        self.ends: dict[int, int] = {}
        self.total = 0

    def _delivered(self, err, msg) -> None:
        assert err is None, err
        self.ends[msg.partition()] = max(self.ends.get(msg.partition(), 0), msg.offset() + 1)

    def produce(self, flow: Flow) -> None:
        """The flow's observations, capture times moved so that the last one is now."""
        shift = int(time.time() * 1e6) - flow.obs[-1].ts_us
        for o in flow.obs:
            ts = o.ts_us + shift
            value = hep3(
                o.payload,
                src=o.src_ip,
                dst=o.dst_ip,
                sport=o.src_port,
                dport=o.dst_port,
                ts=(ts // 1_000_000, ts % 1_000_000),
            )
            self.producer.produce(
                self.topic,
                value=value,
                key=flow.call_id.encode(),
                timestamp=ts // 1000,
                headers=[("hep.node", b"p1")],
                on_delivery=self._delivered,
            )
        self.total += len(flow.obs)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(15) == 0


def expected_ids(broker: TansuBroker, topic: str, total: int) -> dict[str, set[str]]:
    """Every record id the consumer must store: the topic read back, each partition run
    through a fresh Engine to the end of its input."""
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"expect-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    by_partition: dict[int, list] = defaultdict(list)
    n = 0
    deadline = time.monotonic() + 60
    while n < total and time.monotonic() < deadline:
        for msg in c.consume(1000, 0.5):
            if msg.error() is None:
                by_partition[msg.partition()].append(msg)
                n += 1
    c.close()
    assert n == total, f"read back {n} of {total} records"
    out: dict[str, set[str]] = {k: set() for k in TABLES}
    config = EngineConfig(
        reorder_window_ms=ENGINE["reorder_window_ms"],
        dedup_window_ms=ENGINE["dedup_window_ms"],
        tracker=TrackerConfig(t1_ms=ENGINE["t1_ms"]),
    )
    for partition, msgs in by_partition.items():
        engine = Engine(config)
        observations = []
        for msg in sorted(msgs, key=lambda m: m.offset()):
            node = dict(msg.headers() or ()).get("hep.node", b"").decode() or None
            ref = f"{topic}/{partition}/{msg.offset()}"
            observations.append(from_hep(fast.decode(msg.value()), ref, node))
        for rec in engine.feed_many(observations) + engine.flush():
            if rec.kind in out:
                out[rec.kind].add(rec.id)
    return out


# -- waiting on the consumer -------------------------------------------------------------------


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def lags(samples: dict) -> dict[str, float]:
    return {
        dict(labels)["partition"]: v
        for (name, labels), v in samples.items()
        if name == "hepwatch_consumer_lag"
    }


def wait_for(pred, timeout: float, what: str, step: float = 0.3, procs: tuple = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    seen = [
        {name: v for (name, _), v in p.metrics().items() if name.startswith("hepwatch_consumer")}
        | {"lag": lags(p.metrics())}
        for p in procs
    ]
    raise AssertionError(f"timed out waiting for {what}; consumer metrics: {seen}")


def committed(broker: TansuBroker, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, n) for n in range(partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps}


def caught_up(procs: list[ConsumerProc], broker: TansuBroker, feed: Feed, group: str) -> bool:
    """The group committed every partition to its end and no consumer has a call in flight
    or is paused: every record was emitted, and stored before the checkpoint that committed
    the offsets and set these gauges."""
    for p in procs:
        m = p.metrics()
        if metric(m, "hepwatch_consumer_live_calls") != 0:
            return False
        if metric(m, "hepwatch_consumer_sink_paused") != 0:
            return False
    done = committed(broker, group, feed.topic, len(feed.ends))
    return all(done.get(n, -1) == end for n, end in feed.ends.items())


def check_exact(ids: dict[str, list[str]], doubled: list, minute_sum: int, want: dict) -> None:
    assert not doubled, f"ids stored twice: {doubled[:5]}"
    for kind, table in TABLES.items():
        got = Counter(ids[kind])
        assert not [i for i, c in got.items() if c > 1], f"{table}: ids stored twice"
        assert set(got) == want[kind], (
            f"{table}: {len(set(got) - want[kind])} unexpected, "
            f"{len(want[kind] - set(got))} missing of {len(want[kind])}"
        )
    assert minute_sum == len(want["message"])  # the view saw every message row once


# -- tests -------------------------------------------------------------------------------------


def test_crash_after_uncheckpointed_flushes_stores_every_row_once(broker, tmp_path):
    topic, group = f"ch-crash-{uuid.uuid4().hex[:8]}", f"g-ch-crash-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    db = tmp_path / "ch"
    # Flushes every 0.2 s, checkpoints every 2.5 s: rows are stored past the checkpoints.
    env = {**ENV, "HEPWATCH_CONSUMER__CHECKPOINT_INTERVAL_S": "2.5"}
    port = free_port()
    c = ConsumerProc(
        broker, topic, group, tmp_path, env=env, sink=f"clickhouse:chdb://{db}", metrics_port=port
    ).start()
    feed = Feed(broker, topic)
    ends: list[Flow] = []
    stop = threading.Event()

    def steady() -> None:  # a call set up every 40 ms, capture times on the wall clock
        i = 0
        while not stop.is_set():
            first, second = call_halves(f"crash-{i}@test")
            feed.produce(first)
            ends.append(second)
            i += 1
            time.sleep(0.04)

    feeder = threading.Thread(target=steady)
    feeder.start()
    store = CheckpointStore(tmp_path / "state")
    paths = [store.path(topic, n) for n in range(2)]

    def mid_interval() -> bool:  # the newest checkpoint is 0.9-1.6 s old: flushes since
        ages = [time.time() - q.stat().st_mtime for q in paths if q.exists()]
        return len(ages) == 2 and 0.9 <= min(ages) <= 1.6

    def rows_past_checkpoints() -> int:
        ckpts = {n: store.load(topic, n) for n in range(2)}
        assert all(ckpts.values()), "a partition has no checkpoint"
        where = " OR ".join(
            f"(src_partition = {n} AND src_offset >= {ck.next_offset})" for n, ck in ckpts.items()
        )
        return int(chdb_query(db, [f"SELECT count() FROM sip_messages WHERE {where}"])[0][0][0])

    try:
        # The premise: rows past the checkpoints are stored when the consumer dies, so the
        # restart replays into them. On a loaded machine a kill may still land before the
        # first flush after a checkpoint: then the crash and restart happen again.
        for _ in range(4):
            wait_for(
                lambda c=c: (metric(c.metrics(), "hepwatch_consumer_checkpoints_total") or 0) >= 4,
                60,
                "two checkpoint rounds",
                procs=(c,),
            )
            wait_for(mid_interval, 30, "a moment between checkpoints", step=0.05)
            c.kill()  # SIGKILL: no final flush, no checkpoint, no commit
            if rows_past_checkpoints() > 0:
                break
            c = ConsumerProc(
                broker, topic, group, tmp_path, env=env, sink=f"clickhouse:chdb://{db}",
                metrics_port=port,
            ).start()  # fmt: skip
        else:
            raise AssertionError("no crash landed after a flush past a checkpoint")
    finally:
        stop.set()
        feeder.join()
        if c.proc is not None and c.proc.poll() is None:
            c.kill()

    for second in ends:
        feed.produce(second)
    feed.flush()
    c2 = ConsumerProc(
        broker, topic, group, tmp_path, env=env, sink=f"clickhouse:chdb://{db}", metrics_port=port
    ).start()
    wait_for(
        lambda: caught_up([c2], broker, feed, group), 90, "the restart to catch up", procs=(c2,)
    )
    log = c2.stop()
    assert "will be skipped" in log  # the sink's resume found rows past the checkpoint

    want = expected_ids(broker, topic, feed.total)
    assert len(want["dialog"]) == len(ends) and len(want["message"]) == 7 * len(ends)
    check_exact(*stored(db), want)


def test_rebalance_to_a_joining_consumer_stores_every_row_once(broker, tmp_path):
    topic, group = f"ch-rebal-{uuid.uuid4().hex[:8]}", f"g-ch-rebal-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=4)
    feed = Feed(broker, topic)
    halves = [call_halves(f"rebal-{i}@test") for i in range(24)]
    for first, _ in halves:
        feed.produce(first)
    feed.flush()
    # Own chDB directory per consumer (chDB: one process per directory), shared state dir.
    db_a, db_b = tmp_path / "ch-a", tmp_path / "ch-b"
    a = ConsumerProc(
        broker, topic, group, tmp_path, env=ENV, sink=f"clickhouse:chdb://{db_a}",
        metrics_port=free_port(),
    ).start()  # fmt: skip
    wait_for(
        lambda: metric(a.metrics(), "hepwatch_consumer_records_total") == feed.total,
        60,
        "the first consumer to read the setups",
        procs=(a,),
    )
    b = ConsumerProc(
        broker, topic, group, tmp_path, env=ENV, sink=f"clickhouse:chdb://{db_b}",
        metrics_port=free_port(),
    ).start()  # fmt: skip
    wait_for(lambda: "assigned partitions" in b.log(), 60, "the second consumer's assignment")
    for _, second in halves:
        feed.produce(second)
    feed.flush()
    wait_for(lambda: caught_up([a, b], broker, feed, group), 90, "both to catch up", procs=(a, b))
    a_log = a.stop()
    b.stop()
    assert "revoked partitions" in a_log

    ids_a, doubled_a, sum_a = stored(db_a)
    ids_b, doubled_b, sum_b = stored(db_b)
    assert ids_b["dialog"], "the joining consumer stored no dialog: nothing moved"
    assert ids_a["message"], "the first consumer stored nothing"
    both = {k: ids_a[k] + ids_b[k] for k in TABLES}
    want = expected_ids(broker, topic, feed.total)
    assert len(want["dialog"]) == 24
    check_exact(both, doubled_a + doubled_b, sum_a + sum_b, want)


def test_clickhouse_unavailable_pauses_and_loses_nothing(broker, tmp_path):
    topic, group = f"ch-pause-{uuid.uuid4().hex[:8]}", f"g-ch-pause-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    db = tmp_path / "ch"
    db.mkdir()
    # Another process holds the chDB directory: the consumer cannot open ClickHouse at all.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    feed = Feed(broker, topic)
    for i in range(10):
        feed.produce(whole_call(f"pause-a-{i}@test"))
    feed.flush()
    c = ConsumerProc(
        broker, topic, group, tmp_path, env=ENV, sink=f"clickhouse:chdb://{db}",
        metrics_port=free_port(),
    ).start()  # fmt: skip
    try:
        started = time.monotonic()

        def paused_lag() -> float | None:
            m = c.metrics()
            lag = lags(m)
            if metric(m, "hepwatch_consumer_sink_paused") != 1 or len(lag) != 2:
                return None
            return sum(lag.values())

        before = wait_for(paused_lag, 60, "a paused consumer showing its lag", procs=(c,))
        m = c.metrics()
        assert (metric(m, "hepwatch_consumer_sink_failures_total") or 0) >= 1
        assert metric(m, "hepwatch_consumer_records_total") == 0  # nothing fetched
        for i in range(10):
            feed.produce(whole_call(f"pause-b-{i}@test"))
            feed.flush()  # one batch each: the broker's high watermark moves every time
        wait_for(
            lambda: (paused_lag() or 0) > before, 30, "the lag to grow while paused", procs=(c,)
        )
        # Paused past the session timeout (6 s) and still a member: never revoked.
        time.sleep(max(0.0, 9.0 - (time.monotonic() - started)))
        m = c.metrics()
        assert metric(m, "hepwatch_consumer_sink_paused") == 1
        assert (metric(m, "hepwatch_consumer_sink_failures_total") or 0) >= 3
        assert metric(m, "hepwatch_consumer_records_total") == 0
        assert metric(m, "hepwatch_gc_sweeps_total") is not None  # consumers/runtime.py
        assert "revoked" not in c.log() and c.log().count("assigned partitions") == 1
        assert c.proc is not None and c.proc.poll() is None
        assert committed(broker, group, topic, 2) == {0: -1001, 1: -1001}  # nothing committed
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # ClickHouse is back
        holder.wait(30)

    wait_for(lambda: caught_up([c], broker, feed, group), 90, "the resumed consumer", procs=(c,))
    log = c.stop()
    assert log.count("sink unavailable") == 1  # logged once for the whole outage
    assert "fetching resumed" in log
    want = expected_ids(broker, topic, feed.total)
    assert len(want["dialog"]) == 20 and len(want["message"]) == 140
    check_exact(*stored(db), want)


def _immutable(dirs: list[Path], on: bool) -> bool:
    done = subprocess.run(
        ["chattr", "+i" if on else "-i", *map(str, dirs)], capture_output=True, check=False
    )
    return done.returncode == 0


def test_inserts_failing_mid_stream_pause_and_resume_where_they_stopped(broker, tmp_path):
    """ClickHouse refuses inserts while the consumer runs (its table directories made
    immutable: every INSERT fails creating its part): the buffered rows are kept, fetching
    pauses, and after the fault clears the consumer goes on from the first record it had not
    processed; every row once."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if not _immutable([probe], True):
        pytest.skip("chattr +i is not permitted here (needs root on ext2/3/4, xfs, btrfs)")
    _immutable([probe], False)
    topic, group = f"ch-fail-{uuid.uuid4().hex[:8]}", f"g-ch-fail-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    db = tmp_path / "ch"
    feed = Feed(broker, topic)
    for i in range(10):
        feed.produce(whole_call(f"fail-a-{i}@test"))
    feed.flush()
    c = ConsumerProc(
        broker, topic, group, tmp_path, env=ENV, sink=f"clickhouse:chdb://{db}",
        metrics_port=free_port(),
    ).start()  # fmt: skip
    wait_for(lambda: caught_up([c], broker, feed, group), 90, "the first calls", procs=(c,))
    tables = [d for d in db.glob("store/*/*") if d.is_dir()]
    assert tables and _immutable(tables, True)
    try:
        for i in range(10):
            feed.produce(whole_call(f"fail-b-{i}@test"))
            feed.flush()
        wait_for(
            lambda: metric(c.metrics(), "hepwatch_consumer_sink_paused") == 1,
            30,
            "a failed insert to pause the consumer",
            procs=(c,),
        )
        time.sleep(1.5)  # the lag gauge is refreshed every 0.5 s: let it show the pause
        consumed = metric(c.metrics(), "hepwatch_consumer_records_total")
        lag_before = sum(lags(c.metrics()).values())
        for i in range(5):
            feed.produce(whole_call(f"fail-c-{i}@test"))
            feed.flush()
        wait_for(
            lambda: sum(lags(c.metrics()).values()) > lag_before, 30, "lag to grow", procs=(c,)
        )
        time.sleep(7)  # past the session timeout, paused
        m = c.metrics()
        assert metric(m, "hepwatch_consumer_sink_paused") == 1
        assert metric(m, "hepwatch_consumer_records_total") == consumed  # fetching stopped
        assert (metric(m, "hepwatch_consumer_sink_failures_total") or 0) >= 2
        assert "revoked" not in c.log()
    finally:
        _immutable(tables, False)  # ClickHouse takes inserts again
    wait_for(lambda: caught_up([c], broker, feed, group), 90, "the resumed consumer", procs=(c,))
    log = c.stop()
    assert log.count("sink unavailable") == 1 and "fetching resumed" in log
    want = expected_ids(broker, topic, feed.total)
    assert len(want["dialog"]) == 25 and len(want["message"]) == 175
    check_exact(*stored(db), want)
