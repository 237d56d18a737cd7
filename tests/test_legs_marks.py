"""Stream marks in the C.12 second stage: the clock is the slowest HEP partition's progress.

The legs of one SBC call come from different HEP partitions; here each leg runs through its
own engine (as two consumers would), and the legs partition hears each engine's facts and
marks in whatever interleaving Kafka delivers. A partition that lags (its consumer crashed)
must hold the decision back: deciding by the other partition's facts or by the wall clock
reports the relayed UPDATE as absorbed. A partition that stops for good is waited for
`stall_s` of wall clock, then left out.
"""

from __future__ import annotations

import pickle

import pytest
from test_legs import C12, B2bua, _relay_update_as, _x_cid

from consumers.detectors.leg_summary import LegSummaryDetector
from consumers.engine import Engine, EngineConfig
from consumers.legs import LegCorrelator
from consumers.legs.codec import LegCodecError, StreamMark, decode, encode_mark
from consumers.legs.partition import LegPartition
from consumers.records import AnomalyRecord, LegRecord

TOPIC = "hep"
Item = LegRecord | StreamMark


def _leg_stream(flow, partition: int) -> list[Item]:
    """One leg through its own engine: its facts, each batch followed by the engine's mark."""
    engine = Engine(EngineConfig(), detectors=[LegSummaryDetector()])
    items: list[Item] = []
    for obs in flow.obs:
        items += [r for r in engine.feed(obs) if isinstance(r, LegRecord)]
        items.append(StreamMark(TOPIC, partition, 2, engine.processed_until))
    items += [
        r for r in engine.advance_to(flow.obs[-1].ts_us + 60_000_000) if isinstance(r, LegRecord)
    ]
    items.append(StreamMark(TOPIC, partition, 2, engine.processed_until))
    return items


def leg_streams() -> tuple[list[Item], list[Item]]:
    call = B2bua(a_call_id="a-leg@test", b_call_id="b-leg@sbc")
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE", t=3.0)
    call.end(5.0)
    return _leg_stream(call.a, 0), _leg_stream(call.b, 1)


def split_at(items: list[Item], upto: int) -> tuple[list[Item], list[Item]]:
    """The items whose facts happened before `upto` µs, and the rest."""
    for i, item in enumerate(items):
        if isinstance(item, LegRecord) and item.event_time_us >= upto:
            return items[:i], items[i:]
    return items, []


def _play(part: LegPartition, items: list[Item], wall: float) -> list[AnomalyRecord]:
    out: list[AnomalyRecord] = []
    for item in items:
        out += part.mark(item, wall) if isinstance(item, StreamMark) else part.feed(item)
    return [a for a in out if a.anomaly in C12]


def _names(anoms: list[AnomalyRecord]) -> list[str]:
    return sorted(a.anomaly for a in anoms)


def update_time(a_items: list[Item]) -> int:
    return next(
        r.event_time_us
        for r in a_items
        if isinstance(r, LegRecord) and r.fact == "request" and r.method == "UPDATE"
    )


def test_a_lagging_partition_holds_the_decision_until_its_facts_are_read():
    a_items, b_items = leg_streams()
    b_setup, b_rest = split_at(b_items, update_time(a_items) - 1)
    part = LegPartition()
    # partition 0 runs a minute ahead; partition 1 stopped after the setup (a crash)
    assert _play(part, b_setup, wall=100.0) == []
    assert _play(part, a_items, wall=101.0) == []
    assert part.now < update_time(a_items)  # the clock waits for partition 1
    assert part.tick(130.0) == []  # wall time passing is no reason, within stall_s
    # partition 1's new owner replays it: the relay is found
    assert _names(_play(part, b_rest, wall=140.0)) == ["update_to_reinvite"]
    assert part.stalled == []


def test_deciding_by_the_facts_alone_is_what_went_wrong():
    """The same delivery order through a clock that follows the facts: a false absorption."""
    a_items, b_items = leg_streams()
    b_setup, b_rest = split_at(b_items, update_time(a_items) - 1)
    corr = LegCorrelator()
    out: list[AnomalyRecord] = []
    for item in b_setup + a_items:
        if isinstance(item, LegRecord):
            out += corr.feed(item)
    out += corr.advance_to(max(i.until_us for i in a_items if isinstance(i, StreamMark)))
    for item in b_rest:
        if isinstance(item, LegRecord):
            out += corr.feed(item)
    assert _names([a for a in out if a.anomaly in C12]) == ["update_absorbed"]


