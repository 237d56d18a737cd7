"""Records to one ClickHouse Native block through the C encoder (`_native.c`), when built.

The sink's fast path: instead of building a Python list per column and letting
clickhouse-connect serialise them, `NativeEncoder.encode(records, partitions, offsets)`
reads the record attributes in C and returns the bytes of one Native block, sent with
`client.raw_insert(..., fmt="Native")`. Where a column's value comes from is declared in
`rows.TableSpec.sources` (the same mapping as the list builders, which stay the reference
and the fallback); how it is encoded follows from the table's described types:

- LowCardinality(String) and Enum8 go as String, IPv6 as FixedString(16) (16-byte values
  from the sink's `AddressPacker` cache), Map(LowCardinality(String), String) as
  Map(String, String): ClickHouse converts them on insert, at no measurable cost.
- DateTime64 must have precision 6 (values are µs ticks); any type this module does not
  know makes `plan_for` raise NativeUnsupported, and the sink uses the list path.

`HAVE_NATIVE` is False when the extension was not built (setup.py marks it optional).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.clickhouse.rows import SOURCE_COLUMNS, AddressPacker, TableSpec, map_field

try:
    from consumers.clickhouse import _native
except ImportError:  # no compiler at install time: the sink builds columns in Python
    _native = None  # type: ignore[assignment]

HAVE_NATIVE = _native is not None


class NativeUnsupported(ValueError):
    """A column type or source the C encoder does not handle."""


_INT_CODES = {
    "UInt8": "CODE_U8", "UInt16": "CODE_U16", "UInt32": "CODE_U32", "UInt64": "CODE_U64",
    "Int8": "CODE_I8", "Int16": "CODE_I16", "Int32": "CODE_I32", "Int64": "CODE_I64",
    "Float32": "CODE_F32", "Float64": "CODE_F64",
}  # fmt: skip
_DT64_US = re.compile(r"DateTime64\(6(, *'[^']*')?\)")
_ENUM = re.compile(r"Enum(8|16)\(.*\)")


def _unwrap(t: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    return t[len(prefix) : -1] if t.startswith(prefix) and t.endswith(")") else None


def element_code(t: str) -> tuple[int, str]:
    """(code, Native type sent) for a non-Nullable, non-Array element type."""
    n = _native
    inner = _unwrap(t, "LowCardinality")
    if inner is not None:
        t = inner
    if t == "String" or _ENUM.fullmatch(t):
        return n.CODE_STR, "String"
    if t == "Bool":
        return n.CODE_BOOL, "Bool"
    if t == "IPv6":
        return n.CODE_IP, "FixedString(16)"
    if t in _INT_CODES:
        return getattr(n, _INT_CODES[t]), t
    if _DT64_US.fullmatch(t):
        return n.CODE_I64, t
    m = _unwrap(t, "Map")
    if m is not None:
        k, _, v = m.partition(", ")
        if element_code(k)[0] == n.CODE_STR and element_code(v)[0] == n.CODE_STR:
            return n.CODE_MAP, "Map(String, String)"
    raise NativeUnsupported(f"type {t} is not handled by the Native encoder")


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    name: str
    source: str  # see TableSpec.sources
    plan: tuple[Any, ...]  # the tuple _native.encode takes, values filled per call


def plan_for(spec: TableSpec, types: Sequence[str], ip: AddressPacker) -> list[ColumnPlan]:
    """How each of spec.all_columns is encoded, given the table's described types."""
    if _native is None:
        raise NativeUnsupported("the C encoder is not built")
    if not isinstance(ip, AddressPacker):
        raise NativeUnsupported("addresses are not packed")
    n = _native
    sources = (*spec.sources, "@partition", "@offset")
    if len(sources) != len(spec.all_columns) or len(types) != len(sources):
        raise NativeUnsupported(f"{spec.table}: sources out of step with the columns")
    plans: list[ColumnPlan] = []
    for name, source, described in zip(spec.all_columns, sources, types, strict=True):
        t, flags = described, 0
        inner = _unwrap(t, "Nullable")
        if inner is not None:
            t, flags = inner, flags | n.F_NULLABLE
        inner = _unwrap(t, "Array")
        if inner is not None:
            t, flags = inner, flags | n.F_ARRAY
        code, sent = element_code(t)
        if flags & n.F_ARRAY:
            if code == n.CODE_MAP or _unwrap(t, "Nullable") is not None:
                raise NativeUnsupported(f"{spec.table}.{name}: {described}")
            sent = f"Array({sent})"
        elif flags & n.F_NULLABLE:
            sent = f"Nullable({sent})"
        src, attr, sub = n.SRC_ATTR, source, None
        if source.startswith("@") or source.startswith("map:"):
            src, attr = n.SRC_LIST, None
        elif source.startswith("!"):
            attr = source[1:]
            flags |= n.F_NOT_NONE
            if code != n.CODE_BOOL or flags & (n.F_ARRAY | n.F_NULLABLE):
                raise NativeUnsupported(f"{spec.table}.{name}: {source} needs a Bool column")
        elif source.endswith("?"):
            attr = source[:-1]
            flags |= n.F_NONE_EMPTY
        elif "." in source:
            src, (attr, sub) = n.SRC_OBS, source.split(".", 1)
            if not flags & n.F_ARRAY:
                raise NativeUnsupported(f"{spec.table}.{name}: {source} needs an Array column")
        ipc = (ip._cache, ip._miss) if code == n.CODE_IP else (None, None)
        plan = (name.encode(), sent.encode(), src, attr, sub, None, code, flags, *ipc)
        plans.append(ColumnPlan(name, source, plan))
    return plans


class NativeEncoder:
    """One table's records to Native blocks (plans made once from the described types)."""

    def __init__(self, spec: TableSpec, types: Sequence[str], ip: AddressPacker) -> None:
        self.spec = spec
        self.plans = plan_for(spec, types, ip)

    def encode(self, records: list[Any], partitions: list[int], offsets: list[int]) -> bytes:
        plans: list[tuple[Any, ...]] = []
        for p in self.plans:
            if p.source == "@partition":
                values: list[Any] | None = partitions
            elif p.source == "@offset":
                values = offsets
            elif p.source.startswith("map:"):
                attr = p.source[4:]
                values = [map_field(getattr(r, attr)) for r in records]
            else:
                plans.append(p.plan)
                continue
            plans.append((*p.plan[:5], values, *p.plan[6:]))
        return _native.encode(records, tuple(plans))


__all__ = [
    "HAVE_NATIVE",
    "SOURCE_COLUMNS",
    "ColumnPlan",
    "NativeEncoder",
    "NativeUnsupported",
    "element_code",
    "plan_for",
]
