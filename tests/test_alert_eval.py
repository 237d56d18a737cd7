"""Pure alert evaluation: state machine, baselines, grouping, delivery bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.alerts.evaluate import (
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED,
    RESOLVED_RETRY_S,
    AlertState,
    GroupCount,
    alert_labels,
    annotations,
    baseline_of,
    group_counts,
    group_key,
    is_due,
    notification,
    quantile,
    step,
    window_bounds,
)
from consumers.alerts.rules import Rule, parse_rules

T0 = 1_700_000_040.0  # a whole minute (divisible by 60)


def rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {"name": "r", "kind": "threshold", "match": {"status": 491}}
    base.update(fields)
    if base["kind"] == "spike":
        base.pop("threshold", None)
    else:
        base.setdefault("threshold", 10)
    (r,) = parse_rules({"rules": [base]})
    return r


def counts(value: float, baseline: float | None = None, **labels: str) -> dict[str, GroupCount]:
    return {group_key(labels): GroupCount(dict(labels), value, baseline)}


class Run:
    """Steps one rule through time, keeping the states as the evaluator does."""

    def __init__(self, r: Rule) -> None:
        self.rule = r
        self.states: dict[str, AlertState] = {}

    def at(self, t: float, c: dict[str, GroupCount]) -> list[tuple[str, str]]:
        result = step(self.rule, T0 + t, c, self.states)
        self.states = result.states
        assert {s.key for s in result.changed} == {group_key(x.labels) for x in result.transitions}
        return [(x.from_state, x.to_state) for x in result.transitions]

    def state(self, **labels: str) -> str:
        s = self.states.get(group_key(labels))
        return s.state if s else INACTIVE


def test_pending_then_firing_then_resolved() -> None:
    run = Run(rule(threshold=10, **{"for": "1m"}))
    assert run.at(0, counts(5)) == []
    assert run.at(15, counts(12)) == [(INACTIVE, PENDING)]
    assert run.at(30, counts(20)) == []
    assert run.state() == PENDING
    assert run.states["{}"].since == T0 + 15
    assert run.at(60, counts(20)) == []  # 45 s pending: not yet
    assert run.at(75, counts(20)) == [(PENDING, FIRING)]
    fired = run.states["{}"]
    assert fired.fired_at == T0 + 75 and fired.since == T0 + 15 and fired.value == 20
    assert run.at(90, counts(11)) == []
    assert run.at(105, {}) == [(FIRING, RESOLVED)]
    resolved = run.states["{}"]
    assert resolved.resolved_at == T0 + 105 and resolved.value == 0
    assert run.at(120, {}) == []
    assert run.state() == RESOLVED  # kept while its resolution may need delivery
    assert run.at(105 + RESOLVED_RETRY_S, {}) == []
    assert run.states == {}


def test_for_zero_fires_at_once_in_one_transition() -> None:
    run = Run(rule(threshold=3))
    assert run.at(0, counts(3)) == [(INACTIVE, FIRING)]
    assert run.states["{}"].fired_at == T0


def test_pending_that_stops_holding_goes_inactive() -> None:
    run = Run(rule(threshold=10, **{"for": "5m"}))
    assert run.at(0, counts(10)) == [(INACTIVE, PENDING)]
    assert run.at(60, counts(9)) == [(PENDING, INACTIVE)]
    assert run.states == {}
    # Holding again starts a new pending period.
    assert run.at(120, counts(10)) == [(INACTIVE, PENDING)]
    assert run.states["{}"].since == T0 + 120


def test_keep_firing_for() -> None:
    run = Run(rule(threshold=5, keep_firing_for="2m"))
    assert run.at(0, counts(5)) == [(INACTIVE, FIRING)]
    assert run.at(60, counts(1)) == []
    assert run.at(119, {}) == []
    assert run.state() == FIRING
    assert run.at(120, {}) == [(FIRING, RESOLVED)]


def test_resolved_alert_fires_again_as_a_new_firing() -> None:
    run = Run(rule(threshold=5))
    run.at(0, counts(6))
    run.at(60, {})
    assert run.at(120, counts(7)) == [(RESOLVED, FIRING)]
    s = run.states["{}"]
    assert s.fired_at == T0 + 120 and s.resolved_at is None


def test_spike_needs_min_count_even_without_baseline() -> None:
    run = Run(rule(kind="spike", min_count=10, factor=3))
    assert run.at(0, counts(9, baseline=0.0)) == []
    assert run.at(15, counts(10, baseline=0.0)) == [(INACTIVE, FIRING)]
    assert run.states["{}"].limit == 10


def test_spike_against_baseline() -> None:
    run = Run(rule(kind="spike", min_count=10, factor=3))
    assert run.at(0, counts(29, baseline=10.0)) == []
    assert run.at(15, counts(30, baseline=10.0)) == [(INACTIVE, FIRING)]
    s = run.states["{}"]
    assert (s.value, s.baseline, s.limit) == (30, 10.0, 30.0)


def test_groups_are_separate_alerts() -> None:
    run = Run(rule(threshold=10, group_by=["peer"]))
    c = {**counts(50, peer="10.0.0.1"), **counts(3, peer="10.0.0.2")}
    assert run.at(0, c) == [(INACTIVE, FIRING)]
    assert run.state(peer="10.0.0.1") == FIRING
    assert run.state(peer="10.0.0.2") == INACTIVE
    c = {**counts(2, peer="10.0.0.1"), **counts(30, peer="10.0.0.2")}
    result = step(run.rule, T0 + 60, c, run.states)
    moves = {(t.labels["peer"], t.to_state) for t in result.transitions}
    assert moves == {("10.0.0.1", RESOLVED), ("10.0.0.2", FIRING)}


def test_quantiles_and_baselines() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([5], 0.9) == 5
    assert quantile(list(range(11)), 0.9) == 9
    # Windows without messages are zeros: 3 busy windows of 10 in 8 leave the median at 0.
    assert baseline_of([10, 10, 10], 8, "median") == 0.0
    assert baseline_of([10] * 5, 8, "median") == 10.0
    assert baseline_of([8, 8], 8, "mean") == 2.0
    assert baseline_of([9, 3, 1, 7, 5, 2, 8, 4, 6], 10, "p90") == pytest.approx(8.1)
    assert baseline_of([], 0, "median") == 0.0


def test_group_counts_from_rows() -> None:
    r = rule(kind="spike", window="5m", baseline_period="20m", group_by=["peer"], min_count=3)
    assert r.baseline_windows == 4
    a, b, c, d = {"peer": "a"}, {"peer": "b"}, {"peer": "c"}, {"peer": "d"}
    rows = [
        (a, 40, [4, 6, 5, 5]),
        (b, 2, []),  # below min_count: no baseline needed
        (c, 0, [9]),  # only in the past: not a current group
        (d, 3, []),  # only now: baseline 0
    ]
    got = group_counts(r, rows)
    assert set(got) == {group_key(a), group_key(b), group_key(d)}
    assert got[group_key(a)] == GroupCount(a, 40.0, 5.0)
    assert got[group_key(b)] == GroupCount(b, 2.0, None)
    assert got[group_key(d)] == GroupCount(d, 3.0, 0.0)
    t = rule(threshold=1)
    assert group_counts(t, [({}, 5, [])]) == {"{}": GroupCount({}, 5.0, None)}


def test_window_bounds_are_whole_minutes_ending_after_now() -> None:
    r = rule(kind="spike", window="5m", baseline_period="1h")
    base, start, end = window_bounds(r, T0 + 59.9)
    assert end == T0 + 60 and start == end - 300 and base == start - 3600
    t = rule(window="2m")
    assert window_bounds(t, T0) == (T0 - 60, T0 - 60, T0 + 60)


def firing_state(**kw: Any) -> AlertState:
    s = AlertState("r", {"peer": "10.0.0.1"}, FIRING, T0, T0, 12.0, 2.0, 10.0, fired_at=T0)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_is_due_firing_resend_and_resolution() -> None:
    s = firing_state()
    assert is_due(s, "alertmanager", 60, T0)
    assert is_due(s, "webhook", None, T0)
    s.sent = {"alertmanager": T0, "webhook": T0}
    assert not is_due(s, "alertmanager", 60, T0 + 59)
    assert is_due(s, "alertmanager", 60, T0 + 60)  # Alertmanager wants re-sends
    assert not is_due(s, "webhook", None, T0 + 3600)  # the webhook hears once
    s.state, s.resolved_at = RESOLVED, T0 + 100
    assert is_due(s, "alertmanager", 60, T0 + 100)
    assert is_due(s, "webhook", None, T0 + 100)
    s.sent = {"alertmanager": T0 + 100, "webhook": T0 + 100}
    assert not is_due(s, "alertmanager", 60, T0 + 500)
    assert not is_due(s, "webhook", None, T0 + 500)
    # An undelivered resolution is retried, but not forever.
    s.sent = {}
    assert is_due(s, "webhook", None, T0 + 100 + RESOLVED_RETRY_S - 1)
    assert not is_due(s, "webhook", None, T0 + 100 + RESOLVED_RETRY_S)
    # A new firing after an earlier one was delivered is due again.
    s.state, s.resolved_at, s.fired_at = FIRING, None, T0 + 200
    s.sent = {"webhook": T0 + 100}
    assert is_due(s, "webhook", None, T0 + 200)
    # Pending alerts are never sent.
    s.state = PENDING
    assert not is_due(s, "alertmanager", 60, T0 + 999)


def test_labels_annotations_and_notification() -> None:
    r = rule(
        kind="spike",
        group_by=["peer", "user_agent"],
        severity="critical",
        labels={"team": "voice"},
        annotations={"summary": "{value} from {peer} (baseline {baseline}) {nope}"},
    )
    s = firing_state(labels={"peer": "10.0.0.1", "user_agent": ""}, baseline=2.5)
    labels = alert_labels(r, s)
    assert labels == {
        "alertname": "r",
        "severity": "critical",
        "team": "voice",
        "peer": "10.0.0.1",
    }
    assert annotations(r, s) == {"summary": "12 from 10.0.0.1 (baseline 2.50) {nope}"}
    made_up = annotations(rule(threshold=10), firing_state())
    assert made_up["summary"] == "r: 12 in 5m for peer=10.0.0.1, limit 10"
    n = notification(r, s, T0 + 30, expires_after_s=240)
    assert n.status == FIRING and n.starts_at == T0 and n.ends_at == T0 + 270
    s.state, s.resolved_at = RESOLVED, T0 + 90
    assert notification(r, s, T0 + 95, 240).ends_at == T0 + 90
