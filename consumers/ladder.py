"""A terminal ladder diagram of one call, from its message and anomaly records.

This module owns the text picture only; it reads records and never the engine's state.

Columns are the transport addresses (ip:port) the call's copies went between, ordered
caller, proxy, callee, then any others in the order they appear. Roles come from what the
dedup layer learned (PROTOCOL.md C.0 rules 1-3): an "in" copy's destination and an "out"
copy's source are the proxy; the caller sent the initial INVITE [RFC 3261 §12.1] and the
callee received its relayed copy.

One line per logical message (its captured copies folded, C.0 rule 1): the arrow runs from
the sender to the last receiver, with "+" where the proxy relayed it, and the label on the
sender's hop. After the arrow: CSeq, the request line of a request, and marks: "retrans"
for a retransmission [RFC 3261 §17], "dup xN" for transport duplicates, "(proxy)" for a
message the proxy generated itself. An anomaly is marked on the message that triggered it,
found by matching its first evidence ref to the refs of the message's copies; one whose
trigger is not among the messages gets a line of its own at its event time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from consumers.records import AnomalyRecord, MessageRecord

MIN_GAP = 24
MAX_GAP = 40
OFFSET_WIDTH = 10


@dataclass(slots=True)
class _Column:
    addr: str
    role: str


@lru_cache(maxsize=4096)  # a capture has few addresses, each on many rows
def _addr(ip: str, port: int) -> str:
    if ":" in ip:
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


def _path(msg: MessageRecord) -> list[str]:
    """The addresses a message's copies went through, in capture order."""
    points: list[str] = []
    for row in sorted(msg.observations, key=lambda r: r.ts_us):
        src, dst = _addr(row.src_ip, row.src_port), _addr(row.dst_ip, row.dst_port)
        if not points or points[-1] != src:
            points.append(src)
        points.append(dst)
    if not points:
        points = [_addr(msg.src_ip, msg.src_port), _addr(msg.dst_ip, msg.dst_port)]
    return points


def columns(messages: list[MessageRecord]) -> list[_Column]:
    """The ladder's columns: caller, proxies, callee, then the rest in order of appearance."""
    return _columns(messages, [_path(m) for m in messages])


def _columns(messages: list[MessageRecord], paths: list[list[str]]) -> list[_Column]:
    proxies: list[str] = []
    seen: list[str] = []
    for msg, path in zip(messages, paths, strict=True):
        for row in msg.observations:
            if row.hop == "in":
                proxy = _addr(row.dst_ip, row.dst_port)
            elif row.hop == "out":
                proxy = _addr(row.src_ip, row.src_port)
            else:
                proxy = ""
            if proxy and proxy not in proxies:
                proxies.append(proxy)
        for point in path:
            if point not in seen:
                seen.append(point)
    caller = callee = ""
    initial = next(
        (
            i
            for i, m in enumerate(messages)
            if m.is_request and m.method == "INVITE" and not m.to_tag
        ),
        None,
    )
    if initial is None:
        initial = next(
            (i for i, m in enumerate(messages) if m.direction == "caller_to_callee"), None
        )
    if initial is not None:
        path = paths[initial]
        if path[0] not in proxies:
            caller = path[0]
        if path[-1] not in proxies and path[-1] != caller:
            callee = path[-1]
    cols = [_Column(caller, "caller")] if caller else []
    cols += [_Column(p, "proxy") for p in proxies if p not in (caller, callee)]
    if callee:
        cols.append(_Column(callee, "callee"))
    taken = {c.addr for c in cols}
    cols += [_Column(a, "") for a in seen if a not in taken]
    return cols


def label(msg: MessageRecord) -> str:
    """The arrow's text: method or status and reason, (SDP) when it carries a body."""
    text = msg.method if msg.is_request else f"{msg.status} {msg.reason_phrase}".strip()
    if msg.has_sdp:
        text += " (SDP)"
    return text


def first_line(msg: MessageRecord) -> str:
    if msg.raw:
        line = msg.raw.split(b"\n", 1)[0].rstrip(b"\r")
        return line.decode("utf-8", "replace")
    if msg.is_request:
        return f"{msg.method} SIP/2.0"
    return f"SIP/2.0 {msg.status} {msg.reason_phrase}".rstrip()


def _marks(msg: MessageRecord) -> list[str]:
    marks = []
    if msg.retransmission:
        marks.append("retrans")
    extra = sum(row.copies for row in msg.observations) - len(msg.observations)
    if extra > 0:
        marks.append(f"dup x{extra + 1}")
    if msg.origin == "proxy":
        marks.append("(proxy)")
    if msg.malformed:
        marks.append("malformed: " + ",".join(msg.malformed))
    return marks


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


