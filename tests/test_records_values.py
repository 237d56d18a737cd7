"""The session-change, dialog, anomaly and leg records, and the leg correlator's config and
stats, are `consumers.value.Value`s, not dataclasses: they keep a dataclass's construction
by keyword or position, defaults, equality, `replace` and `asdict`-like `to_dict`, and they
pickle (compiled ones by the compiled pickling, interpreted ones by their constructor)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest
from capture_build import make_calls, write_capture

from consumers.analyze import analyze
from consumers.legs.correlator import LegCorrelatorConfig, LegCorrelatorStats
from consumers.records import (
    AnomalyRecord,
    DialogRecord,
    LegRecord,
    SessionChangeRecord,
    field_names,
)


@dataclasses.dataclass
class _Nested:
    a: int
    b: list[str]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path = tmp_path_factory.mktemp("values") / "calls.pcap"
    write_capture(make_calls(40, 5), path)
    result = analyze(path)
    return [*result.dialogs, *result.session_changes, *result.anomalies]


def test_fields_are_the_attributes_in_order(records: list[Any]) -> None:
    for cls in (SessionChangeRecord, DialogRecord, AnomalyRecord):
        rec = next(r for r in records if type(r) is cls)
        assert rec.to_tuple() == tuple(getattr(rec, n) for n in field_names(rec))
        # positional construction takes FIELDS in order
        assert cls(*rec.to_tuple()) == rec
    assert tuple(inspect.signature(LegRecord).parameters) == LegRecord.FIELDS


def test_evidence_and_fields_default_to_new_containers(records: list[Any]) -> None:
    anomaly = next(r for r in records if type(r) is AnomalyRecord)
    values = dict(zip(AnomalyRecord.FIELDS, anomaly.to_tuple(), strict=True))
    del values["evidence"], values["fields"]
    a, b = AnomalyRecord(**values), AnomalyRecord(**values)
    assert a.evidence == [] and a.fields == {} and a.evidence is not b.evidence
    assert a.fields is not b.fields


def test_equality_replace_and_repr(records: list[Any]) -> None:
    dialog = next(r for r in records if type(r) is DialogRecord)
    assert dialog.replace() == dialog and dialog.replace(reinvites=99) != dialog
    assert dialog.replace(reinvites=99).reinvites == 99 and dialog.reinvites != 99
    assert repr(dialog).startswith(f"DialogRecord(id={dialog.id!r}, node=")
    with pytest.raises(TypeError, match="no field 'nope'"):
        dialog.replace(nope=1)
    with pytest.raises(TypeError):
        hash(dialog)


def test_to_dict_copies_as_asdict(records: list[Any]) -> None:
    anomaly = next(r for r in records if type(r) is AnomalyRecord and r.evidence)
    odd = anomaly.replace(fields={"n": _Nested(1, ["x"]), "t": (1, [2]), "l": [{"k": 1}]})
    d = odd.to_dict()
    assert d["kind"] == "anomaly" and list(d)[: len(AnomalyRecord.FIELDS)] == list(
        AnomalyRecord.FIELDS
    )
    assert d["fields"] == {"n": {"a": 1, "b": ["x"]}, "t": (1, [2]), "l": [{"k": 1}]}
    # containers are copies: changing the dict does not change the record
    assert d["evidence"] == odd.evidence and d["evidence"] is not odd.evidence
    assert d["fields"]["l"][0] is not odd.fields["l"][0]
    assert d["fields"]["t"][1] is not odd.fields["t"][1]


def test_records_pickle(records: list[Any]) -> None:
    for rec in records:
        assert pickle.loads(pickle.dumps(rec)) == rec


def _leg() -> LegRecord:
    return LegRecord(
        "l1", "setup", 5, 6, "n", 1, "c@x", "f", "t", True, "caller_to_callee", "confirmed",
        "INVITE", 1, 200, "10.0.0.1", 5060, "10.0.0.2", 5060, "udp", "r1", "ua", "peer", "",
        "", "", "", caller_allow=["INVITE", "UPDATE"], response_ms=1.5,
    )  # fmt: skip


def test_interpreted_values_pickle_by_their_constructor() -> None:
    leg = _leg()
    assert pickle.loads(pickle.dumps(leg)) == leg
    config = LegCorrelatorConfig(window_ms=700, keys=("x_cid",))
    stats = LegCorrelatorStats(records=3, links={"x_cid": 2})
    for value in (config, stats):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value and copy is not value
    assert pickle.loads(pickle.dumps(stats)).links == {"x_cid": 2}


def test_interpreted_values_read_pickles_of_the_slotted_dataclasses_they_were() -> None:
    # What pickle stored for `@dataclass(slots=True)`: the class, then (None, {slot: value}).
    leg = _leg()
    old = LegRecord.__new__(LegRecord)
    old.__setstate__((None, dict(zip(LegRecord.FIELDS, leg.to_tuple(), strict=True))))
    assert old == leg
    stats = LegCorrelatorStats.__new__(LegCorrelatorStats)
    stats.__setstate__((None, dict(zip(LegCorrelatorStats.FIELDS, range(12), strict=True))))
    assert stats.records == 0 and stats.anomalies == 11
