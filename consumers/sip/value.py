"""`Value`: the base of the SIP model's small value classes (CSeq, Uri, Sdp, ...).

Each subclass writes its own `__init__` and names its fields in `FIELDS`; equality (same
class, same field values), `repr` and `to_tuple` come from here, as a dataclass would give
them. They are not dataclasses because a compiled dataclass costs about a millisecond at
import (the decorator writes and compiles its methods), which is a tenth of the start-up of
`hepwatch analyze` over the SIP modules alone, and builds its instances with an
interpreted `__init__`. Unhashable, like a dataclass with `eq` (defining `__eq__` alone
does that); the few that are used as keys define `__hash__` over their fields.
"""

from __future__ import annotations

from typing import ClassVar

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
        inner = ", ".join([f"{n}={getattr(self, n)!r}" for n in self.FIELDS])
        return f"{type(self).__name__}({inner})"


__all__ = ["Value"]
