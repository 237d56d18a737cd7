"""Bounded memo tables for pure functions of one header value.

Captured traffic repeats header values heavily: Allow, Supported, Content-Type,
Session-Expires are the same for every call of a user agent, and From, To, Contact and
Route recur in every message of a dialog. Extractors and validators keyed by the exact text
keep their result in a plain dict; when a table reaches its bound it is emptied (cheaper and
simpler than LRU bookkeeping, and a full table means the values are not repeating anyway).
Only immutable results (tuples, frozensets, ints, frozen value objects) are stored, and only
for keys up to MAX_KEY characters, so hostile traffic cannot make the tables large.
"""

from __future__ import annotations

from typing import Final, TypeVar

LIMIT: Final = 4096
MAX_KEY: Final = 512

V = TypeVar("V")

_TABLES: Final[list[dict[str, object]]] = []


def table() -> dict[str, V]:  # type: ignore[type-var]
    """A new memo table keyed by header text, registered so that `clear_all` can empty it."""
    created: dict[str, V] = {}
    _TABLES.append(created)  # type: ignore[arg-type]
    return created


def remember(memo: dict[str, V], key: str, value: V) -> V:
    """Store `value` under `key` (unless the key is too long) and return it."""
    if len(key) <= MAX_KEY:
        if len(memo) >= LIMIT:
            memo.clear()
        memo[key] = value
    return value


def clear_all() -> None:
    """Empty every memo table (tests, or to release memory)."""
    for memo in _TABLES:
        memo.clear()
