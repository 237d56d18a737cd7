"""Alert evaluation without I/O: counts and the previous state in, new state, transitions
and due notifications out.

Times are seconds since the epoch (floats); the caller passes `now`. One alert exists per
(rule, group), the group being the values of the rule's `group_by` columns. Its life:

    inactive -> pending -> firing -> resolved      (pending skipped when `for` is 0)
    pending  -> inactive                           (the condition stopped before `for`)

Delivery is tracked per notifier in `AlertState.sent` (notifier name -> last delivery), so
a restart that loads the state neither re-sends what was delivered nor forgets what was
not. Notifiers with a resend interval (Alertmanager expects firing alerts to be re-sent)
get firing alerts again once it has passed; the others get each firing and resolution once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from consumers.alerts.rules import Rule, _fmt_duration

PENDING, FIRING, RESOLVED, INACTIVE = "pending", "firing", "resolved", "inactive"
ACTIVE = (PENDING, FIRING)
# A resolution not delivered within this long is dropped (the receiver expires it anyway).
RESOLVED_RETRY_S = 3600.0


def group_key(labels: Mapping[str, str]) -> str:
    """The stable identity of a group: its labels as canonical JSON ("{}" for no group)."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class GroupCount:
    """The count of one group in the current window and, for spikes, its baseline."""

    labels: dict[str, str]
    value: float
    baseline: float | None = None


@dataclass(slots=True)
class AlertState:
    rule: str
    labels: dict[str, str]  # the group's labels
    state: str  # pending, firing, resolved, inactive
    since: float  # when the condition started to hold
    last_true: float  # the last evaluation at which it held
    value: float
    baseline: float | None
    limit: float
    fired_at: float | None = None
    resolved_at: float | None = None
    sent: dict[str, float] = field(default_factory=dict)  # notifier name -> last delivery
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        return group_key(self.labels)


@dataclass(frozen=True, slots=True)
class Transition:
    rule: str
    labels: dict[str, str]
    from_state: str
    to_state: str
    at: float
    value: float
    baseline: float | None
    limit: float


