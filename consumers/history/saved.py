"""The saved-query catalogue: one `.sql` file per query in `schemas/queries/`.

Each file starts with a header of `--` comments that says what the query is and what it
takes, then the statement:

    -- name: responses_491_405_per_minute
    -- description: 491 and 405 responses per minute and node, from sip_minute_counts.
    -- param: window_minutes UInt32 = 60 -- how far back from now
    -- param: call_id String -- required: no default

A parameter is a ClickHouse placeholder `{name:Type}` in the statement; its header line
gives its type, its default (none: the caller must give it; `''` is the empty string) and a
short help after a second `--`. The loader checks that the header and the placeholders
agree, so `--list` never advertises a parameter the query does not bind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from consumers.history.query import QueryError, placeholders

QUERIES_DIR = Path(__file__).resolve().parents[2] / "schemas" / "queries"
_HEADER = re.compile(r"--\s*(name|description|param)\s*:\s*(.*)\Z")
_PARAM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s+(.+)\Z")


@dataclass(slots=True)
class SavedParam:
    name: str
    type: str
    default: str | None  # None: required
    help: str = ""

    def describe(self) -> str:
        text = f"{self.name} {self.type}"
        if self.default is None:
            text += " (required)"
        else:
            text += f" = {self.default}" if self.default else " = ''"
        return text + (f"  {self.help}" if self.help else "")


@dataclass(slots=True)
class SavedQuery:
    name: str
    description: str
    sql: str
    path: Path
    params: list[SavedParam] = field(default_factory=list)

    def defaults(self) -> dict[str, str | None]:
        return {p.name: p.default for p in self.params}


def queries_dir() -> Path:
    env = os.environ.get("HEPWATCH_QUERIES_DIR")
    return Path(env) if env else QUERIES_DIR


def parse(text: str, path: Path) -> SavedQuery:
    """One saved query from its file text; a malformed header is a QueryError."""
    name = ""
    description: list[str] = []
    params: list[SavedParam] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break  # the header ends where the statement begins
        m = _HEADER.match(line)
        if m is None:
            continue
        key, value = m.group(1), m.group(2).strip()
        if key == "name":
            name = value
        elif key == "description":
            description.append(value)
        else:
            params.append(_param(value, f"{path}:{lineno}"))
    where = str(path)
    if not name:
        raise QueryError(f"{where}: no '-- name:' header")
    if name != path.stem:
        raise QueryError(f"{where}: name {name!r} differs from the file name")
    if not description:
        raise QueryError(f"{where}: no '-- description:' header")
    declared = {p.name: p.type for p in params}
    if len(declared) != len(params):
        raise QueryError(f"{where}: a parameter is declared twice")
    bound = placeholders(text)
    if declared != bound:
        raise QueryError(
            f"{where}: header parameters {declared} differ from the query's placeholders {bound}"
        )
    return SavedQuery(name, " ".join(description), text, path, params)


def _param(spec: str, where: str) -> SavedParam:
    spec, _, help_text = spec.partition(" --")
    m = _PARAM.match(spec.strip())
    if m is None:
        raise QueryError(f"{where}: expected '-- param: NAME TYPE [= DEFAULT]'")
    name, rest = m.group(1), m.group(2)
    type_, eq, default = rest.partition("=")
    value: str | None = None
    if eq:
        value = default.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("\\'", "'")
    return SavedParam(name, type_.strip(), value, help_text.strip())


def catalogue(directory: Path | None = None) -> dict[str, SavedQuery]:
    """Every saved query of the directory, by name, in name order."""
    directory = directory or queries_dir()
    if not directory.is_dir():
        raise QueryError(f"{directory}: no saved-query directory")
    out: dict[str, SavedQuery] = {}
    for path in sorted(directory.glob("*.sql")):
        query = parse(path.read_text(encoding="utf-8"), path)
        out[query.name] = query
    return out


def find(name: str, directory: Path | None = None) -> SavedQuery:
    queries = catalogue(directory)
    if name not in queries:
        known = ", ".join(queries) or "none"
        raise QueryError(f"no saved query {name!r} (saved queries: {known})")
    return queries[name]


def listing(queries: dict[str, SavedQuery]) -> list[str]:
    """What `--list` prints: each name, its description, its parameters."""
    lines: list[str] = []
    for q in queries.values():
        lines.append(q.name)
        lines.append(f"    {q.description}")
        for p in q.params:
            lines.append(f"    --param {p.describe()}")
    return lines
