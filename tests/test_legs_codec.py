"""C.12 second stage, sans I/O: the legs-topic encoding, the partition key, and the
per-partition state (repeat window + correlator) the Kafka stage checkpoints."""

from __future__ import annotations

import json
import pickle

import pytest
from test_legs import B2bua, _legs, _relay_update_as, _x_cid

from consumers.legs.codec import LegCodecError, decode, encode, partition_key
from consumers.legs.partition import LegPartition
from consumers.records import LegRecord


def _converted_call() -> list[LegRecord]:
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE")
    call.end(9)
    return _legs(call.records())


def test_every_fact_round_trips_and_the_encoding_is_compact():
    legs = _converted_call()
    assert {r.fact for r in legs} == {"setup", "request", "final"}
    for rec in legs:
        data = encode(rec)
        assert decode(data) == rec
        full = json.dumps(rec.to_dict(), separators=(",", ":")).encode()
        assert len(data) < len(full)
    req = next(r for r in legs if r.fact == "request")
    # fields a request fact does not use are left out, and come back as their defaults
    assert b"invite_src_ip" not in encode(req) and b"answered_by" not in encode(req)


def test_optional_values_survive():
    rec = next(r for r in _converted_call() if r.fact == "setup")
    rec = rec.replace(caller_allow=[], callee_allow=None, response_ms=12.5)
    back = decode(encode(rec))
    assert back.caller_allow == [] and back.callee_allow is None and back.response_ms == 12.5


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not_json"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"v": 2, "id": "x"}', "version"),
    ],
)
def test_foreign_messages_are_refused_with_a_reason(data: bytes, reason: str):
    with pytest.raises(LegCodecError) as info:
        decode(data)
    assert info.value.reason == reason


def test_unknown_missing_and_mistyped_fields_are_refused():
    rec = _converted_call()[0]
    good = json.loads(encode(rec))
    for change, reason in [
        ({"surprise": 1}, "unknown_field"),
        ({"cseq": "1"}, "bad_type"),
        ({"owner_known": 1}, "bad_type"),
        ({"src_port": True}, "bad_type"),
        ({"caller_allow": ["INVITE", 3]}, "bad_type"),
    ]:
        with pytest.raises(LegCodecError) as info:
            decode(json.dumps({**good, **change}).encode())
        assert info.value.reason == reason, change
    del good["call_id"]
    with pytest.raises(LegCodecError) as info:
        decode(json.dumps(good).encode())
    assert info.value.reason == "missing_field" and "call_id" in str(info.value)


def test_both_legs_share_the_key_by_x_cid():
    legs = _converted_call()
    keys = {(r.call_id, partition_key(r)) for r in legs}
    assert keys == {("leg-a@test", "c:leg-a@test"), ("leg-b@sbc", "c:leg-a@test")}


def test_hep_correlation_id_wins_unless_it_is_the_call_id():
    rec = _converted_call()[0]
    assert partition_key(rec.replace(hep_correlation_id="corr-1")) == "h:corr-1"
    same = rec.replace(hep_correlation_id=rec.call_id, x_cid="")
    assert partition_key(same) == f"c:{rec.call_id}"


def test_partition_state_drops_repeats_and_pickles():
    legs = _converted_call()
    once = LegPartition()
    first = [a for r in legs for a in once.feed(r)]
    first += once.advance_to(max(r.detected_at_us for r in legs) + 60_000_000)
    assert [a.anomaly for a in first] == ["update_to_reinvite"]

    # a first-stage replay publishes the same facts again, even after decisions were made
    twice = LegPartition()
    out = [a for r in legs for a in twice.feed(r)]
    out += twice.advance_to(max(r.detected_at_us for r in legs) + 60_000_000)
    clone = pickle.loads(pickle.dumps(twice))
    again = [a for r in legs for a in clone.feed(r)]
    again += clone.advance_to(clone.now + 60_000_000)
    assert [a.id for a in out] == [a.id for a in first] and again == []
    assert clone.stats.repeats == len(legs)


def test_repeat_window_is_bounded():
    legs = _converted_call()
    state = LegPartition(keep_s=1.0, max_ids=3)
    for r in legs:
        state.feed(r)
    assert len(state.seen) <= 3 and state.stats.ids_evicted > 0
    state.advance_to(max(r.detected_at_us for r in legs) + 2_000_000)
    assert not state.seen