@dataclass(slots=True)
class StepResult:
    states: dict[str, AlertState]  # group_key -> alert worth keeping
    changed: list[AlertState]  # alerts whose state moved (to persist)
    transitions: list[Transition]


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list (numpy's default method)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def baseline_of(past: Sequence[float], windows: int, method: str) -> float:
    """The baseline of `windows` windows, `past` holding the counts of those that had
    messages (in any order); the others count 0."""
    values = [float(v) for v in past] + [0.0] * (windows - len(past))
    if not values:
        return 0.0
    if method == "mean":
        return sum(values) / len(values)
    return quantile(values, 0.9 if method == "p90" else 0.5)


def group_counts(
    rule: Rule, rows: Iterable[tuple[dict[str, str], float, Sequence[float]]]
) -> dict[str, GroupCount]:
    """Per-group counts from (labels, count in the current window, counts of the baseline
    windows that had messages) rows, one per group.

    Groups without messages in the current window are left out; the baseline is None for
    threshold rules and for spikes below min_count (they cannot hold, so it is not needed).
    """
    out: dict[str, GroupCount] = {}
    for labels, value, past in rows:
        if value <= 0:
            continue
        base = None
        if rule.kind == "spike" and value >= rule.min_count:
            base = baseline_of(past, rule.baseline_windows, rule.baseline)
        out[group_key(labels)] = GroupCount(labels, float(value), base)
    return out


def step(
    rule: Rule,
    now: float,
    counts: Mapping[str, GroupCount],
    previous: Mapping[str, AlertState],
) -> StepResult:
    """One evaluation of one rule.

    `counts`: this window's groups (group_key -> GroupCount); a group absent counts 0.
    `previous`: the rule's alerts (group_key -> state) from the last evaluation or the store.
    Returns every alert still worth keeping (pending, firing, and resolved ones whose
    resolution may still need delivery), the alerts that changed state (to persist, the
    ones gone inactive included) and the transitions made now.
    """
    states: dict[str, AlertState] = {}
    changed: list[AlertState] = []
    transitions: list[Transition] = []

    def move(state: AlertState, to: str, from_state: str) -> None:
        state.state = to
        state.updated_at = now
        changed.append(state)
        transitions.append(
            Transition(
                rule.name,
                dict(state.labels),
                from_state,
                to,
                now,
                state.value,
                state.baseline,
                state.limit,
            )
        )

    for key in sorted(set(counts) | set(previous)):
        prev = previous.get(key)
        count = counts.get(key)
        active = prev is not None and prev.state in ACTIVE
        if count is None and not active:
            if prev is not None and _keep_resolved(prev, now):
                states[key] = prev
            continue
        labels = count.labels if count else prev.labels  # type: ignore[union-attr]
        value = count.value if count else 0.0
        baseline = count.baseline if count else None
        limit = rule.limit(baseline)
        holds = value >= limit
        if active:
            assert prev is not None
            state = replace(prev, sent=dict(prev.sent), value=value, baseline=baseline, limit=limit)
        elif holds:
            state = AlertState(rule.name, labels, INACTIVE, now, now, value, baseline, limit)
        else:
            if prev is not None and _keep_resolved(prev, now):
                states[key] = prev
            continue

        if holds:
            state.last_true = now
            from_state = prev.state if prev is not None else INACTIVE
            entered = state.state not in ACTIVE
            if entered:
                state.state, state.since = PENDING, now
            if state.state == PENDING and now - state.since >= rule.for_:
                state.fired_at, state.resolved_at = now, None
                move(state, FIRING, from_state)
            elif entered:
                move(state, PENDING, from_state)
        elif state.state == PENDING:
            move(state, INACTIVE, PENDING)
            continue
        elif state.state == FIRING and now - state.last_true >= rule.keep_firing_for:
            state.resolved_at = now
            move(state, RESOLVED, FIRING)
        states[key] = state
    return StepResult(states, changed, transitions)


def _keep_resolved(state: AlertState, now: float) -> bool:
    return (
        state.state == RESOLVED
        and state.resolved_at is not None
        and now - state.resolved_at < RESOLVED_RETRY_S
    )


def is_due(state: AlertState, notifier: str, resend_s: float | None, now: float) -> bool:
    """Whether `notifier` should hear about this alert now.

    Firing: when it has not heard since the alert fired, or (resend_s set) when resend_s
    has passed since it last heard. Resolved: when it has not heard since the resolution
    (and the resolution is recent; see RESOLVED_RETRY_S).
    """
    last = state.sent.get(notifier)
    if state.state == FIRING:
        assert state.fired_at is not None
        if last is None or last < state.fired_at:
            return True
        return resend_s is not None and now - last >= resend_s
    if state.state == RESOLVED and state.resolved_at is not None:
        if now - state.resolved_at >= RESOLVED_RETRY_S:
            return False
        return last is None or last < state.resolved_at
    return False


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def annotations(rule: Rule, state: AlertState) -> dict[str, str]:
    """The rule's annotations with {value}, {baseline}, {limit}, {window} and the group's
    labels filled in; a summary is made up when the rule has none."""
    fields = _Keep(
        {
            **state.labels,
            "value": _num(state.value),
            "baseline": _num(state.baseline),
            "limit": _num(state.limit),
            "window": _fmt_duration(rule.window),
            "rule": rule.name,
        }
    )
    out = {key: text.format_map(fields) for key, text in rule.annotations.items()}
    if "summary" not in out:
        group = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items()))
        base = f" (baseline {_num(state.baseline)})" if rule.kind == "spike" else ""
        where = f" for {group}" if group else ""
        out["summary"] = (
            f"{rule.name}: {_num(state.value)} in {_fmt_duration(rule.window)}{where}, "
            f"limit {_num(state.limit)}{base}"
        )
    return out


def alert_labels(rule: Rule, state: AlertState) -> dict[str, str]:
    """Labels identifying the alert to receivers; empty values are left out (Prometheus
    semantics: an empty label is no label)."""
    labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
    labels.update(state.labels)
    return {k: v for k, v in labels.items() if v != ""}


@dataclass(slots=True)
class Notification:
    """One alert to deliver: what every notifier needs, evidence filled in by the caller."""

    rule: str
    status: str  # firing or resolved
    labels: dict[str, str]  # full receiver labels
    group: dict[str, str]  # the group's labels alone
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None  # resolved: the resolution; firing: when receivers may expire it
    value: float
    baseline: float | None
    limit: float
    key: str
    generator_url: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def notification(rule: Rule, state: AlertState, now: float, expires_after_s: float) -> Notification:
    """The notification for a firing or resolved alert; firing ones expire at
    now + expires_after_s at the receiver unless re-sent."""
    assert state.fired_at is not None
    ends_at = state.resolved_at if state.state == RESOLVED else now + expires_after_s
    return Notification(
        rule=rule.name,
        status=state.state,
        labels=alert_labels(rule, state),
        group=dict(state.labels),
        annotations=annotations(rule, state),
        starts_at=state.fired_at,
        ends_at=ends_at,
        value=state.value,
        baseline=state.baseline,
        limit=state.limit,
        key=state.key,
    )


def window_bounds(rule: Rule, now: float) -> tuple[int, int, int]:
    """(baseline start, window start, window end) in epoch seconds, whole minutes.

    The window ends after the minute holding `now` (the minute in progress counts), so
    it covers the last `window` minutes up to now; baseline windows precede it back to back.
    """
    end = (int(now) // 60 + 1) * 60
    start = end - int(rule.window)
    return start - rule.baseline_windows * int(rule.window), start, end
