"""The records built per copy and per message (`ObservationRow`, `MessageRecord`) and
`Observation` are plain compiled classes, not dataclasses: they must still behave like the
dataclasses they replaced, built from interpreted code as well as from the engine."""

from __future__ import annotations

import pickle

import pytest

from consumers.observation import Observation
from consumers.records import MessageRecord, ObservationRow, field_names


def _row(**kw: object) -> ObservationRow:
    return ObservationRow(1, "10.0.0.1", 5060, "10.0.0.2", 5062, "in", "f#1", **kw)  # type: ignore[arg-type]


def _msg(**kw: object) -> MessageRecord:
    args = dict(
        id="m1", event_time_us=5, node="n", capture_id=7, call_id="c@x", is_request=True,
        method="INVITE", status=0, reason_phrase="", cseq=1, from_tag="f", to_tag="",
        direction="caller_to_callee", dialog_state="pre", origin="endpoint",
        retransmission=False, transport="udp", src_ip="10.0.0.1", src_port=5060,
        dst_ip="10.0.0.2", dst_port=5062, user_agent="ua", allow=["ACK", "INVITE"],
        supported=None, require=[], session_expires=1800, refresher="uac", min_se=None,
        has_sdp=True, sdp_role="offer", malformed=["x"], correlation_id="", x_cid="",
        observations=[_row(), _row(copies=2)], raw=b"INVITE \xff",
    )  # fmt: skip
    args.update(kw)
    return MessageRecord(**args)  # type: ignore[arg-type]


def test_built_from_interpreted_code_every_field_is_set() -> None:
    # mypyc leaves tp_init empty on a compiled class closed to subclasses: built from
    # interpreted code, such a record would have no attributes at all.
    m = _msg()
    assert [getattr(m, n) for n in field_names(m)][:3] == ["m1", 5, "n"]
    assert m.observations[1].copies == 2 and _row().copies == 1
    o = Observation(1, "a", 1, "b", 2, "udp", 0, "n", "", "r", b"x")
    assert (o.ts_us, o.payload, o.src, o.dst) == (1, b"x", ("a", 1), ("b", 2))


def test_equality_replace_and_repr_as_a_dataclass() -> None:
    m = _msg()
    assert m == _msg() and m != _msg(cseq=2) and m.replace() == m
    changed = m.replace(id="m2", observations=[])
    assert (changed.id, changed.observations, m.id) == ("m2", [], "m1")
    with pytest.raises(TypeError, match="no field 'nope'"):
        m.replace(nope=1)
    assert repr(_row()).startswith("ObservationRow(ts_us=1, src_ip='10.0.0.1'")
    o = Observation(1, "a", 1, "b", 2, "udp", 0, "n", "", "r", b"x")
    assert o.replace(ref="s") == Observation(1, "a", 1, "b", 2, "udp", 0, "n", "", "s", b"x")
    with pytest.raises(TypeError):
        hash(m)


def test_to_dict_is_the_dataclass_form() -> None:
    m = _msg()
    d = m.to_dict()
    assert list(d)[:2] == ["id", "event_time_us"] and list(d)[-2:] == ["raw", "kind"]
    assert d["kind"] == "message" and d["raw"] == "INVITE \ufffd"
    assert d["observations"][1] == {
        "ts_us": 1, "src_ip": "10.0.0.1", "src_port": 5060, "dst_ip": "10.0.0.2",
        "dst_port": 5062, "hop": "in", "ref": "f#1", "copies": 2,
    }  # fmt: skip
    # lists are copies, as asdict makes them
    assert d["allow"] == m.allow and d["allow"] is not m.allow
    assert d["supported"] is None


def test_pickle_round_trip() -> None:
    m = _msg()
    assert pickle.loads(pickle.dumps(m)) == m
    assert field_names(MessageRecord) == field_names(m) and len(field_names(m)) == 35
