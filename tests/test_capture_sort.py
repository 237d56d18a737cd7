"""The capture's sort buffer (`consumers.capture.window_sorted`): the order and the moments of
release are those of one heap over (capture time, arrival), whatever the input's disorder."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from hypothesis import given
from hypothesis import strategies as st

from consumers.capture import window_sorted
from consumers.observation import Observation


def _obs(ts_us: int, n: int) -> Observation:
    return Observation(
        ts_us, "10.0.0.1", 5060, "10.0.0.2", 5060, "udp", 0, "0", "", f"t#{n}", b"OPTIONS"
    )


def _one_heap(observations: Iterable[Observation], window_us: int) -> Iterator[Observation]:
    """The plain definition: every observation through one heap."""
    heap: list[tuple[int, int, Observation]] = []
    newest = 0
    for seq, obs in enumerate(observations):
        heapq.heappush(heap, (obs.ts_us, seq, obs))
        newest = max(newest, obs.ts_us)
        while heap and heap[0][0] < newest - window_us:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def _releases(sorter, stamps: list[int], window_us: int) -> list[tuple[str, int]]:
    """(ref, how many inputs had been read) for each observation released."""
    read = 0

    def source() -> Iterator[Observation]:
        nonlocal read
        for n, ts in enumerate(stamps):
            read += 1
            yield _obs(ts, n)

    return [(obs.ref, read) for obs in sorter(source(), window_us)]


@given(
    st.lists(st.integers(min_value=0, max_value=50), max_size=60),
    st.integers(min_value=0, max_value=20),
)
def test_same_order_and_release_points_as_one_heap(stamps: list[int], window_us: int) -> None:
    assert _releases(window_sorted, stamps, window_us) == _releases(_one_heap, stamps, window_us)


def test_in_order_input_is_released_as_the_window_passes() -> None:
    got = _releases(window_sorted, [0, 5, 10, 15, 20], 6)
    # t=0 goes when t=10 arrives (older than 10 - 6), t=5 when t=15 arrives, ...
    assert got == [("t#0", 3), ("t#1", 4), ("t#2", 5), ("t#3", 5), ("t#4", 5)]


def test_late_arrivals_go_back_in_time_order_and_ties_keep_arrival_order() -> None:
    stamps = [10, 30, 20, 20, 5, 40]
    out = [o.ref for o in window_sorted((_obs(ts, n) for n, ts in enumerate(stamps)), 100)]
    assert out == ["t#4", "t#0", "t#2", "t#3", "t#1", "t#5"]
