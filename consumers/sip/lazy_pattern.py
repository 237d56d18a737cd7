"""`LazyPattern`: a regular expression compiled on its first use.

The SIP modules hold about thirty patterns: the strict RFC 3261 grammar, which runs only
when a consumer reads `malformed`, and extractors for value shapes that most traffic never
has (quoted strings with escapes, Warning, Retry-After comments). Compiled at import they
cost ~35M instructions (~10 ms), a tenth of the start-up of `hepwatch analyze`, and a
typical capture uses few of them or none.
"""

from __future__ import annotations

import re


class LazyPattern:
    """The methods of `re.Pattern` the SIP modules use, compiling the pattern once."""

    __slots__ = ("_compiled", "flags", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags
        self._compiled: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(self.pattern, self.flags)
        return compiled

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return self.compiled.fullmatch(text)

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        return self.compiled.match(text, pos)

    def sub(self, repl: str, text: str) -> str:
        return self.compiled.sub(repl, text)

    def __repr__(self) -> str:
        return f"LazyPattern({self.pattern!r}, {self.flags!r})"


__all__ = ["LazyPattern"]