def test_a_stalled_partition_is_left_out_after_stall_s():
    a_items, b_items = leg_streams()
    b_setup, _ = split_at(b_items, update_time(a_items) - 1)
    part = LegPartition(stall_s=120.0)
    _play(part, b_setup, wall=100.0)
    assert _play(part, a_items, wall=101.0) == []
    assert part.tick(219.0) == [] and part.stalled == []
    # partition 1's mark has not risen for 120 s: decide without it (the relay never came)
    assert _names([a for a in part.tick(220.5) if a.anomaly in C12]) == ["update_absorbed"]
    assert part.stalled == [(TOPIC, 1)]
    assert part.moving(220.5)  # partition 0 still moves


def test_a_partition_never_heard_from_is_waited_for_within_its_grace():
    a_items, _ = leg_streams()
    part = LegPartition(stall_s=60.0)
    assert _play(part, a_items, wall=10.0) == []
    assert part.now == 0  # the topic has 2 partitions and partition 1 sent nothing yet
    newest = part.marks[(TOPIC, 0)] + 1_000_000
    part.mark(StreamMark(TOPIC, 0, 2, newest), 65.0)  # partition 0 goes on
    assert part.tick(69.0) == [] and part.now == 0
    part.tick(70.0)  # 60 s since the topic was first heard of: go on without partition 1
    assert part.now == newest and part.stalled == [(TOPIC, 1)]


def test_marks_only_rise_and_a_repeated_old_mark_is_no_progress():
    part = LegPartition(stall_s=30.0)
    part.mark(StreamMark(TOPIC, 0, 1, 5_000_000), 0.0)
    part.mark(StreamMark(TOPIC, 0, 1, 3_000_000), 20.0)  # a replay after a crash
    assert part.now == 5_000_000 and part.marks[(TOPIC, 0)] == 5_000_000
    assert part.moving(29.0) and not part.moving(30.0)  # the replayed mark did not rise


def test_no_marks_means_no_clock_and_not_moving():
    part = LegPartition()
    assert part.tick(1e9) == [] and part.now == 0 and not part.moving(1e9)


def test_checkpoint_round_trip_and_fresh_grace_after_restore():
    a_items, b_items = leg_streams()
    b_setup, b_rest = split_at(b_items, update_time(a_items) - 1)
    part = LegPartition(stall_s=120.0)
    _play(part, b_setup + a_items, wall=100.0)
    back: LegPartition = pickle.loads(pickle.dumps(part))
    back.restored(1000.0)  # restarted long after: without a fresh grace both would be stalled
    assert back.tick(1001.0) == [] and back.stalled == []
    assert _names(_play(back, b_rest, wall=1002.0)) == ["update_to_reinvite"]


def test_state_pickled_before_marks_restores_into_mark_mode():
    part = LegPartition()
    state = dict(part.__dict__)
    for name in ("marks", "rose_at", "topics", "stalled", "stall_s"):
        del state[name]
    part.correlator.follow_facts = True
    old = LegPartition.__new__(LegPartition)
    old.__setstate__(state)
    assert old.marks == {} and old.stalled == [] and old.stall_s == 120.0
    assert old.correlator.follow_facts is False


def test_mark_codec_round_trip_and_refusals():
    mark = StreamMark("hep", 3, 12, 1_795_000_000_000_000)
    assert decode(encode_mark(mark)) == mark
    bad = [
        b'{"v":1,"mark":{"topic":"hep","partition":12,"partitions":12,"until_us":1}}',
        b'{"v":1,"mark":{"topic":"hep","partition":-1,"partitions":12,"until_us":1}}',
        b'{"v":1,"mark":{"topic":"hep","partition":0,"partitions":1}}',
        b'{"v":1,"mark":{"topic":"hep","partition":0,"partitions":1,"until_us":"1"}}',
        b'{"v":1,"mark":{"topic":"hep","partition":true,"partitions":1,"until_us":1}}',
        b'{"v":1,"mark":[1,2]}',
        b'{"v":1,"mark":{"topic":"hep","partition":0,"partitions":1,"until_us":1},"id":"x"}',
    ]
    for data in bad:
        with pytest.raises(LegCodecError) as err:
            decode(data)
        assert err.value.reason == "bad_mark", data
