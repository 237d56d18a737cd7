"""The wire form of a `LegRecord` between the two C.12 stages, and its partitioning key.

The first stage (per-partition engines, `hepwatch consume`) publishes every leg fact to the
legs topic; the second stage (`consumers.legs.stage`) decodes it and feeds a `LegCorrelator`.

Encoding: one compact JSON object per record, `{"v": 1, ...fields}`; fields that hold their
default (the setup-, request- or final-only ones a fact does not use) are left out, so a
request fact is about half the size of the full record. `decode` checks the version, the
field names and each field's type, and raises `LegCodecError` with a short reason (the stage
counts rejections by reason), so a foreign or damaged message is refused, never half-read.

Stream marks. Beside the facts, each first-stage partition engine publishes a `StreamMark`
to every legs partition: `{"v": 1, "mark": {"topic", "partition", "partitions", "until_us"}}`,
"HEP partition `partition` (of `partitions`) of `topic` has processed everything captured up
to `until_us`". It is produced after the facts it covers, by the same idempotent producer, so
a legs partition that reads a mark has read every fact that engine published before it. The
second stage moves its stream time to the lowest mark of all HEP partitions
(`consumers.legs.partition`), so a HEP partition that lags (its consumer died and the group
has not yet moved it) holds decisions back instead of letting another partition's facts or
the wall clock decide that a relay is absent.

Key (PROTOCOL.md B.13; DESIGN "Consumers": a second keyed stage). The legs that must meet
must land in one partition, but each leg has to choose its key alone, from its own keys:

1. the HEP correlation id (chunk 0x0011) when the capture agent sets it, and it is not just
   the leg's own Call-ID: equal on both legs by construction;
2. else X-CID (on a B-leg: the A-leg's Call-ID), else the leg's own Call-ID. An A-leg has no
   X-CID and is keyed by its Call-ID, which is exactly the X-CID of its B-legs.

The tracker keeps a call's first X-CID and correlation id, so every fact of a leg has the
same key. Limits: legs linked only by Session-ID, icid or the heuristic (no common HEP
correlation id, no X-CID) meet only when their keys hash to the same partition; and a HEP
correlation id set on one leg but not the other splits them. A legs topic with one partition
(`consumer.legs_partitions = 1`) lets every link method work, at the price of one
correlator for the whole system (leg facts are few: one per call plus two per re-INVITE or
UPDATE).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.records import LegRecord

VERSION = 1


class LegCodecError(ValueError):
    """A legs-topic message that is not a leg record of this version; `reason` is short."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


_CHECKS: dict[str, Callable[[object], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "bool": lambda v: isinstance(v, bool),
    "int | None": lambda v: v is None or _is_int(v),
    "str | None": lambda v: v is None or isinstance(v, str),
    "float | None": lambda v: (
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    ),
    "list[str] | None": lambda v: v is None or _is_str_list(v),
}

# The constructor's parameters, annotations as written (the class is interpreted on purpose).
_PARAMS = list(inspect.signature(LegRecord).parameters.values())
_NAMES = tuple(p.name for p in _PARAMS)
_CHECK = {p.name: _CHECKS[str(p.annotation)] for p in _PARAMS}
_REQUIRED = frozenset(p.name for p in _PARAMS if p.default is inspect.Parameter.empty)
_DEFAULTS: dict[str, Any] = {
    p.name: p.default for p in _PARAMS if p.default is not inspect.Parameter.empty
}
assert _NAMES == LegRecord.FIELDS, "LegRecord's constructor and FIELDS disagree"


@dataclass(frozen=True, slots=True)
class StreamMark:
    """HEP partition `partition` of `topic` (`partitions` in all) is done up to `until_us`."""

    topic: str
    partition: int
    partitions: int
    until_us: int

    @property
    def source(self) -> tuple[str, int]:
        return (self.topic, self.partition)


def encode_mark(mark: StreamMark) -> bytes:
    body = {
        "topic": mark.topic,
        "partition": mark.partition,
        "partitions": mark.partitions,
        "until_us": mark.until_us,
    }
    return json.dumps({"v": VERSION, "mark": body}, separators=(",", ":")).encode()


def _decode_mark(body: object) -> StreamMark:
    if not isinstance(body, dict) or body.keys() != {
        "topic",
        "partition",
        "partitions",
        "until_us",
    }:
        raise LegCodecError("bad_mark", "fields")
    topic, partition, partitions, until = (
        body["topic"],
        body["partition"],
        body["partitions"],
        body["until_us"],
    )
    if not isinstance(topic, str) or not all(_is_int(v) for v in (partition, partitions, until)):
        raise LegCodecError("bad_mark", "types")
    if not 0 <= partition < partitions:
        raise LegCodecError("bad_mark", f"partition {partition} of {partitions}")
    return StreamMark(topic, partition, partitions, until)


def encode(rec: LegRecord) -> bytes:
    out: dict[str, Any] = {"v": VERSION}
    for name, value in zip(_NAMES, rec.to_tuple(), strict=True):
        if name in _DEFAULTS and value == _DEFAULTS[name]:
            continue
        out[name] = value
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes | None) -> LegRecord | StreamMark:
    if not data:
        raise LegCodecError("empty")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LegCodecError("not_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise LegCodecError("not_object")
    version = obj.pop("v", None)
    if version != VERSION:
        raise LegCodecError("version", repr(version))
    if "mark" in obj:
        if len(obj) != 1:
            raise LegCodecError("bad_mark", "extra fields")
        return _decode_mark(obj["mark"])
    unknown = obj.keys() - _CHECK.keys()
    if unknown:
        raise LegCodecError("unknown_field", ",".join(sorted(unknown)))
    missing = _REQUIRED - obj.keys()
    if missing:
        raise LegCodecError("missing_field", ",".join(sorted(missing)))
    for name, value in obj.items():
        if not _CHECK[name](value):
            raise LegCodecError("bad_type", name)
    return LegRecord(**obj)


def partition_key(rec: LegRecord) -> str:
    """The key all legs of one call share (see the module docstring for its limits)."""
    hep = rec.hep_correlation_id
    if hep and hep != rec.call_id:
        return f"h:{hep}"
    if rec.x_cid and rec.x_cid != rec.call_id:
        return f"c:{rec.x_cid}"
    return f"c:{rec.call_id}"


__all__ = [
    "VERSION",
    "LegCodecError",
    "StreamMark",
    "decode",
    "encode",
    "encode_mark",
    "partition_key",
]
