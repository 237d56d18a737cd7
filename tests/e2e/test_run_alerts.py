"""End to end through `hepwatch run`: a capture with a burst of 491s and 405s replayed into
it, the alerts reaching a real HTTP receiver in Alertmanager's v2 format, then resolving;
`hepwatch alerts check`, `hepwatch sql --saved` and `hepwatch flow` against the live
instance showing the calls.

No Kamailio needed: the traffic is built with tests/capture_build.py (proxy-mirrored calls
whose anomalies are known by construction) and written as the pcap a tap between the proxy
and the collector would record; `hepwatch replay` sends it as it is.

Time. The evaluator runs on the data clock (`alerts.clock = "data"`), the mode for replayed
captures: it follows the newest minute of stored data, then the wall clock. The first capture
ends with its burst minute M, a few minutes before the current one (or half an hour: an old
capture replayed with its own times); spike rules with 2-minute windows see M for the minute
after the data arrives, so the alerts fire however the replay and the evaluations
interleave. A second capture of clean calls in minute M+2 (sent over TCP) moves the data
clock past the window and the alerts resolve at once. As the data minutes are all complete
in wall time, a resolution's endsAt is in the past for the receiver, as Alertmanager needs
to see it resolved, while a firing alert's endsAt must be in its future however old the
data.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alert_receiver import AlertReceiver
from capture_build import (
    PROXY,
    Call,
    establish,
    response_times,
    sc_clean,
    sc_glare,
    sc_glare_early_retry,
    sc_update_405_allowed,
    sc_update_not_allowed,
    shift_call,
    time_span,
    write_capture,
)
from run_proc import HEPWATCH, ROOT, RunProc
from sipflow import Flow

from collector.hep.fast import decode
from collector.replay import iter_hep_packets
from consumers.sip.framing import parse_message

# 491 senders (the callees) and their glare calls; each caller answers one 491 of its own.
GLARE_PEERS = {"10.2.0.11": 5, "10.2.0.12": 4, "10.2.0.13": 2}
PBX_UA = "Asterisk PBX 20.5.0"
OTHER = "10.2.1.5"  # a callee without trouble
# UPDATE refusers (callee address, its Server header) and their calls answered 405.
UPDATE_405_PEERS = {
    ("10.2.0.21", "FreeSWITCH-mod_sofia/1.10"): 4,
    ("10.2.0.22", "Polycom/7.1"): 3,
    ("10.2.0.23", "Asterisk PBX 20.5.0"): 1,
}
MIN_COUNT = 3  # both rules: peers with fewer stay quiet
BACKGROUND_CALLS = 30
TAIL_CALLS = 6
RULES = f"""
rules:
  - name: glare_491_spike
    kind: spike
    match: {{status: 491, method: [INVITE, UPDATE]}}
    window: 2m
    baseline: median
    baseline_period: 10m
    factor: 3
    min_count: {MIN_COUNT}
    group_by: [node_name, peer]
    for: 0m
    severity: warning
    annotations:
      summary: "491 spike: {{value}} in {{window}} from {{peer}} on {{node_name}}"
  - name: update_405_spike
    kind: spike
    match: {{status: 405, method: UPDATE}}
    window: 2m
    baseline: median
    baseline_period: 10m
    factor: 3
    min_count: {MIN_COUNT}
    group_by: [node_name, peer, user_agent]
    for: 0m
    severity: critical
    annotations:
      summary: "405 to UPDATE spike: {{value}} in {{window}} from {{peer}} ({{user_agent}})"
