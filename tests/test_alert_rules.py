"""Alert rules: the YAML format, the shipped defaults and clear validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.alerts.rules import (
    DEFAULT_RULES_FILE,
    RulesError,
    load_rules,
    parse_duration,
    parse_rules,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_shipped_defaults_load() -> None:
    rules = {r.name: r for r in load_rules()}
    assert DEFAULT_RULES_FILE.name == "alerts.yaml"
    glare = rules["glare_491_spike"]
    assert glare.kind == "spike"
    assert glare.match.status == [491]
    assert glare.match.method == ["INVITE", "UPDATE"]
    assert glare.window == 300 and glare.baseline_period == 86400
    assert glare.baseline_windows == 288
    assert glare.for_ == 60
    assert glare.group_by == ["node_name", "peer"]
    update = rules["update_405_spike"]
    assert update.match.status == [405] and update.match.method == ["UPDATE"]
    assert any(r.kind == "threshold" for r in rules.values())


def test_full_rule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
rules:
  - name: t1
    kind: threshold
    match: {status: [491, 405], method: update, node_name: sbc1}
    window: 10m
    threshold: 7
    group_by: [user_agent]
    for: 90s
    keep_firing_for: 2m
    severity: critical
    labels: {team: voice}
    annotations: {summary: "{value} on {user_agent}"}
""",
    )
    (rule,) = load_rules(path)
    assert rule.window == 600 and rule.for_ == 90 and rule.keep_firing_for == 120
    assert rule.match.method == ["UPDATE"] and rule.match.node_name == ["sbc1"]
    assert rule.match.retransmissions is False
    assert rule.limit(None) == 7
    assert rule.labels == {"team": "voice"}


def test_spike_limit_is_max_of_min_count_and_factor_times_baseline() -> None:
    (rule,) = parse_rules(
        {"rules": [{"name": "s", "kind": "spike", "match": {"status": 491}, "min_count": 10}]}
    )
    assert rule.factor == 3 and rule.baseline == "median"
    assert rule.limit(0.0) == 10
    assert rule.limit(2.0) == 10
    assert rule.limit(5.0) == 15


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("1.5m", 90.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "", "-1s", True, None])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"name": "a", "kind": "threshold", "match": {}}, "rule 'a': rule: a threshold rule"),
        ({"name": "a", "kind": "spike", "match": {}, "window": "90s"}, "rule 'a': window:"),
        ({"name": "a", "kind": "spike", "match": {}, "window": "5 min"}, "rule 'a': window:"),
        ({"name": "a", "kind": "spike", "match": {}, "for": "soon"}, "rule 'a': for:"),
        ({"name": "a", "kind": "burst", "match": {}}, "rule 'a': kind:"),
        ({"name": "a", "kind": "spike", "match": {"staus": 491}}, "rule 'a': match.staus:"),
        ({"name": "a", "kind": "spike", "match": {"status": 900}}, "rule 'a': match.status.0:"),
        ({"name": "a", "kind": "spike", "match": {"method": "RE-INVITE"}}, "match.method:"),
        ({"name": "a", "kind": "spike", "match": {}, "group_by": ["callid"]}, "group_by.0:"),
        ({"name": "a", "kind": "spike", "match": {}, "baseline_period": "7m"}, "baseline_period"),
        ({"name": "a", "kind": "spike", "match": {}, "threshold": 3}, "threshold"),
        ({"name": "a", "kind": "spike", "match": {}, "labels": {"peer": "x"}}, "labels:"),
        ({"name": "a", "kind": "spike", "match": {}, "min_count": 0}, "rule 'a': min_count:"),
        ({"name": "a b", "kind": "spike", "match": {}}, "rule 'a b': name:"),
        ({"kind": "spike", "match": {}}, "rule #1: name: Field required"),
    ],
)
def test_errors_name_file_rule_and_field(tmp_path: Path, rule: dict, expected: str) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump({"rules": [rule]}))
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message, message


def test_threshold_rule_without_threshold_says_so() -> None:
    with pytest.raises(RulesError, match=r"x: rule 'a': rule: a threshold rule needs `threshold`"):
        parse_rules({"rules": [{"name": "a", "kind": "threshold", "match": {}}]}, "x")


def test_duplicate_names_and_file_shape(tmp_path: Path) -> None:
    rule = {"name": "a", "kind": "spike", "match": {}}
    with pytest.raises(RulesError, match="rule 'a': name: used by an earlier rule"):
        parse_rules({"rules": [rule, rule]})
    with pytest.raises(RulesError, match="expected a mapping with one key"):
        parse_rules([rule])
    with pytest.raises(RulesError, match="must be a list"):
        parse_rules({"rules": {"a": rule}})
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(write(tmp_path, "rules: [\n"))
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")
