"""Real Kamailio pointed at `hepwatch run`: a SIPp call is queryable through `hepwatch sql`.

The project's Kamailio mirrors to `run`'s HEP UDP listener with the siptrace settings `run`
prints; SIPp places the basic call. The call's messages must be in ClickHouse, read through
the query endpoint, soon after the call ends: a message row is final once its dedup window
(`consumer.dedup_window_ms`) and the reorder window have passed in stream time, which the
wall clock moves on when no more messages come (`hepwatch.run.Analysis._idle_advance`), and
the sink stores it within `clickhouse.flush_interval_s`; the test allows that plus a second
and prints the delay measured. Then the dialog row (after 64*T1) and no anomaly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from e2e.harness import KamailioProxy, run_scenario, skip_reason
from kafka_broker import free_port
from run_proc import HEPWATCH, RunProc

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ENV = {
    # T1 = 50 ms: the ended call is reported 3.2 s after its end instead of 32 s.
    "HEPWATCH_CONSUMER__T1_MS": "50",
    "HEPWATCH_ALERTS__INTERVAL_S": "3600",
}
# Everything else as it ships: the dedup and reorder windows, the 1 s flush interval.
DEDUP_S, REORDER_S, FLUSH_S = 2.0, 0.3, 1.0


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[tuple[RunProc, KamailioProxy]]:
    # Ports of our own, so this runs beside the other end-to-end tests.
    ports = [free_port(socket.SOCK_DGRAM) for _ in range(3)]
    reason = skip_reason(tuple(ports))
    if reason:
        pytest.skip(reason)
    run = RunProc(tmp_path / "data", env=ENV, fast=False)
    run.start()
    proxy = KamailioProxy(
        "127.0.0.1",
        run.udp_port,
        workdir=tmp_path / "kamailio",
        port=ports[0],
        uas=("127.0.0.1", ports[1]),
        uac=("127.0.0.1", ports[2]),
    )
    try:
        proxy.start()
        yield run, proxy
    finally:
        proxy.close()
        run.kill()


def test_basic_call_through_kamailio_is_queryable(
    kit: tuple[RunProc, KamailioProxy], tmp_path: Path
) -> None:
    run, proxy = kit
    # run prints where Kamailio must send (the siptrace settings to paste).
    banner = run.out.read_text()
    assert f'modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{run.udp_port}")' in banner
    assert 'modparam("siptrace", "hep_version", 3)' in banner

    result = run_scenario("basic-call", proxy, run_dir=tmp_path / "sipp")
    ended = time.monotonic()
    (call_id,) = result.call_ids
    requests = [
        m
        for m in result.messages()
        if m.side == "uac" and m.sent and not m.data.startswith(b"SIP/")
    ]

    client = clickhouse_connect.get_client(host="127.0.0.1", port=run.query_port, interface="http")
    try:

        def methods() -> list[tuple[str, int]]:
            return client.query(
                "SELECT method, status FROM sip_messages WHERE call_id = {c:String} "
                "ORDER BY event_time",
                parameters={"c": call_id},
            ).result_rows

        bound = DEDUP_S + REORDER_S + FLUSH_S + 1.0
        seen: list[tuple[str, int]] = []
        first_seen = all_seen = None
        deadline = ended + bound + 5
        while time.monotonic() < deadline:
            seen = methods()
            now = time.monotonic()
            if seen and first_seen is None:
                first_seen = now - ended
            if ("BYE", 200) in seen:
                all_seen = now - ended
                break
            time.sleep(0.05)
        print(
            f"\nbasic call through Kamailio: first row {first_seen:.2f} s, whole call "
            f"{all_seen if all_seen is None else round(all_seen, 2)} s after the call ended"
        )
        assert all_seen is not None, (seen, run.log_tail())
        assert first_seen is not None and first_seen <= bound
        assert all_seen <= bound
        assert [m for m, s in seen if s == 0] == ["INVITE", "ACK", "BYE"]
        assert {(m, s) for m, s in seen} >= {("INVITE", 180), ("INVITE", 200), ("BYE", 200)}
        # Every request SIPp's UAC sent is one logical row, however many copies the mirror had.
        assert len([1 for _m, s in seen if s == 0]) == len(requests)

        # `hepwatch sql` reads the live instance.
        out = subprocess.run(
            [HEPWATCH, "sql", "--server", run.query_url, "--format", "json",
             "SELECT count() AS n, uniqExact(id) AS ids FROM sip_messages "
             "WHERE call_id = {c:String}",
             "--param", f"c={call_id}"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert json.loads(out) == [{"n": len(seen), "ids": len(seen)}]

        # The ended call is reported after 64*T1 (3.2 s) of stream time; it was clean.
        deadline = time.monotonic() + 15
        dialogs: list[tuple] = []
        while time.monotonic() < deadline and not dialogs:
            dialogs = client.query(
                "SELECT state, end_reason, initial_status FROM dialogs WHERE call_id = {c:String}",
                parameters={"c": call_id},
            ).result_rows
            time.sleep(0.1)
        assert dialogs == [("terminated", "bye", 200)], run.log_tail()
        anomalies = client.query(
            "SELECT anomaly FROM anomalies WHERE call_id = {c:String}", parameters={"c": call_id}
        ).result_rows
        assert anomalies == []
    finally:
        client.close()
    assert run.stop() == 0
