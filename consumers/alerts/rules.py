"""Alert rules: the YAML file format, its validation and the parsed `Rule` objects.

A rules file holds `rules:`, a list of mappings. Two kinds exist:

- `threshold`: fires when the count of matching messages in the last `window` is at least
  `threshold`.
- `spike`: fires when that count is at least max(`min_count`, `factor` x baseline), the
  baseline being the `median`, `mean` or `p90` of the counts of the same-size windows over
  `baseline_period` before the current window (windows without messages count as 0).

Counts come from `sip_minute_counts`, so windows are whole minutes. `match` filters on its
columns (status, method, node_name, user_agent); `group_by` splits the count per
node_name, peer and/or user_agent. A condition must hold for `for` before the alert fires
(pending until then) and an alert resolves when it stops holding, unless
`keep_firing_for` keeps it firing a while longer. Durations are seconds or strings such
as `90s`, `5m`, `1h`, `1d`.

Errors name the file, the rule and the field: `alerts.yaml: rule 'x': window: ...`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

GROUP_COLUMNS = ("node_name", "peer", "user_agent")
DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "alerts.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names file, rule and field."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like `30s`, `5m`, `1h`, `1d`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 5m, 1h, 1d)")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _as_list(value: Any) -> Any:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class Match(BaseModel):
    """Which rows of sip_minute_counts count; every list is an IN, absent or empty is any."""

    model_config = ConfigDict(extra="forbid")

    status: Annotated[list[Annotated[int, Field(ge=0, le=699)]], BeforeValidator(_as_list)] = []
    method: Annotated[list[str], BeforeValidator(_as_list)] = []
    node_name: Annotated[list[str], BeforeValidator(_as_list)] = []
    user_agent: Annotated[list[str], BeforeValidator(_as_list)] = []
    # A retransmitted 491 is one refusal: by default only first transmissions count.
    retransmissions: bool = False

    @field_validator("method")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        for method in value:
            if not method or not method.isalpha():
                raise ValueError(f"{method!r} is not a SIP method name")
        return [m.upper() for m in value]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str
    kind: Literal["threshold", "spike"]
    match: Match
    window: Duration = 300.0
    group_by: list[Literal["node_name", "peer", "user_agent"]] = []
    threshold: int | None = Field(None, ge=1)
    baseline: Literal["median", "mean", "p90"] = "median"
    baseline_period: Duration = 86400.0
    factor: float = Field(3.0, gt=0)
    min_count: int = Field(1, ge=1)
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: str = "warning"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: use letters, digits, _ . : - (starting with a letter)")
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: float) -> float:
        if value < 60 or value % 60:
            raise ValueError("must be a whole number of minutes (counts are kept per minute)")
        return value

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a column appears twice")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL.match(key):
                raise ValueError(f"label name {key!r}: use letters, digits and _")
            if key in ("alertname", "severity", *GROUP_COLUMNS):
                raise ValueError(f"label {key!r} is set by hepwatch")
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> Rule:
        if self.kind == "threshold":
            if self.threshold is None:
                raise ValueError("a threshold rule needs `threshold` (a count >= 1)")
        else:
            if self.threshold is not None:
                raise ValueError("`threshold` belongs to threshold rules; spikes use min_count")
            if self.baseline_period < self.window or self.baseline_period % self.window:
                raise ValueError("baseline_period must be a whole number of windows")
        return self

    @property
    def baseline_windows(self) -> int:
        return int(self.baseline_period // self.window) if self.kind == "spike" else 0

    def limit(self, baseline: float | None) -> float:
        """The count at or above which the condition holds."""
        if self.kind == "threshold":
            assert self.threshold is not None
            return float(self.threshold)
        return max(float(self.min_count), self.factor * (baseline or 0.0))

    def describe(self) -> str:
        parts = [f"{k}={','.join(map(str, v))}" for k, v in self._match_items()]
        what = " ".join(parts) or "all messages"
        by = f" by {','.join(self.group_by)}" if self.group_by else ""
        span = _fmt_duration(self.window)
        if self.kind == "threshold":
            cond = f">= {self.threshold}"
        else:
            cond = (
                f">= max({self.min_count}, {self.factor:g} x {self.baseline} of "
                f"{_fmt_duration(self.window)} windows over {_fmt_duration(self.baseline_period)})"
            )
        extra = f", for {_fmt_duration(self.for_)}" if self.for_ else ""
        return f"count({what}) in {span}{by} {cond}{extra}"

    def _match_items(self) -> list[tuple[str, list[Any]]]:
        m = self.match
        items = [("status", m.status), ("method", m.method), ("node_name", m.node_name)]
        items.append(("user_agent", m.user_agent))
        return [(k, v) for k, v in items if v]


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _where(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "for_") or "rule"
        if err["loc"] and err["loc"][-1] == "for_":
            loc = ".".join([*(str(p) for p in err["loc"][:-1]), "for"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def parse_rules(data: Any, source: str = "<rules>") -> list[Rule]:
    """Rules from parsed YAML (a mapping with `rules:`); RulesError names what is wrong."""
    if not isinstance(data, dict) or set(data) - {"rules"}:
        raise RulesError(f"{source}: expected a mapping with one key, `rules:` (a list)")
    items = data.get("rules")
    if not isinstance(items, list):
        raise RulesError(f"{source}: `rules:` must be a list of rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        label = f"rule #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label = f"rule {item['name']!r}"
        if not isinstance(item, dict):
            raise RulesError(f"{source}: {label}: expected a mapping")
        try:
            rule = Rule.model_validate(item)
        except ValidationError as exc:
            raise RulesError(f"{source}: {label}: {_where(exc)}") from None
        if rule.name in seen:
            raise RulesError(f"{source}: {label}: name: used by an earlier rule")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_rules(path: Path | None = None) -> list[Rule]:
    """Rules from a YAML file; None reads the shipped defaults (deploy/alerts.yaml)."""
    path = path or DEFAULT_RULES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(data, str(path))
