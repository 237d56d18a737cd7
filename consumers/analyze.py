"""Offline analysis of one capture file: `hepwatch analyze`.

This module owns running a finished capture through the same sans-I/O engine the Kafka
consumer uses (`consumers.engine.Engine`, default detectors of PROTOCOL.md C.1-C.14), and
the two views of the result: one JSON object, and a text report with a ladder per call.
The input is read by `consumers.capture` (HEP or plain SIP in pcap/pcapng); the end of the
file is the end of the input, so `Engine.flush()` closes every call with the reason
"capture_end" and detectors do not claim something is missing whose deadline the capture
did not reach (C.0 observer model).

When `consumers.legs.correlator` provides `correlate(records)` (the second stage of C.12:
B2BUA/SBC legs linked as in PROTOCOL.md B.13), it runs over the records once the engine has
flushed; the anomalies it returns join the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import not_
from pathlib import Path
from typing import Any

from consumers.capture import DEFAULT_SORT_WINDOW_S, CaptureStats, read_capture
from consumers.detectors.base import Detector
from consumers.engine import Engine, EngineConfig, EngineStats
from consumers.observation import Observation
from consumers.records import (
    AnomalyRecord,
    DialogRecord,
    MessageRecord,
    Record,
    SessionChangeRecord,
)
from consumers.value import Value, plain

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
_DATES: dict[int, str] = {}  # days since the epoch -> "2023-11-14T" (a capture spans a few)


def iso_time(us: int | None) -> str | None:
    """µs since the epoch as ISO 8601 UTC with microseconds: 2023-11-14T22:13:20.000000Z."""
    if us is None:
        return None
    if type(us) is not int:
        return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    days, us = divmod(us, _DAY_US)
    date = _DATES.get(days)
    if date is None:
        date = _DATES[days] = (_EPOCH + timedelta(days=days)).strftime("%Y-%m-%dT")
    s, us = divmod(us, 1_000_000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{date}{h:02d}:{m:02d}:{s:02d}.{us:06d}Z"


def load_correlator() -> Callable[[list[Record]], Any] | None:
    """`consumers.legs.correlator.correlate`, or None while that module does not exist."""
    try:
        module = importlib.import_module("consumers.legs.correlator")
    except ModuleNotFoundError as exc:
        if exc.name in ("consumers.legs", "consumers.legs.correlator"):
            return None
        raise  # the correlator exists but one of its own imports is broken: say so
    fn = getattr(module, "correlate", None)
    return fn if callable(fn) else None


class Analysis:
    """Everything one capture gave: the records in emission order, and the counters."""

    def __init__(
        self,
        source: str,
        records: list[Record],
        capture: CaptureStats,
        engine: EngineStats,
        correlated: int | None = None,  # records the leg correlator added; None: not installed
    ) -> None:
        self.source = source
        self.records = records
        self.capture = capture
        self.engine = engine
        self.correlated = correlated
        self.messages: list[MessageRecord] = []
        self.dialogs: list[DialogRecord] = []
        self.session_changes: list[SessionChangeRecord] = []
        self.anomalies: list[AnomalyRecord] = []
        for r in records:
            if isinstance(r, MessageRecord):
                self.messages.append(r)
            elif isinstance(r, DialogRecord):
                self.dialogs.append(r)
            elif isinstance(r, SessionChangeRecord):
                self.session_changes.append(r)
            elif isinstance(r, AnomalyRecord):
                self.anomalies.append(r)
        self.messages.sort(key=lambda m: m.event_time_us)
        self.dialogs.sort(key=lambda d: (d.start_time_us, d.call_id, d.callee_tag))
        self.session_changes.sort(key=lambda s: s.event_time_us)
        self.anomalies.sort(key=lambda a: a.event_time_us)

    def stats(self) -> dict[str, Any]:
        """Packets read, what was rejected and why, and the engine's counters."""
        out: dict[str, Any] = self.capture.to_dict()
        rejected = dict(out["rejected"])
        for reason, n in self.engine.parse_failures.items():
            key = f"sip_{reason}"
            rejected[key] = rejected.get(key, 0) + n
        out["rejected"] = dict(sorted(rejected.items()))
        out["messages"] = self.engine.messages
        out["late_observations"] = self.engine.late
        out["leg_records"] = sum(1 for r in self.records if r.kind == "leg")
        out["leg_correlation"] = self.correlated is not None
        out["anomalies_by_name"] = dict(sorted(self.engine.anomalies.items()))
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "messages": self.engine.messages,
            "dialogs": _json_records(self.dialogs),
            "session_changes": _json_records(self.session_changes),
            "anomalies": _json_records(self.anomalies),
            "stats": self.stats(),
        }
        return out


