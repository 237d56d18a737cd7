"""The alert evaluator: every `interval_s`, count per rule, step the alerts, persist what
changed, fetch evidence and notify.

`AlertEvaluator(client, settings.alerts, lock=...)` is all a host needs: `hepwatch alerts`
runs `run(stop_event)` in its own process; `hepwatch run` may instead call
`evaluate_once()` from a thread of its own, passing the lock that guards its chDB client.
The state lives in ClickHouse (alert_state), loaded on the first evaluation, so a restart
keeps pending alerts' since-times and re-sends nothing that was delivered.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from consumers.alerts.evaluate import (
    ACTIVE,
    FIRING,
    RESOLVED,
    AlertState,
    GroupCount,
    Notification,
    Transition,
    group_key,
    is_due,
    notification,
    step,
    window_bounds,
)
from consumers.alerts.notify import (
    AlertmanagerNotifier,
    LogNotifier,
    Notifier,
    NotifyError,
    WebhookNotifier,
)
from consumers.alerts.rules import Rule, load_rules
from consumers.alerts.store import AlertStore
from hepwatch.config import AlertsConfig

log = logging.getLogger("hepwatch.alerts")

DEFAULT_QUERY_URL = "http://127.0.0.1:8123"  # query_http.listen's default


def notifiers_for(config: AlertsConfig, resend_s: float | None = None) -> list[Notifier]:
    """The notifiers the configuration asks for."""
    resend_s = config.resend_interval_s if resend_s is None else resend_s
    out: list[Notifier] = []
    if config.alertmanager_url:
        out.append(AlertmanagerNotifier(config.alertmanager_url, resend_s=resend_s))
    if config.webhook_url:
        out.append(WebhookNotifier(config.webhook_url))
    if config.log:
        out.append(LogNotifier())
    return out


class DataClock:
    """Evaluation time that follows the data: the end of the newest minute with messages,
    moved on by the wall clock while no newer minute arrives.

    For captures replayed with their original (past) times: the alerts fire as the data
    comes in and resolve as its time passes after the replay ends. Live traffic keeps it
    within a minute of the wall clock. `wall` is the wall clock (injectable for tests).
    """

    def __init__(self, store: AlertStore, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall
        self._latest: float | None = None
        self._seen_at = 0.0

    def __call__(self) -> float:
        latest = self.store.latest_minute()
        wall = self.wall()
        if latest is None:
            return wall
        latest += 59.999  # the newest minute counts as complete
        if latest != self._latest:
            self._latest, self._seen_at = latest, wall
        return latest + (wall - self._seen_at)


@dataclass(slots=True)
class GroupView:
    """One group of one rule as `alerts check` shows it."""

    labels: dict[str, str]
    value: float
    baseline: float | None
    limit: float
    holds: bool
    state: str  # the stored state; "inactive" when none is on record
    since: float | None


class AlertEvaluator:
    """Periodic evaluation of alert rules against ClickHouse.

    client: a clickhouse-connect client (`chdb://` or `http://`); lock: a context manager
    held around every query and insert (a `threading.Lock` shared with other users of the
    same chDB client), or None. rules: None loads `config.rules` (the shipped defaults when
    that is None). notifiers: None builds them from the config. resend_s: how often
    Alertmanager hears about a firing alert again (default config.resend_interval_s); firing
    alerts carry endsAt = now + 4 x max(interval, resend) so Alertmanager resolves them if
    hepwatch goes away.
    query_url: base of the generatorURL links (the query endpoint; `?query=` shows the
    messages behind the alert; "" for none). clock: the evaluation time when
    `evaluate_once` is given none: a callable, "wall", or "data" for a `DataClock`
    (replayed captures); default config.clock.
    """

    def __init__(
        self,
        client: Any,
        config: AlertsConfig,
        rules: Sequence[Rule] | None = None,
        *,
        lock: AbstractContextManager[Any] | None = None,
        notifiers: Sequence[Notifier] | None = None,
        resend_s: float | None = None,
        query_url: str = DEFAULT_QUERY_URL,
        evidence_top: int = 5,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] | str | None = None,
    ) -> None:
        self.config = config
        self.rules = list(rules) if rules is not None else load_rules(config.rules)
        self.store = AlertStore(client, lock)
        clock = config.clock if clock is None else clock
        if isinstance(clock, str):
            if clock not in ("wall", "data"):
                raise ValueError(f"clock {clock!r}: a callable, 'wall' or 'data'")
            clock = DataClock(self.store) if clock == "data" else time.time
        self.clock: Callable[[], float] = clock
        resend_s = config.resend_interval_s if resend_s is None else resend_s
        self.notifiers = (
            list(notifiers) if notifiers is not None else notifiers_for(config, resend_s)
        )
        self.expires_after_s = 4 * max(config.interval_s, resend_s)
        self.query_url = query_url.rstrip("/")
        self.evidence_top = evidence_top
        self.stats: Counter[str] = Counter()
        self._states: dict[str, dict[str, AlertState]] | None = None
        self._unsaved: dict[tuple[str, str], AlertState] = {}
        self._by_name = {rule.name: rule for rule in self.rules}
        self.registry = registry or CollectorRegistry()
        self._m_evals = PromCounter(
            "hepwatch_alert_evaluations", "Alert evaluation cycles", registry=self.registry
        )
        self._m_errors = PromCounter(
            "hepwatch_alert_errors", "Failed queries or writes", ["what"], registry=self.registry
        )
        self._m_transitions = PromCounter(
            "hepwatch_alert_transitions",
            "Alert transitions",
            ["rule", "to"],
            registry=self.registry,
        )
        self._m_notify = PromCounter(
            "hepwatch_alert_notifications",
            "Notification batches by notifier and result",
            ["notifier", "result"],
            registry=self.registry,
        )
        self._m_active = Gauge(
            "hepwatch_alerts", "Alerts by rule and state", ["rule", "state"], registry=self.registry
        )

    # -- state ----------------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, AlertState]]:
        if self._states is None:
            states: dict[str, dict[str, AlertState]] = {}
            for s in self.store.load_states():
                if s.rule in self._by_name and s.state in (*ACTIVE, RESOLVED):
                    states.setdefault(s.rule, {})[s.key] = s
            self._states = states
            log.info(
                "alerts: %d rules, %d alerts loaded (%d firing)",
                len(self.rules),
                sum(len(v) for v in states.values()),
                sum(1 for v in states.values() for s in v.values() if s.state == FIRING),
            )
        return self._states

    def alerts(self) -> list[AlertState]:
        """The alerts held now (pending, firing, recently resolved)."""
        return [s for group in self._load().values() for s in group.values()]

    # -- one cycle ------------------------------------------------------------------------

    def evaluate_once(self, now: float | None = None) -> list[Transition]:
        """Evaluate every rule at `now` (default: the clock), persist, notify.

        Returns the transitions made. Query, write and delivery failures are logged and
        counted and retried on the next cycle; they never raise.
        """
        self.stats["evaluations"] += 1
        self._m_evals.inc()
        try:
            now = self.clock() if now is None else now
            states = self._load()
        except Exception:
            log.exception("alerts: cannot read the clock or the alert state; cycle skipped")
            self._error("load")
            return []
        transitions: list[Transition] = []
        for rule in self.rules:
            try:
                counts = self.store.counts(rule, now)
            except Exception:
                log.exception("alerts: counting for rule %s failed", rule.name)
                self._error("count")
                continue
            result = step(rule, now, counts, states.get(rule.name, {}))
            states[rule.name] = result.states
            for s in result.changed:
                self._unsaved[(rule.name, s.key)] = s
            transitions.extend(result.transitions)

        notes: dict[tuple[str, str], Notification] = {}
        for t in transitions:
            self.stats[f"transitions_{t.to_state}"] += 1
            self._m_transitions.labels(t.rule, t.to_state).inc()
            if t.to_state in (FIRING, RESOLVED):
                self._note(notes, states[t.rule][_key(t)], now)
        self._persist(transitions, notes)
        self._notify(states, notes, now)
        self._persist([], {})
        for rule in self.rules:
            for state_name in (*ACTIVE, RESOLVED):
                n = sum(1 for s in states.get(rule.name, {}).values() if s.state == state_name)
                self._m_active.labels(rule.name, state_name).set(n)
        return transitions

    def _error(self, what: str) -> None:
        self.stats[f"errors_{what}"] += 1
        self._m_errors.labels(what).inc()

    def _note(
        self, notes: dict[tuple[str, str], Notification], state: AlertState, now: float
    ) -> Notification:
        key = (state.rule, state.key)
        if key in notes:
            return notes[key]
        rule = self._by_name[state.rule]
        note = notification(rule, state, now, self.expires_after_s)
        if state.state == FIRING:
            # Receivers expire alerts by their own clock; on the data clock `now` may be far
            # behind it (an old capture replayed), and the alert would arrive already ended.
            note.ends_at = max(now, time.time()) + self.expires_after_s
        if state.state == RESOLVED:
            start = (state.fired_at or state.since) - rule.window
            end = state.resolved_at or now
        else:
            _, start_i, end_i = window_bounds(rule, now)
            start, end = float(start_i), float(end_i)
        if self.query_url:
            sql = self.store.messages_sql(rule, state.labels, start, end)
            note.generator_url = f"{self.query_url}/?query={urllib.parse.quote(sql)}"
        try:
            note.evidence = self.store.evidence(rule, state.labels, start, end, self.evidence_top)
        except Exception:
            log.exception("alerts: evidence for %s %s failed", state.rule, state.key)
            self._error("evidence")
        notes[key] = note
        return note

    def _notify(
        self,
        states: dict[str, dict[str, AlertState]],
        notes: dict[tuple[str, str], Notification],
        now: float,
    ) -> None:
        for notifier in self.notifiers:
            due = [
                s
                for group in states.values()
                for s in group.values()
                if is_due(s, notifier.name, notifier.resend_s, now)
            ]
            if not due:
                continue
            batch = [self._note(notes, s, now) for s in due]
            try:
                notifier.send(batch)
            except NotifyError as exc:
                log.warning("alerts: %s: %d alerts not delivered: %s", notifier.name, len(due), exc)
                self.stats[f"notify_failed_{notifier.name}"] += 1
                self._m_notify.labels(notifier.name, "failed").inc()
                continue
            except Exception:
                log.exception("alerts: %s failed", notifier.name)
                self.stats[f"notify_failed_{notifier.name}"] += 1
                self._m_notify.labels(notifier.name, "failed").inc()
                continue
            self.stats[f"notify_sent_{notifier.name}"] += len(due)
            self._m_notify.labels(notifier.name, "sent").inc()
            for s in due:
                s.sent[notifier.name] = now
                self._unsaved[(s.rule, s.key)] = s

    def _persist(
        self, transitions: list[Transition], notes: dict[tuple[str, str], Notification]
    ) -> None:
        if transitions:
            try:
                self.store.append_history(
                    transitions,
                    {r.name: r.severity for r in self.rules},
                    {k: n.annotations.get("summary", "") for k, n in notes.items()},
                    {k: n.evidence for k, n in notes.items()},
                )
            except Exception:
                log.exception("alerts: writing %d transitions failed", len(transitions))
                self._error("history")
        if self._unsaved:
            try:
                self.store.save_states(list(self._unsaved.values()))
                self._unsaved.clear()
            except Exception:
                log.exception("alerts: saving %d alert states failed", len(self._unsaved))
                self._error("state")

    # -- inspection -----------------------------------------------------------------------

    def preview(self, now: float | None = None) -> dict[str, list[GroupView]]:
        """Per rule: the current groups with value, baseline, limit and whether the
        condition holds, plus the stored state; changes nothing."""
        now = time.time() if now is None else now
        stored: dict[tuple[str, str], AlertState] = {
            (s.rule, s.key): s for s in self.store.load_states()
        }
        out: dict[str, list[GroupView]] = {}
        for rule in self.rules:
            counts: dict[str, GroupCount] = self.store.counts(rule, now)
            keys = set(counts) | {k for (r, k), s in stored.items() if r == rule.name}
            views = []
            for key in sorted(keys):
                c = counts.get(key)
                s = stored.get((rule.name, key))
                labels = c.labels if c else s.labels  # type: ignore[union-attr]
                value = c.value if c else 0.0
                baseline = c.baseline if c else None
                limit = rule.limit(baseline)
                views.append(
                    GroupView(
                        labels,
                        value,
                        baseline,
                        limit,
                        value >= limit,
                        s.state if s else "inactive",
                        s.since if s else None,
                    )
                )
            out[rule.name] = views
        return out

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Evaluate every `interval_s` until `stop_event` is set."""
        interval = self.config.interval_s
        while not stop_event.is_set():
            started = time.monotonic()
            try:
                self.evaluate_once()
            except Exception:  # a bug must not end alerting; it is logged and counted
                log.exception("alerts: evaluation failed")
                self._error("cycle")
            stop_event.wait(max(0.0, interval - (time.monotonic() - started)))


def _key(t: Transition) -> str:
    return group_key(t.labels)