class _Canvas:
    def __init__(self, cols: list[_Column], gap: int) -> None:
        self.gap = gap
        self.width = gap * max(len(cols) - 1, 0) + 1
        self.index = {c.addr: i for i, c in enumerate(cols)}
        self.n = len(cols)
        self._blank: list[str] | None = None

    def x(self, i: int) -> int:
        return i * self.gap

    def blank(self) -> list[str]:
        if self._blank is None:
            row = [" "] * self.width
            for i in range(self.n):
                row[self.x(i)] = "|"
            self._blank = row
        return self._blank.copy()

    def arrow(self, path: list[str], text: str) -> str:
        row = self.blank()
        index = self.index
        idx = [index[p] for p in path if p in index]
        if len(idx) < 2:
            return "".join(row)
        a = idx[0]
        b = idx[-1]
        if b == a:  # went to the proxy and back: draw to the farthest point
            b = max(idx, key=lambda i: abs(i - a))
        if b == a:
            return "".join(row)
        gap = self.gap
        lo, hi = min(a, b), max(a, b)
        row[lo * gap + 1 : hi * gap] = "-" * (hi * gap - lo * gap - 1)
        for i in idx[1:-1]:
            if lo < i < hi:
                row[i * gap] = "+"
        if b > a:
            row[b * gap - 1] = ">"
        else:
            row[b * gap + 1] = "<"
        # The label sits on the sender's hop, between its column and the next one.
        hop_lo, hop_hi = (a, a + 1) if b > a else (a - 1, a)
        span_lo, span_hi = hop_lo * gap + 2, hop_hi * gap - 2
        room = span_hi - span_lo
        body = f" {_fit(text, room - 2)} "
        start = span_lo + (room - len(body)) // 2
        row[start : start + len(body)] = body
        return "".join(row)


def render(
    messages: Iterable[MessageRecord],
    anomalies: Iterable[AnomalyRecord] = (),
    *,
    t0_us: int | None = None,
) -> list[str]:
    """The ladder of one call as text lines (no trailing newlines)."""
    msgs = sorted(messages, key=lambda m: (m.event_time_us, m.cseq))
    if not msgs:
        return []
    paths = [_path(m) for m in msgs]
    cols = _columns(msgs, paths)
    labels = [label(m) for m in msgs]
    single_hop = max((len(t) for t in labels), default=0) + 6
    gap = min(max(MIN_GAP, single_hop), MAX_GAP)
    canvas = _Canvas(cols, gap)
    t0 = msgs[0].event_time_us if t0_us is None else t0_us

    by_ref: dict[str, int] = {}
    for i, m in enumerate(msgs):
        for row in m.observations:
            by_ref.setdefault(row.ref, i)
    marks: dict[int, list[str]] = {}
    loose: list[AnomalyRecord] = []
    for an in anomalies:
        where = by_ref.get(an.evidence[0]) if an.evidence else None
        if where is None:
            loose.append(an)
        else:
            marks.setdefault(where, []).append(f"!! {an.anomaly} [{an.severity}]")

    indent = OFFSET_WIDTH + 2
    lines = [
        _header([c.addr for c in cols], gap, indent),
        _header([c.role for c in cols], gap, indent),
    ]
    entries: list[tuple[int, int, str]] = []
    for i, (m, text, path) in enumerate(zip(msgs, labels, paths, strict=True)):
        tail = [f"CSeq {m.cseq} {m.method}"]
        if m.is_request:
            tail.append(first_line(m))
        tail += _marks(m)
        tail += marks.get(i, [])
        line = f"{_offset(m.event_time_us - t0)}  {canvas.arrow(path, text)}  "
        entries.append((m.event_time_us, 0, line + "  ".join(tail)))
    for an in loose:
        line = f"{_offset(an.event_time_us - t0)}  {''.join(canvas.blank())}  "
        entries.append((an.event_time_us, 1, line + f"!! {an.anomaly} [{an.severity}]"))
    entries.sort(key=lambda e: (e[0], e[1]))
    return lines + [e[2] for e in entries]


def _offset(delta_us: int) -> str:
    sign = "+" if delta_us >= 0 else "-"
    return f"{sign}{abs(delta_us) / 1_000_000:.3f}".rjust(OFFSET_WIDTH)


def _header(texts: list[str], gap: int, indent: int) -> str:
    """Texts centred on the column positions (column 0 is at `indent`), clipped to the gap."""
    row = [" "] * (indent + gap * len(texts) + gap)
    for i, text in enumerate(texts):
        text = _fit(text, gap - 2)
        start = max(indent + i * gap - len(text) // 2, 0)
        row[start : start + len(text)] = list(text)
    return "".join(row).rstrip()
