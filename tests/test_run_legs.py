"""`hepwatch run` correlates the legs of SBC calls (PROTOCOL.md C.12) in process.

An SBC call, A-leg and B-leg with their own Call-IDs (the B-leg carrying X-CID), goes to
`run` over HEP; the A-leg's UPDATE is relayed as a re-INVITE on the B-leg. The
`update_to_reinvite` anomaly must be stored exactly once, stamped as the legs partition's
row, also when run is restarted between the call's setup and the UPDATE (the correlator's
state is in the checkpoint) and after the anomaly (nothing is decided twice).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from run_proc import RunProc, hep_packets, now_shift
from sipflow import Flow
from test_legs import B2bua, _relay_update_as, _x_cid

from hepwatch.run import LEGS_PARTITION, PARTITION

C12_ROWS = (
    "SELECT anomaly, call_id, src_partition, "
    "fields['leg_a_call_id'] AS leg_a, "
    "fields['leg_b_call_id'] AS leg_b, "
    "fields['correlation_method'] AS method, "
    "fields['leg_a_method'] AS a_method, "
    "fields['leg_b_method'] AS b_method "
    "FROM anomalies WHERE family = 'C.12' ORDER BY anomaly"
)


def sbc_call(tag: str) -> tuple[B2bua, list[Flow], list[Flow]]:
    """The call, and per leg its setup and the rest (UPDATE relayed as re-INVITE, BYEs)."""
    call = B2bua(a_call_id=f"a-{tag}@test", b_call_id=f"b-{tag}@sbc")
    call.setup(b_invite=_x_cid(call))
    cut = (len(call.a.obs), len(call.b.obs))
    _relay_update_as(call, "INVITE", t=3.0)
    call.end(5.0)
    heads, tails = [], []
    for flow, n in zip((call.a, call.b), cut, strict=True):
        head, tail = Flow(flow.call_id), Flow(flow.call_id)
        head.obs, tail.obs = flow.obs[:n], flow.obs[n:]
        heads.append(head)
        tails.append(tail)
    return call, heads, tails


def expected_c12(call: B2bua) -> list[str]:
    """What the correlator makes of the whole call offline: the test's premise."""
    names = sorted(a.anomaly for a in call.anomalies())
    assert names == ["update_to_reinvite"]
    return names


def check_stored(run: RunProc, tag: str) -> None:
    rows = run.rows(C12_ROWS)
    assert rows == [
        {
            "anomaly": "update_to_reinvite",
            "call_id": f"b-{tag}@sbc",  # fired on the B2BUA's request
            "src_partition": LEGS_PARTITION,
            "leg_a": f"a-{tag}@test",
            "leg_b": f"b-{tag}@sbc",
            "method": "x_cid",
            "a_method": "UPDATE",
            "b_method": "INVITE",
        }
    ], run.log_tail()
    assert run.scalar("SELECT count() FROM anomalies WHERE family = 'C.12'") == 1
    # The HEP stream's rows keep their own partition, so resume dedup sets never mix.
    parts = run.rows("SELECT DISTINCT src_partition AS p FROM sip_messages")
    assert parts == [{"p": PARTITION}]


@pytest.fixture
def run(tmp_path: Path):
    proc = RunProc(tmp_path / "data")
    yield proc
    proc.kill()


def wait_c12(run: RunProc, timeout: float = 30.0) -> int:
    return int(
        run.wait_for("SELECT count() FROM anomalies WHERE family = 'C.12'", 1, timeout=timeout)
    )


def test_update_converted_to_reinvite_is_stored_once(run: RunProc) -> None:
    call, _, _ = sbc_call("once")
    expected_c12(call)
    obs = call.a.obs + call.b.obs
    run.start()
    run.send_udp(hep_packets(obs, now_shift(obs)))
    assert wait_c12(run) == 1, run.log_tail()
    # Both dialogs end (64*T1 after the BYEs): the correlator's later decisions are in.
    assert run.wait_for("SELECT count() FROM dialogs", 2) == 2, run.log_tail()
    check_stored(run, "once")
    assert run.stop() == 0
    assert "analysis stopped" in run.log_tail()


def test_restart_continues_the_legs(run: RunProc) -> None:
    call, heads, tails = sbc_call("restart")
    expected_c12(call)
    head = [o for f in heads for o in f.obs]
    tail = [o for f in tails for o in f.obs]
    shift = now_shift(head)
    run.start()
    run.send_udp(hep_packets(head, shift))
    invites = "SELECT uniqExact(call_id) FROM sip_messages WHERE method = 'INVITE' AND status = 0"
    assert run.wait_for(invites, 2) == 2, run.log_tail()
    assert run.stop() == 0

    # The rest arrives after the restart: the link made by the B-leg INVITE's X-CID at
    # setup lives only in the checkpointed correlator.
    run.start()
    assert "resumed from the checkpoint" in run.log_tail()
    shift_tail = max(shift, now_shift(tail))  # capture times never go back
    run.send_udp(hep_packets(tail, shift_tail))
    assert wait_c12(run) == 1, run.log_tail()
    assert run.wait_for("SELECT count() FROM dialogs", 2) == 2, run.log_tail()
    check_stored(run, "restart")
    assert run.stop() == 0

    # Once more: the anomaly is not decided again from the last checkpoint's state.
    run.start()
    assert run.wait_for("SELECT count() FROM anomalies WHERE family = 'C.12'", 2, timeout=3) == 1
    check_stored(run, "restart")
    assert run.stop() == 0
