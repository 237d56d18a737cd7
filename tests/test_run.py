"""`hepwatch run` as a subprocess: HEP over UDP and TCP in, rows out through its query endpoint;
a restart continues a call; a stop stores everything accepted; one process per data dir."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from run_proc import HEPWATCH, RunProc, hep_packets, now_shift
from sipflow import Flow

from consumers.engine import Engine, EngineConfig
from consumers.records import MessageRecord
from consumers.tracking.tracker import TrackerConfig

T1_MS = 50  # run_proc.FAST_ENV


def offline(flows: list[Flow]) -> list:
    """What the engine makes of the flows when it sees them all (the expected rows)."""
    engine = Engine(EngineConfig(tracker=TrackerConfig(t1_ms=T1_MS)))
    obs = sorted((o for f in flows for o in f.obs), key=lambda o: o.ts_us)
    return engine.feed_many(obs) + engine.flush()


def call(call_id: str) -> Flow:
    f = Flow(call_id, node="p1")
    f.setup()
    f.wait(0.3)
    f.bye()
    return f


def message_keys(records: list) -> Counter[tuple]:
    return Counter(
        (r.call_id, r.method, r.status, r.cseq, r.direction, r.retransmission)
        for r in records
        if isinstance(r, MessageRecord)
    )


@pytest.fixture
def run(tmp_path: Path):
    proc = RunProc(tmp_path / "data")
    yield proc
    proc.kill()


def test_udp_and_tcp_calls_land_in_clickhouse(run: RunProc) -> None:
    run.start()
    udp_calls = [call(f"udp-{i}@test") for i in range(3)]
    tcp_calls = [call(f"tcp-{i}@test") for i in range(3)]
    flows = udp_calls + tcp_calls
    shift = now_shift([o for f in flows for o in f.obs], lead_s=0.5)
    sent = run.send_udp(hep_packets((o for f in udp_calls for o in f.obs), shift))
    sent += run.send_tcp(hep_packets((o for f in tcp_calls for o in f.obs), shift))
    assert sent == sum(len(f.obs) for f in flows)

    expected = offline(flows)
    n_messages = sum(1 for r in expected if r.kind == "message")
    n_dialogs = sum(1 for r in expected if r.kind == "dialog")
    got = run.wait_for("SELECT count() FROM sip_messages", n_messages)
    assert got == n_messages, run.log_tail()
    rows = run.rows(
        "SELECT call_id, method, status, cseq, direction, retransmission FROM sip_messages"
    )
    stored = Counter(
        (r["call_id"], r["method"], r["status"], r["cseq"], r["direction"], r["retransmission"])
        for r in rows
    )
    assert stored == message_keys(expected)

    # Every row is stamped with the queue offset of its input; ids are unique.
    src = run.rows(
        "SELECT min(src_partition) AS p0, max(src_partition) AS p1, min(src_offset) AS o0, "
        "max(src_offset) AS o1, uniqExact(id) AS ids, count() AS n FROM sip_messages"
    )[0]
    assert (src["p0"], src["p1"]) == (0, 0)
    assert 0 <= int(src["o0"]) <= int(src["o1"]) < sent
    assert src["ids"] == src["n"] == n_messages

    # Ended calls are reported after 64*T1 of stream time (idle advance moves it on).
    assert run.wait_for("SELECT count() FROM dialogs", n_dialogs) == n_dialogs
    dialogs = run.rows("SELECT call_id, state, end_reason FROM dialogs ORDER BY call_id")
    assert {d["call_id"] for d in dialogs} == {f.call_id for f in flows}
    assert {d["end_reason"] for d in dialogs} == {"bye"}

    # `hepwatch sql --server` reads the live instance (saved queries included).
    out = subprocess.run(
        [HEPWATCH, "sql", "--server", run.query_url, "--format", "json",
         "SELECT call_id, count() AS n FROM sip_messages WHERE call_id = {c:String} "
         "GROUP BY call_id", "--param", "c=tcp-1@test"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    per_call = sum(1 for r in expected if r.kind == "message" and r.call_id == "tcp-1@test")
    assert json.loads(out) == [{"call_id": "tcp-1@test", "n": per_call}]

    # The metrics endpoint counts what the listeners took and the queue carried.
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{run.metrics_port}/metrics") as resp:
        text = resp.read().decode()
    queued = re.search(r"^hepwatch_run_queued_records_total (\S+)$", text, re.M)
    assert queued is not None and float(queued.group(1)) == sent
    assert run.stop() == 0


def test_restart_continues_a_call(run: RunProc) -> None:
    f = Flow("restart-1@test", node="p1")
    f.setup()
    first = list(f.obs)
    f.wait(1.0)
    f.bye()
    rest = f.obs[len(first) :]

    run.start()
    run.send_udp(hep_packets(first, now_shift(first)))
    # The INVITE's dedup window closes (stream time follows the wall clock when idle).
    assert (
        run.wait_for("SELECT count() FROM sip_messages WHERE method = 'INVITE' AND status = 0", 1)
        == 1
    ), run.log_tail()
    assert run.stop() == 0
    assert f"checkpoint at offset {len(first)}" in run.log_tail()

    run.start()
    assert "resumed from the checkpoint" in run.log_tail()
    run.send_udp(hep_packets(rest, now_shift(rest)))
    expected = offline([f])
    n_messages = sum(1 for r in expected if r.kind == "message")
    assert run.wait_for("SELECT count() FROM dialogs", 1) == 1, run.log_tail()
    dialog = run.rows(
        "SELECT call_id, caller_tag, callee_tag, state, end_reason, initial_status, "
        "confirmed_time IS NOT NULL AS confirmed FROM dialogs"
    )[0]
    assert dialog == {
        "call_id": "restart-1@test",
        "caller_tag": "a1",
        "callee_tag": "b1",
        "state": "terminated",
        "end_reason": "bye",
        "initial_status": 200,
        "confirmed": True,
    }
    assert run.wait_for("SELECT count() FROM sip_messages", n_messages) == n_messages
    assert run.scalar("SELECT uniqExact(id) FROM sip_messages") == n_messages
    # Offsets continued across the restart: no offset stamps rows of both runs' input.
    offsets = run.rows("SELECT src_offset FROM sip_messages ORDER BY src_offset")
    assert max(int(o["src_offset"]) for o in offsets) < len(f.obs)
    assert run.scalar("SELECT count() FROM anomalies") == 0
    assert run.stop() == 0


def test_stop_stores_everything_accepted(run: RunProc) -> None:
    flows = [call(f"stop-{i}@test") for i in range(150)]
    for i, f in enumerate(flows):  # a call every 2 ms of capture time, overlapping
        for o in f.obs:
            o.ts_us += i * 2000
    obs = [o for f in flows for o in f.obs]
    packets = hep_packets(obs, now_shift(obs))
    expected = offline(flows)
    n_messages = sum(1 for r in expected if r.kind == "message")

    run.start()
    run.send_tcp(packets)
    # Stop as soon as everything is in the queue: the last messages' dedup windows are
    # still open, so they live only in the engine's state, which the stop checkpoints.
    deadline = time.monotonic() + 20
    while run.metric("hepwatch_run_queued_records_total") < len(packets):
        assert time.monotonic() < deadline, run.log_tail()
        time.sleep(0.01)
    assert run.stop() == 0
    assert f"checkpoint at offset {len(packets)}" in run.log_tail()

    run.start()
    got = run.wait_for("SELECT count() FROM sip_messages", n_messages)
    assert got == n_messages, run.log_tail()
    rows = run.rows(
        "SELECT call_id, method, status, cseq, direction, retransmission FROM sip_messages"
    )
    stored = Counter(
        (r["call_id"], r["method"], r["status"], r["cseq"], r["direction"], r["retransmission"])
        for r in rows
    )
    assert stored == message_keys(expected)
    assert run.scalar("SELECT uniqExact(id) FROM sip_messages") == n_messages
    assert run.stop() == 0


def test_one_process_per_data_dir(run: RunProc, tmp_path: Path) -> None:
    run.start()
    second = RunProc(run.data_dir)
    with pytest.raises(RuntimeError, match=r"is in use by process \d+"):
        second.start(timeout=30)
    assert second.proc is not None and second.proc.returncode != 0
    assert run.stop() == 0


def test_query_endpoint_users_from_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "hepwatch.toml"
    cfg.write_text('[query_http]\nusers = { reader = "s3cret" }\n')
    proc = RunProc(tmp_path / "data", config=cfg)
    try:
        proc.start()
        status, headers, body = proc.http("SELECT 1")
        assert status == 401 and headers["X-ClickHouse-Exception-Code"] == "194", body
        status, _, _ = proc.http("SELECT 1", params={"user": "reader", "password": "nope"})
        assert status == 403
        status, _, body = proc.http("SELECT 1", params={"user": "reader", "password": "s3cret"})
        assert (status, body) == (200, b"1\n")
        status, headers, body = proc.http(
            "INSERT INTO sip_messages (id) VALUES ('x')",
            params={"user": "reader", "password": "s3cret"},
        )
        assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "164", body
        assert proc.stop() == 0
    finally:
        proc.kill()


def test_capture_clock_sliding_maximum() -> None:
    from hepwatch.run import CaptureClock

    clock = CaptureClock(window_s=60)
    assert clock.lag_us(0.0) is None
    clock.observe(0.0, 5_000)
    clock.observe(1.0, 200_000)
    clock.observe(2.0, 1_000)
    assert clock.lag_us(2.0) == 200_000
    assert clock.lag_us(61.5) == 1_000  # the 200 ms delay left the minute
    assert clock.lag_us(500.0) == 1_000  # quiet: the last delay seen stays
    clock.observe(501.0, -3_000)  # a proxy clock ahead of ours
    assert clock.lag_us(600.0) == -3_000