def _with_iso(d: dict[str, Any]) -> dict[str, Any]:
    """Add an ISO 8601 twin for every µs time field (event_time_us -> event_time)."""
    for key in [k for k in d if _is_time_key(k)]:
        d[key.removesuffix("_us")] = iso_time(d[key])
    return d


def _is_time_key(key: str) -> bool:
    return key.endswith(("_time_us", "_at_us"))


# --- JSON form of the records -----------------------------------------------------------------
# `_with_iso(r.to_dict())`, without to_dict's copy of containers that hold only atoms (the
# JSON is written at once; nothing mutates them): ~5x faster on a few thousand records. A
# test holds the two equal.

_PLAIN_TO_DICT = (DialogRecord, SessionChangeRecord, AnomalyRecord)
_ATOMS = frozenset({str, int, float, bool, type(None)})


def _json_value(value: Any) -> Any:
    """`value` as to_dict() would copy it, where the copy could differ in JSON (a nested
    Value or dataclass). Lists and str-keyed dicts of atoms are taken as they are."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is list and all(type(v) in _ATOMS for v in value):
        return value
    if kind is dict and all(type(k) is str and type(v) in _ATOMS for k, v in value.items()):
        return value
    return plain(value)


_Shape = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


def _record_shape(cls: type[Value]) -> _Shape:
    """The field names, and (µs key, ISO key) pairs."""
    names = cls.FIELDS
    times = tuple((k, k.removesuffix("_us")) for k in names if _is_time_key(k))
    return names, times


def _json_records(records: list[Any]) -> list[dict[str, Any]]:
    """Every record as `_with_iso(r.to_dict())` gives it."""
    shapes: dict[type, _Shape] = {}
    out = []
    for r in records:
        cls = type(r)
        if cls not in _PLAIN_TO_DICT:
            out.append(_with_iso(r.to_dict()))
            continue
        shape = shapes.get(cls)
        if shape is None:
            shape = shapes[cls] = _record_shape(cls)
        names, times = shape
        values = r.to_tuple()
        d = dict(zip(names, values, strict=True))
        # the fields whose value is not a str/int/float/bool/None, found without a Python loop
        for key in compress(names, map(not_, map(_ATOMS.__contains__, map(type, values)))):
            d[key] = _json_value(d[key])
        d["kind"] = r.kind
        for key, iso_key in times:
            d[iso_key] = iso_time(d[key])
        out.append(d)
    return out


BATCH = 256  # observations per Engine.feed_many call (same records as one at a time)


def run_engine(
    observations: Iterable[Observation], engine: Engine, sink: Callable[[list[Record]], None]
) -> None:
    """Feed every observation, then end the input; `sink` gets each batch of records."""
    batch: list[Observation] = []
    for obs in observations:
        batch.append(obs)
        if len(batch) == BATCH:
            out = engine.feed_many(batch)
            batch = []
            if out:
                sink(out)
    if batch:
        sink(engine.feed_many(batch))
    sink(engine.flush())


def analyze(
    path: str | Path,
    *,
    detectors: list[Detector] | None = None,
    config: EngineConfig | None = None,
    sort_window_s: float = DEFAULT_SORT_WINDOW_S,
    on_records: Callable[[list[Record]], None] | None = None,
    correlate: bool = True,
) -> Analysis:
    """Analyze a pcap/pcapng file. `detectors` defaults to every registered detector;
    `on_records` also gets every batch as it is produced (a `Sink.write`, for instance).
    Raises `consumers.capture.CaptureError` for a file that is not a readable capture."""
    reader = read_capture(path, sort_window_s=sort_window_s)
    engine = Engine(config or EngineConfig(), detectors=detectors)
    records: list[Record] = []

    def take(batch: list[Record]) -> None:
        records.extend(batch)
        if on_records is not None:
            on_records(batch)

    run_engine(reader, engine, take)
    correlated = None
    correlator = load_correlator() if correlate else None
    if correlator is not None:
        extra = list(correlator(records) or [])
        correlated = len(extra)
        take(extra)
    return Analysis(str(path), records, reader.stats, engine.stats, correlated)


# --- text report ---------------------------------------------------------------------------------


def report_lines(analysis: Analysis, *, ladders: bool = True) -> Iterator[str]:
    """The human report: per call its dialogs, session changes, anomalies and ladder."""
    from consumers.ladder import render

    calls: dict[str, list[DialogRecord]] = {}
    for d in analysis.dialogs:
        calls.setdefault(d.call_id, []).append(d)
    msgs: dict[str, list[MessageRecord]] = {}
    for m in analysis.messages:
        msgs.setdefault(m.call_id, []).append(m)
        calls.setdefault(m.call_id, [])
    changes: dict[str, list[SessionChangeRecord]] = {}
    for s in analysis.session_changes:
        changes.setdefault(s.call_id, []).append(s)
    anomalies: dict[str, list[AnomalyRecord]] = {}
    for a in analysis.anomalies:
        anomalies.setdefault(a.call_id, []).append(a)
        calls.setdefault(a.call_id, [])

    st = analysis.stats()
    yield (
        f"{analysis.source}: {st['packets']} packets, {st['observations']} SIP copies, "
        f"{st['messages']} messages, {len(calls)} calls, {len(analysis.dialogs)} dialogs, "
        f"{len(analysis.session_changes)} session changes, {len(analysis.anomalies)} anomalies"
    )
    if st["rejected"]:
        yield "rejected: " + ", ".join(f"{k} {v}" for k, v in st["rejected"].items())
    if st["truncated"]:
        yield "the capture file ends inside a packet record (truncated)"

    def start(call_id: str) -> int:
        times = [d.start_time_us for d in calls[call_id][:1]]
        times += [m.event_time_us for m in msgs.get(call_id, [])[:1]]
        times += [a.event_time_us for a in anomalies.get(call_id, [])[:1]]
        return min(times, default=0)

    for n, call_id in enumerate(sorted(calls, key=start), 1):
        cmsgs = msgs.get(call_id, [])
        t0 = start(call_id)
        yield ""
        yield f"== Call {n}  Call-ID {call_id}  {iso_time(t0)}"
        for d in calls[call_id]:
            yield from _dialog_lines(d, t0)
        for s in changes.get(call_id, []):
            yield "   " + _change_line(s, t0)
        for a in anomalies.get(call_id, []):
            yield "   " + _anomaly_line(a, t0)
        if ladders and cmsgs:
            yield ""
            yield from render(cmsgs, anomalies.get(call_id, []), t0_us=t0)


def _dialog_lines(d: DialogRecord, t0: int) -> Iterator[str]:
    tags = f"{d.caller_tag or '-'}/{d.callee_tag or '-'}"
    duration = (d.end_time_us - d.start_time_us) / 1_000_000
    yield (
        f"   dialog {tags}  state {d.state}  end {d.end_reason}  initial {d.initial_status or '-'}"
        f"  {duration:.3f} s"
    )
    caller = f"{d.caller_ip or '?'}" + (f" ({d.caller_ua})" if d.caller_ua else "")
    callee = f"{d.callee_ip or '?'}" + (f" ({d.callee_ua})" if d.callee_ua else "")
    yield (
        f"      {caller} -> {callee}  re-INVITEs {d.reinvites}  UPDATEs {d.updates}"
        f"  PRACKs {d.pracks}  anomalies {d.anomalies}"
        + ("" if d.record_routed is not False else "  (not record-routed)")
    )


def _offset(us: int, t0: int) -> str:
    return f"+{(us - t0) / 1_000_000:.3f}".rjust(10)


def _change_line(s: SessionChangeRecord, t0: int) -> str:
    took = f" in {s.time_to_final_ms:.0f} ms" if s.time_to_final_ms is not None else ""
    return (
        f"change  {_offset(s.event_time_us, t0)}  {s.method} CSeq {s.cseq} {s.direction}"
        f"  intent {s.intent or '-'}  -> {s.status or 'no final'} {s.status_class}{took}"
    )


def _anomaly_line(a: AnomalyRecord, t0: int) -> str:
    what = f"{a.method} {a.status}" if a.status else a.method
    evidence = ", ".join(a.evidence[:4]) + (" ..." if len(a.evidence) > 4 else "")
    return (
        f"anomaly {_offset(a.event_time_us, t0)}  !! {a.anomaly} [{a.severity}] {a.family}"
        f"  {a.direction}  {what} CSeq {a.cseq}  state {a.dialog_state}  evidence {evidence}"
    )
