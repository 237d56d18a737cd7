"""`lazy`: a computed-once attribute for the message accessors.

Like `functools.cached_property` without its per-instance lock (Python 3.11 still takes one):
the first access runs the function and stores the result in the instance `__dict__`, which
shadows this non-data descriptor, so later reads are plain attribute reads.

The function must not raise. If it does anyway (a parser bug), the accessor returns its
`fallback` and records `parser_error` on the instance, so a consumer never crashes on a
captured message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class lazy(Generic[T]):
    __slots__ = ("__doc__", "fallback", "fn", "name")

    def __init__(self, fn: Callable[[Any], T], fallback: Callable[[], T]) -> None:
        self.fn = fn
        self.fallback = fallback
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> lazy[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | lazy[T]:
        if obj is None:
            return self
        try:
            value = self.fn(obj)
        except MemoryError:
            raise
        except Exception:
            value = self.fallback()
            note = getattr(obj, "note_parser_error", None)
            if note is not None:
                note(self.name)
        obj.__dict__[self.name] = value
        return value


def lazy_or(fallback: Callable[[], T]) -> Callable[[Callable[[Any], T]], lazy[T]]:
    """Decorator form: `@lazy_or(list)` makes an accessor computed once with `list()` as its
    fallback."""

    def wrap(fn: Callable[[Any], T]) -> lazy[T]:
        return lazy(fn, fallback)

    return wrap


def _none() -> None:
    return None


def lazy_opt(fn: Callable[[Any], T]) -> lazy[T]:
    """Decorator for accessors whose fallback is None."""
    return lazy(fn, _none)  # type: ignore[arg-type]
