"""`Value`: the base of the classes that behave like dataclasses without being dataclasses:
the SIP model's values (CSeq, Uri, Sdp, ...), the output records, the engine's and the
capture's configs and stats. Those not compiled (the leg record, the leg correlator's
config and stats) derive from `InterpretedValue`. `plain` copies a field as
`dataclasses.asdict` would.

Each subclass writes its own `__init__` and names its fields in `FIELDS`; equality (same
class, same field values), `repr`, `replace` and `to_tuple` come from here, as a dataclass
would give them. A class on the hot path overrides `to_tuple` with its fields written out
(one attribute read each, no name lookups).

They are not dataclasses because a compiled dataclass costs about a millisecond at import
(the decorator writes and compiles its methods), which is a tenth of the start-up of
`hepwatch analyze` over the SIP modules alone, and builds its instances with an interpreted
`__init__`. Unhashable, like a dataclass with `eq` (defining `__eq__` alone does that); the
few that are used as keys define `__hash__` over their fields.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from mypy_extensions import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Value:
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_tuple(self) -> tuple[object, ...]:
        """The field values in `FIELDS` order."""
        return tuple([getattr(self, name) for name in self.FIELDS])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self.to_tuple() == other.to_tuple()

    def __repr__(self) -> str:
        values = self.to_tuple()
        inner = ", ".join([f"{n}={v!r}" for n, v in zip(self.FIELDS, values, strict=True)])
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied, as `dataclasses.replace` makes one."""
        fields: dict[str, Any] = dict(zip(self.FIELDS, self.to_tuple(), strict=True))
        for name in changes:
            if name not in fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
        fields.update(changes)
        return type(self)(**fields)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class InterpretedValue(Value):
    """The base of a `Value` subclass that is not compiled. Compiled pickling sees only the
    attributes of compiled classes, so these pickle as their constructor call, which must
    take `FIELDS` in order."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.to_tuple())

    def __setstate__(self, state: Any) -> None:
        # A pickle from when the class was a slotted dataclass: (None, {field: value}).
        _, fields = state
        for name, value in fields.items():
            setattr(self, name, value)


_ATOMS: frozenset[type] = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """`value` copied as `dataclasses.asdict` copies a field: a `Value` or a dataclass
    becomes a dict of its fields, lists, tuples and dicts are rebuilt around copies of their
    items, anything else is deep-copied. Atoms (str, int, float, bool, None) and tuples of
    atoms, being immutable, are returned as they are; a list of atoms is copied by one
    `list` call."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is list:
        for item in value:
            if type(item) not in _ATOMS:
                return [plain(v) for v in value]
        return list(value)
    if kind is tuple:
        for item in value:
            if type(item) not in _ATOMS:
                return tuple([plain(v) for v in value])
        return value
    if kind is dict:
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, Value):
        return dict(zip(value.FIELDS, [plain(v) for v in value.to_tuple()], strict=True))
    # Imported here: neither is needed by the records of the engine, and both cost start-up.
    import copy
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return copy.deepcopy(value)


__all__ = ["InterpretedValue", "Value", "plain"]
