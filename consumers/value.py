"""`Value`: the base of the compiled classes that behave like dataclasses without being
dataclasses: the SIP model's values (CSeq, Uri, Sdp, ...), the observation and message
records of the hot path, the engine's and the capture's configs and stats.

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


__all__ = ["Value"]
