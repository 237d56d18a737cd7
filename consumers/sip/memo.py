"""Bounded memo tables for pure functions of one header value.

Captured traffic repeats header values heavily: Allow, Supported, Content-Type,
Session-Expires are the same for every call of a user agent, and From, To, Contact and
Route recur in every message of a dialog. Extractors and validators keyed by the exact text
keep their result in a plain dict; when a table reaches its bound it is emptied (cheaper and
simpler than LRU bookkeeping, and a full table means the values are not repeating anyway).
Only immutable results (tuples, frozensets, ints, frozen value objects) are stored.
"""

from __future__ import annotations

from typing import TypeVar

LIMIT = 4096

K = TypeVar("K")
V = TypeVar("V")

_TABLES: list[dict[object, object]] = []


def table() -> dict[K, V]:  # type: ignore[type-var]
    """A new memo table, registered so that `clear_all` can empty it."""
    created: dict[K, V] = {}
    _TABLES.append(created)  # type: ignore[arg-type]
    return created


def remember(memo: dict[K, V], key: K, value: V) -> V:
    if len(memo) >= LIMIT:
        memo.clear()
    memo[key] = value
    return value


def clear_all() -> None:
    """Empty every memo table (tests, or to release memory)."""
    for memo in _TABLES:
        memo.clear()