"""
ENV = {
    "HEPWATCH_ALERTS__CLOCK": "data",
    "HEPWATCH_ALERTS__INTERVAL_S": "1",
    "HEPWATCH_ALERTS__RESEND_INTERVAL_S": "60",
}
REPLAY_RATE = "4000"  # packets/s: the test must not depend on a socket buffer's size
EVALUATIONS = "hepwatch_alert_evaluations_total"
FIRE_DEADLINE_S = 45.0
RESOLVE_DEADLINE_S = 45.0


# -- the captures ---------------------------------------------------------------------------


@dataclass
class Plan:
    burst_minute: int  # epoch seconds of minute M
    calls: list[Call] = field(default_factory=list)  # first capture: background and burst
    tail: list[Call] = field(default_factory=list)  # second capture: clean calls in M+2
    # Expected alerts: (rule, peer) -> the call-ids behind them.
    groups: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    user_agents: dict[str, str] = field(default_factory=dict)  # 405 peer -> its Server
    glare_calls: set[str] = field(default_factory=set)


def _flow(rng: random.Random, kind: str, n: int, a: str, b: str, b_ua: str) -> Flow:
    return Flow(
        f"{kind}-{n:02d}-{rng.getrandbits(32):08x}@{a}",
        caller_tag=f"{rng.getrandbits(32):08x}",
        callee_tag=f"{rng.getrandbits(32):08x}",
        proxy=PROXY,
        a=(a, 5060),
        b=(b, 5060),
        a_ua=rng.choice(["Yealink SIP-T54W 96.86", "Linphone/5.2", "Zoiper rv2.10"]),
        b_ua=b_ua,
    )


def _place(call: Call, at: float, when: Callable[[Call], float]) -> Call:
    return shift_call(call, at - when(call))


def plan_captures(now: float, minutes_ago: int, seed: int = 7) -> Plan:
    """Minute M = `minutes_ago` (at least 3) before the current one: background calls over
    M-4..M, the 491s and 405s of the burst in M+5..M+40 s (every burst call over by M+60),
    then six short clean calls in M+2, a complete minute."""
    assert minutes_ago >= 3
    rng = random.Random(seed)
    m = (int(now) // 60 - minutes_ago) * 60
    plan = Plan(m)
    n = 0
    for peer, count in GLARE_PEERS.items():
        ids = set()
        for _ in range(count):
            n += 1
            scenario = rng.choice([sc_glare, sc_glare_early_retry])
            f = _flow(rng, "glare", n, f"10.1.0.{n}", peer, PBX_UA)
            call = _place(scenario(f, rng), m + rng.uniform(5, 40), _first(491))
            plan.calls.append(call)
            ids.add(f.call_id)
        plan.glare_calls |= ids
        if count >= MIN_COUNT:
            plan.groups[("glare_491_spike", peer)] = ids
    for (peer, ua), count in UPDATE_405_PEERS.items():
        ids = set()
        for _ in range(count):
            n += 1
            scenario = rng.choice([sc_update_405_allowed, sc_update_not_allowed])
            f = _flow(rng, "upd405", n, f"10.1.0.{n}", peer, ua)
            call = _place(scenario(f, rng), m + rng.uniform(5, 40), _first(405))
            plan.calls.append(call)
            ids.add(f.call_id)
        if count >= MIN_COUNT:
            plan.groups[("update_405_spike", peer)] = ids
            plan.user_agents[peer] = ua
    callees = {peer: PBX_UA for peer in [*GLARE_PEERS, OTHER]} | dict(UPDATE_405_PEERS.keys())
    for i in range(BACKGROUND_CALLS):  # the same PBXs and another, calls that go well
        callee = rng.choice(sorted(callees))
        f = _flow(rng, "clean", i, f"10.1.1.{i + 1}", callee, callees[callee])
        call = sc_clean(f, rng)
        plan.calls.append(_place(call, rng.uniform(m - 170, m + 58), _last))
    for i in range(TAIL_CALLS):
        f = _flow(rng, "tail", i, f"10.1.2.{i + 1}", OTHER, PBX_UA)
        establish(f, rng)
        f.wait(rng.uniform(2, 8))
        f.bye(rng.choice("AB"))
        plan.tail.append(_place(Call("clean", f), m + 125 + 6 * i, _first_any))
    for call in plan.calls:
        first, last = time_span(call)
        assert m - 240 <= first and last < m + 59.5, (call.flow.call_id, first - m, last - m)
    for call in plan.tail:
        first, last = time_span(call)
        assert m + 120 <= first and last < m + 179.5, (call.flow.call_id, first - m, last - m)
    return plan


def _first(status: int) -> Callable[[Call], float]:
    return lambda call: response_times(call, status)[0]


def _last(call: Call) -> float:
    return time_span(call)[1]


def _first_any(call: Call) -> float:
    return time_span(call)[0]


def responses_in_capture(path: Path) -> Counter[int]:
    """491 and 405 responses in a pcap of mirrored HEP, each counted once (its in and out
    copies share Call-ID, From tag and CSeq)."""
    seen: set[tuple[Any, ...]] = set()
    for _ts, raw in iter_hep_packets(path):
        msg = parse_message(decode(raw).payload)
        if msg.is_response and msg.status_code in (405, 491):
            cseq = msg.cseq
            assert cseq is not None
            seen.add((msg.status_code, msg.call_id, msg.from_tag, cseq.number, cseq.method))
    return Counter(key[0] for key in seen)


# -- the receiver ---------------------------------------------------------------------------


class TimedReceiver(AlertReceiver):
    """The Alertmanager stand-in, noting when each alert arrived: Alertmanager itself
    decides firing or resolved by comparing endsAt with its own clock."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[float, dict[str, Any]]] = []

    async def _alerts(self, request: web.Request) -> web.Response:
        response = await super()._alerts(request)
        if response.status == 200:
            at = time.time()
            self.received.extend((at, alert) for alert in self.alertmanager[-1])
        return response

    def notes(self, rule: str, peer: str, *, resolved: bool) -> list[tuple[float, dict]]:
        return [
            (at, a)
            for at, a in list(self.received)
            if a["labels"].get("alertname") == rule
            and a["labels"].get("peer") == peer
            and (_stamp(a["endsAt"]) <= at) == resolved
        ]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _top(annotation: str) -> dict[str, int]:
    """'a (2), b (1)' -> {'a': 2, 'b': 1} (alertmanager_alert's evidence format)."""
    out = {}
    for item in annotation.split(", "):
        value, _, count = item.rpartition(" (")
        out[value] = int(count.rstrip(")"))
    return out


# -- the test -------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    r = TimedReceiver().start()
    yield r
    r.stop()


def hepwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEPWATCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def poll(what: str, check: Callable[[], Any], deadline_s: float, why: Callable[[], str]) -> Any:
    """`check()` until it returns something true; fail with `why()` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {deadline_s:.0f} s\n{why()}")
        time.sleep(0.2)


@pytest.mark.parametrize("minutes_ago", [3, 30], ids=["recent", "half_an_hour_old"])
def test_burst_fires_and_resolves_through_run(
    tmp_path: Path, receiver: TimedReceiver, minutes_ago: int
) -> None:
    started = time.monotonic()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    run = RunProc(
        tmp_path / "data",
        env={**ENV, "HEPWATCH_ALERTS__ALERTMANAGER_URL": receiver.url},
        extra_args=["--alerts", str(rules)],
    )
    plan: Plan | None = None

    def state() -> str:
        m = plan.burst_minute if plan else 0
        got = "\n".join(
            f"  {at - m:7.1f} s {a['labels']} startsAt={a['startsAt']} endsAt={a['endsAt']}"
            for at, a in list(receiver.received)
        )
        return (
            f"burst minute {datetime.fromtimestamp(m, UTC).isoformat()}; alerts received "
            f"(arrival - M):\n{got or '  none'}\nrefused: {receiver.refused}\n"
            f"stored: {_stored(run)}\nrun log tail:\n{run.log_tail()}"
        )

    try:
        run.start()
        # Planned once run is up, so its start-up time does not age the captures.
        plan = plan_captures(time.time(), minutes_ago)
        burst_pcap, tail_pcap = tmp_path / "burst.pcap", tmp_path / "tail.pcap"
        n_burst = write_capture(plan.calls, burst_pcap)
        n_tail = write_capture(plan.tail, tail_pcap, number_from=len(plan.calls))
        in_capture = responses_in_capture(burst_pcap)
        assert in_capture[491] == 2 * sum(GLARE_PEERS.values())  # both sides refuse, once each
        assert in_capture[405] == sum(UPDATE_405_PEERS.values())
        assert not responses_in_capture(tail_pcap)

        # 1. The burst capture over UDP, stored as sent.
        out = hepwatch(
            "replay", str(burst_pcap), "--to", f"udp://127.0.0.1:{run.udp_port}",
            "--rate", REPLAY_RATE,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"sent {n_burst} of {n_burst} HEP packets" in out.stdout, out.stdout
        for status in (491, 405):
            sql = f"SELECT count() FROM sip_messages WHERE status = {status} AND NOT retransmission"
            got = run.wait_for(sql, in_capture[status], timeout=30)
            assert got == in_capture[status], f"{status}s stored: {got}\n{state()}"
        # Everything arrives through one collector: its node name (the host name by default).
        node = socket.gethostname()
        assert run.rows("SELECT DISTINCT node_name AS n FROM sip_messages") == [{"n": node}]

        # 2. One firing alert per peer at or above min_count, and none for the others.
        def all_fired() -> bool:
            return all(receiver.notes(r, p, resolved=False) for r, p in plan.groups)

        poll("every expected alert firing", all_fired, FIRE_DEADLINE_S, state)

        # 3. Clean calls two minutes later, over TCP: the data clock moves past the burst.
        out = hepwatch("replay", str(tail_pcap), "--to", f"tcp://127.0.0.1:{run.tcp_port}")
        assert out.returncode == 0, out.stderr
        assert f"sent {n_tail} of {n_tail} HEP packets" in out.stdout, out.stdout

        def all_resolved() -> bool:
            return all(receiver.notes(r, p, resolved=True) for r, p in plan.groups)

        poll("every alert resolved", all_resolved, RESOLVE_DEADLINE_S, state)
        # Two more evaluation cycles, after which nothing may have followed the resolutions.
        cycles = run.metric(EVALUATIONS) + 2
        poll("two more evaluations", lambda: run.metric(EVALUATIONS) >= cycles, 30, state)
        check_notifications(receiver, plan, node, run, state)

        # 4. The state through the live instance's query endpoint, by `alerts check`.
        check_alert_state(run, rules, plan, state)

        # 5. Every call of both captures stored as a dialog; the saved queries; the ladder of
        # a glare call.
        calls = len(plan.calls) + len(plan.tail)
        got = run.wait_for("SELECT uniqExact(call_id) FROM dialogs", calls, timeout=30)
        assert got == calls, f"dialogs: {got} of {calls}\n{state()}"
        check_saved_queries(run, plan, node, in_capture)
        check_flow(run, plan, tmp_path)
        assert run.stop() == 0, run.log_tail()
    finally:
        run.kill()
    print(f"\nend to end: {time.monotonic() - started:.1f} s")


def _stored(run: RunProc) -> str:
    """What run stored, by table and by status (for failure messages)."""
    try:
        tables = run.rows(
            "SELECT 'messages' AS t, count() AS n FROM sip_messages UNION ALL "
            "SELECT 'dialogs', count() FROM dialogs UNION ALL "
            "SELECT 'anomalies', count() FROM anomalies"
        )
        statuses = run.rows(
            "SELECT status, count() AS n, toString(min(event_time)) AS first, "
            "toString(max(event_time)) AS last FROM sip_messages WHERE status >= 400 "
            "GROUP BY status ORDER BY status"
        )
        return f"{tables} {statuses}; queued {run.metric('hepwatch_run_queued_records_total')}"
    except Exception as exc:  # the endpoint may be what failed
        return f"(not readable: {exc})"


def check_notifications(
    receiver: TimedReceiver, plan: Plan, node: str, run: RunProc, state: Callable[[], str]
) -> None:
    assert receiver.refused == [], receiver.refused
    alerted = {(a["labels"]["alertname"], a["labels"].get("peer")) for _, a in receiver.received}
    assert alerted == set(plan.groups), f"alerts for other groups\n{state()}"
    m = plan.burst_minute
    for (rule, peer), calls in plan.groups.items():
        labels = {"alertname": rule, "node_name": node, "peer": peer}
        count = len(calls)  # one 491 or 405 from the peer per call
        if rule == "glare_491_spike":
            labels["severity"] = "warning"
            anomaly = "glare_491"
        else:
            labels["severity"] = "critical"
            labels["user_agent"] = plan.user_agents[peer]
            anomaly = "405_update_allow_said_"
        firing = receiver.notes(rule, peer, resolved=False)
        resolved = receiver.notes(rule, peer, resolved=True)
        where = f"{rule} {peer}\n{state()}"
        assert len(resolved) == 1, f"one resolution expected: {where}"
        assert max(at for at, _ in firing) < resolved[0][0], f"firing after resolution: {where}"

        for at, alert in firing:
            assert alert["labels"] == labels, where
            notes = alert["annotations"]
            # The first notice may come while the burst is still being stored: between
            # min_count and the whole burst, its evidence calls of the burst.
            assert MIN_COUNT <= float(notes["value"]) <= count, where
            assert notes["threshold"] == str(MIN_COUNT) and notes["baseline"] == "0", where
            assert peer in notes["summary"], where
            top_calls = _top(notes["top_call_ids"])
            assert set(top_calls) <= calls and set(top_calls.values()) == {1}, where
            assert _top(notes["top_peers"]).keys() == {peer}, where
            starts, ends = _stamp(alert["startsAt"]), _stamp(alert["endsAt"])
            # Fired on the data clock while the 2-minute window held minute M.
            assert m + 59 <= starts < m + 120, where
            assert ends > at, f"a firing alert must end in the receiver's future: {where}"
            assert alert["generatorURL"].startswith(run.query_url + "/?query="), where
        # The link lists the messages behind the alert: exactly the burst's, from that peer.
        status, _, body = _get(firing[0][1]["generatorURL"])
        assert status == 200, body
        rows = [line.split("\t") for line in body.decode().splitlines()]
        assert sorted(r[2] for r in rows) == sorted(calls), where

        at, alert = resolved[0]
        notes = alert["annotations"]
        assert alert["labels"] == labels, where
        assert alert["startsAt"] == firing[0][1]["startsAt"], where
        assert _stamp(alert["startsAt"]) < _stamp(alert["endsAt"]) <= at, where
        # Evidence of the whole episode: every call of the burst (at most 5 per group here).
        assert set(_top(notes["top_call_ids"])) == calls, where
        assert _top(notes["top_peers"]) == {peer: count}, where
        anomalies = _top(notes["top_anomalies"])
        assert any(name.startswith(anomaly) for name in anomalies), where


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, dict(resp.headers), resp.read()


def check_alert_state(run: RunProc, rules: Path, plan: Plan, state: Callable[[], str]) -> None:
    out = hepwatch(
        "alerts", "check", "--clickhouse", run.query_url, "--rules", str(rules),
        "--at", "data", "--json",
    )  # fmt: skip
    assert out.returncode == 0, f"{out.stderr}\n{state()}"
    doc = json.loads(out.stdout)
    stored = {
        (r["name"], g["labels"].get("peer")): g
        for r in doc["rules"]
        for g in r["groups"]
        if g["state"] != "inactive"
    }
    assert set(stored) == set(plan.groups), doc
    for key, group in stored.items():
        assert group["state"] == "resolved" and not group["holds"], (key, group)
    moves = Counter((h["rule"], h["labels"].get("peer"), h["to"]) for h in doc["history"])
    for rule, peer in plan.groups:
        assert moves[(rule, peer, "firing")] == 1, doc["history"]
        assert moves[(rule, peer, "resolved")] == 1, doc["history"]


def check_saved_queries(run: RunProc, plan: Plan, node: str, in_capture: Counter[int]) -> None:
    server = ("--server", run.query_url, "--format", "json")
    out = hepwatch("sql", "--saved", "responses_491_405_per_minute", *server)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    with_burst = [r for r in rows if int(r["responses_491"]) or int(r["responses_405"])]
    minute = datetime.fromtimestamp(plan.burst_minute, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert [(r["minute"], r["node_name"]) for r in with_burst] == [(minute, node)], rows
    row = with_burst[0]
    assert int(row["responses_491"]) == in_capture[491], rows
    assert int(row["responses_405"]) == in_capture[405], rows
    assert int(row["responses_405_to_update"]) == in_capture[405], rows

    out = hepwatch("sql", "--saved", "top_glare_dialogs", *server)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["call_id"] for r in rows} == plan.glare_calls, rows
    for r in rows:
        assert int(r["responses_491"]) == 2, r  # the crossing re-INVITEs, refused both ways
        assert "glare_491" in r["anomaly_types"], r


def check_flow(run: RunProc, plan: Plan, tmp_path: Path) -> None:
    call_id = sorted(plan.groups[("glare_491_spike", "10.2.0.11")])[0]
    html = tmp_path / "flow.html"
    out = hepwatch("flow", call_id, "--server", run.query_url, "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert call_id in out.stdout, out.stdout
    assert "491" in out.stdout and "glare_491" in out.stdout, out.stdout
    page = html.read_text()
    assert "491" in page and "glare_491" in page and call_id in page
