"""The ladder of a stored call: text for the terminal, a standalone HTML page with inline SVG.

Both draw the same rows. Columns are the transport addresses, ordered as the `analyze`
ladder orders them (`consumers.ladder.columns`: caller, proxies, callee, then the rest, so a
B-leg's SBC and callee follow the A-leg's). One row per logical message of every leg, in
capture order, with the leg's letter when there are several legs; the arrow runs from the
sender through the proxy ("+") to the receiver, labelled with the method or status. An
anomaly is marked on the message its first evidence ref names (the triggering message), or
gets a row of its own at its event time.

The HTML page has no external asset (CSS and SVG inline) and escapes every text it shows;
it is well-formed XML, so tools can parse it as such.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from html import escape
from string import ascii_uppercase

from consumers.history.flow import CallFlow
from consumers.ladder import (
    OFFSET_WIDTH,
    _Canvas,
    _Column,
    _header,
    _marks,
    _offset,
    _path,
    first_line,
    label,
)
from consumers.ladder import columns as ladder_columns
from consumers.records import AnomalyRecord, MessageRecord

MIN_GAP = 24
MAX_GAP = 40

SEVERITY_COLORS = {
    "info": "#4b5563",
    "low": "#1d4ed8",
    "medium": "#b45309",
    "high": "#dc2626",
    "critical": "#7f1d1d",
}


def leg_letter(i: int) -> str:
    return ascii_uppercase[i] if i < len(ascii_uppercase) else str(i + 1)


@dataclass(slots=True)
class Row:
    """One ladder row: a message (with its anomalies) or an anomaly of its own."""

    t_us: int
    leg: int
    message: MessageRecord | None = None
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # column keys the message went through


@dataclass(slots=True)
class Layout:
    columns: list[_Column]  # `addr` is the column key: the address, "#n" added on a repeat
    rows: list[Row]
    t0_us: int


def address_of(key: str) -> str:
    return key.split("#", 1)[0]


def _leg_columns(flow: CallFlow, msgs: list[MessageRecord]) -> tuple[list[_Column], dict]:
    """Columns leg after leg, each leg ordered caller, proxy, callee. A proxy relaying two legs
    gets a column in each (so a B-leg reads SBC -> proxy -> callee, left to right); any other
    address shared by legs keeps one column."""
    cols: list[_Column] = []
    keys: dict[tuple[int, str], str] = {}
    taken: dict[str, str] = {}  # address -> key of its first column
    legs = sorted({flow.leg_of(m.call_id) for m in msgs})
    for leg in legs:
        for col in ladder_columns([m for m in msgs if flow.leg_of(m.call_id) == leg]):
            if col.addr in taken and col.role != "proxy":
                keys[(leg, col.addr)] = taken[col.addr]
                continue
            key = col.addr if col.addr not in taken else f"{col.addr}#{len(cols)}"
            taken.setdefault(col.addr, key)
            keys[(leg, col.addr)] = key
            role = f"{leg_letter(leg)} {col.role}".strip() if len(legs) > 1 else col.role
            cols.append(_Column(key, role))
    return cols, keys


def layout(flow: CallFlow) -> Layout:
    msgs = sorted(flow.messages, key=lambda m: (m.event_time_us, m.cseq, m.id))
    cols, keys = _leg_columns(flow, msgs)
    rows = []
    for m in msgs:
        leg = flow.leg_of(m.call_id)
        rows.append(Row(m.event_time_us, leg, m, path=[keys[(leg, a)] for a in _path(m)]))
    by_ref: dict[str, Row] = {}
    for row in rows:
        assert row.message is not None
        for obs in row.message.observations:
            by_ref.setdefault(obs.ref, row)
    loose: list[Row] = []
    for an in flow.anomalies:
        row = by_ref.get(an.evidence[0]) if an.evidence else None
        if row is None:
            loose.append(Row(an.event_time_us, flow.leg_of(an.call_id), None, [an]))
        else:
            row.anomalies.append(an)
    rows = sorted(rows + loose, key=lambda r: (r.t_us, r.message is None))
    t0 = rows[0].t_us if rows else 0
    return Layout(cols, rows, t0)


def _tail(row: Row) -> list[str]:
    tail: list[str] = []
    m = row.message
    if m is not None:
        tail.append(f"CSeq {m.cseq} {m.method}")
        if m.is_request:
            tail.append(first_line(m))
        tail += _marks(m)
    tail += [f"!! {a.anomaly} [{a.severity}]" for a in row.anomalies]
    return tail


def _utc(t_us: int) -> str:
    return dt.datetime.fromtimestamp(t_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


# -- terminal ---------------------------------------------------------------------------------


def terminal_lines(flow: CallFlow) -> list[str]:
    """The call as text: legs, dialogs, the ladder, then the anomalies with their evidence."""
    lay = layout(flow)
    multi = len(flow.legs) > 1
    out = [
        f"Call {flow.call_id}: {len(flow.legs)} leg{'s' if multi else ''}, "
        f"{len(flow.messages)} messages, {len(flow.dialogs)} dialogs, "
        f"{len(flow.anomalies)} anomalies"
    ]
    out.append("Legs:")
    for i, leg in enumerate(flow.legs):
        how = leg.found_by if not leg.key else f"{leg.found_by} {leg.key}"
        n = sum(1 for m in flow.messages if m.call_id == leg.call_id)
        out.append(f"  {leg_letter(i)}  {leg.call_id}  ({how}, {n} messages)")
    if flow.dialogs:
        out.append("Dialogs:")
        for d in flow.dialogs:
            out.append(
                f"  {leg_letter(flow.leg_of(d.call_id))}  {d.caller_tag} / {d.callee_tag or '-'}"
                f"  {d.state}, ended {d.end_reason}, initial {d.initial_status}"
                f"  {d.caller_ua or '?'} -> {d.callee_ua or '?'}"
                f"  re-INVITEs {d.reinvites}, UPDATEs {d.updates}, PRACKs {d.pracks}"
            )
    if lay.rows:
        out.append(f"Ladder (offsets from {_utc(lay.t0_us)}):")
        out += _ladder_text(lay, multi)
    if flow.anomalies:
        out.append("Anomalies:")
        for an in flow.anomalies:
            out += _anomaly_text(flow, an, lay.t0_us)
    return out


def _ladder_text(lay: Layout, multi: bool) -> list[str]:
    labels = [label(r.message) if r.message else "" for r in lay.rows]
    gap = min(max(MIN_GAP, max((len(t) for t in labels), default=0) + 6), MAX_GAP)
    canvas = _Canvas(lay.columns, gap)
    tag_width = 3 if multi else 0
    indent = OFFSET_WIDTH + 2 + tag_width
    lines = [
        _header([address_of(c.addr) for c in lay.columns], gap, indent),
        _header([c.role for c in lay.columns], gap, indent),
    ]
    for row, text in zip(lay.rows, labels, strict=True):
        tag = f"{leg_letter(row.leg)}  " if multi else ""
        if row.message is not None:
            drawing = canvas.arrow(row.path, text)
        else:
            drawing = "".join(canvas.blank())
        lines.append(f"{_offset(row.t_us - lay.t0_us)}  {tag}{drawing}  {'  '.join(_tail(row))}")
    return lines


def _anomaly_text(flow: CallFlow, an: AnomalyRecord, t0: int) -> list[str]:
    what = f"{an.method} CSeq {an.cseq}" if an.method else ""
    if an.status:
        what += f" -> {an.status} {an.reason}".rstrip()
    lines = [
        f"  {_offset(an.event_time_us - t0).strip()}  {leg_letter(flow.leg_of(an.call_id))}  "
        f"{an.anomaly} [{an.severity}] {an.family} confidence {an.confidence:g}  {what}".rstrip(),
        f"      {an.direction}, {an.dialog_state}; sender {an.ua_sender or '?'}, "
        f"peer {an.ua_peer or '?'}",
    ]
    if an.fields:
        lines.append("      " + ", ".join(f"{k}={v}" for k, v in sorted(an.fields.items())))
    if an.evidence:
        lines.append("      evidence: " + " ".join(an.evidence))
    return lines


# -- HTML + SVG -------------------------------------------------------------------------------

GAP_PX = 190
ROW_PX = 30
LEFT_PX = 110
TOP_PX = 64
TAIL_PX = 520

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d1d5db; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
code, pre, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
pre { background: #f9fafb; border: 1px solid #e5e7eb; padding: 8px; overflow-x: auto; }
.sev { font-weight: 600; }
svg text { font-family: ui-monospace, monospace; font-size: 12px; }
"""


def html_page(flow: CallFlow) -> str:
    """A standalone page: summary, legs, dialogs, the ladder as SVG, anomalies, raw messages."""
    lay = layout(flow)
    e = _e
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        f"<title>Call flow {e(flow.call_id)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Call {e(flow.call_id)}</h1>",
        f"<p>{len(flow.legs)} leg(s), {len(flow.messages)} messages, {len(flow.dialogs)} "
        f"dialogs, {len(flow.anomalies)} anomalies"
        + (f"; times are offsets from {e(_utc(lay.t0_us))}" if lay.rows else "")
        + "</p>",
        "<h2>Legs</h2>",
        _table(
            ["leg", "Call-ID", "found by", "key", "messages"],
            [
                [
                    leg_letter(i),
                    leg.call_id,
                    leg.found_by,
                    leg.key,
                    str(sum(1 for m in flow.messages if m.call_id == leg.call_id)),
                ]
                for i, leg in enumerate(flow.legs)
            ],
        ),
    ]
    if flow.dialogs:
        parts.append("<h2>Dialogs</h2>")
        parts.append(
            _table(
                ["leg", "caller tag", "callee tag", "state", "end", "initial", "caller UA",
                 "callee UA", "re-INVITEs", "UPDATEs", "PRACKs", "anomalies"],
                [
                    [leg_letter(flow.leg_of(d.call_id)), d.caller_tag, d.callee_tag, d.state,
                     d.end_reason, str(d.initial_status), d.caller_ua, d.callee_ua,
                     str(d.reinvites), str(d.updates), str(d.pracks), str(d.anomalies)]
                    for d in flow.dialogs
                ],
            )
        )  # fmt: skip
    parts.append("<h2>Ladder</h2>")
    parts.append(ladder_svg(flow, lay))
    if flow.anomalies:
        parts.append("<h2>Anomalies</h2>")
        parts.append(_anomaly_table(flow, lay.t0_us))
    if flow.messages:
        parts.append("<h2>Messages</h2>")
        for m in sorted(flow.messages, key=lambda m: (m.event_time_us, m.cseq, m.id)):
            summary = (
                f"{_offset(m.event_time_us - lay.t0_us).strip()} "
                f"{leg_letter(flow.leg_of(m.call_id))} {label(m)} (CSeq {m.cseq} {m.method}) "
                f"{m.src_ip}:{m.src_port} to {m.dst_ip}:{m.dst_port}"
            )
            raw = m.raw.decode("utf-8", "replace") if m.raw else "(raw message not stored)"
            parts.append(
                f'<details id="m-{e(m.id)}"><summary class="mono">{e(summary)}</summary>'
                f"<pre>{e(raw)}</pre></details>"
            )
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def ladder_svg(flow: CallFlow, lay: Layout | None = None) -> str:
    lay = lay or layout(flow)
    multi = len(flow.legs) > 1
    ncols = max(len(lay.columns), 1)
    width = LEFT_PX + GAP_PX * (ncols - 1) + 40 + TAIL_PX
    height = TOP_PX + ROW_PX * (len(lay.rows) + 1)
    index = {c.addr: i for i, c in enumerate(lay.columns)}

    def x(i: int) -> int:
        return LEFT_PX + 20 + GAP_PX * i

    tail_x = x(ncols - 1) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="ladder of {_e(flow.call_id)}">',
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#111827"/></marker>',
        "</defs>",
    ]
    for i, col in enumerate(lay.columns):
        out.append(
            f'<text x="{x(i)}" y="20" text-anchor="middle">{_e(address_of(col.addr))}</text>'
        )
        out.append(
            f'<text x="{x(i)}" y="36" text-anchor="middle" fill="#6b7280">{_e(col.role)}</text>'
        )
        out.append(
            f'<line x1="{x(i)}" y1="44" x2="{x(i)}" y2="{height - 8}" stroke="#9ca3af" '
            'stroke-dasharray="4 3"/>'
        )
    for k, row in enumerate(lay.rows):
        y = TOP_PX + ROW_PX * k
        offset = _offset(row.t_us - lay.t0_us).strip()
        tag = f" {leg_letter(row.leg)}" if multi else ""
        out.append(f'<text x="8" y="{y + 4}">{_e(offset + tag)}</text>')
        m = row.message
        if m is not None:
            points = [index[p] for p in row.path if p in index]
            if len(points) >= 2:
                a, b = points[0], points[-1]
                if a == b:
                    b = max(points, key=lambda i: abs(i - a))
                if a != b:
                    dash = ' stroke-dasharray="6 3"' if m.retransmission else ""
                    color = "#6b7280" if m.origin == "proxy" else "#111827"
                    out.append(
                        f'<line x1="{x(a)}" y1="{y}" x2="{x(b)}" y2="{y}" stroke="{color}" '
                        f'stroke-width="1.5" marker-end="url(#arrow)"{dash}>'
                        f"<title>{_e(first_line(m))}</title></line>"
                    )
                    for mid in points[1:-1]:
                        if min(a, b) < mid < max(a, b):
                            out.append(f'<circle cx="{x(mid)}" cy="{y}" r="3" fill="#111827"/>')
                    hop = (a, a + 1) if b > a else (a - 1, a)
                    mid_x = (x(hop[0]) + x(hop[1])) // 2
                    out.append(
                        f'<text x="{mid_x}" y="{y - 5}" text-anchor="middle">{_e(label(m))}</text>'
                    )
            note = f"CSeq {m.cseq} {m.method}"
            marks = _marks(m)
            if marks:
                note += "  " + "  ".join(marks)
            out.append(f'<text x="{tail_x}" y="{y + 4}" fill="#374151">{_e(note)}</text>')
        for j, an in enumerate(row.anomalies):
            color = SEVERITY_COLORS.get(an.severity, "#dc2626")
            ax = tail_x + (220 if m is not None else 0) + 200 * j
            out.append(
                f'<g class="anomaly" data-anomaly="{_e(an.anomaly)}">'
                f'<circle cx="{ax}" cy="{y}" r="5" fill="{color}"/>'
                f'<text x="{ax + 9}" y="{y + 4}" fill="{color}" font-weight="bold">'
                f"{_e(an.anomaly)} [{_e(an.severity)}]</text>"
                f"<title>{_e(_anomaly_title(an))}</title></g>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _anomaly_title(an: AnomalyRecord) -> str:
    text = f"{an.family} {an.anomaly} ({an.severity}, confidence {an.confidence:g})"
    if an.fields:
        text += "; " + ", ".join(f"{k}={v}" for k, v in sorted(an.fields.items()))
    return text


def _anomaly_table(flow: CallFlow, t0: int) -> str:
    head = ["at", "leg", "anomaly", "family", "severity", "confidence", "message", "direction",
            "sender UA", "peer UA", "fields", "evidence"]  # fmt: skip
    rows = []
    for an in flow.anomalies:
        what = f"{an.method} CSeq {an.cseq}" if an.method else ""
        if an.status:
            what += f" {an.status} {an.reason}".rstrip()
        color = SEVERITY_COLORS.get(an.severity, "#dc2626")
        fields = json.dumps(an.fields, ensure_ascii=False, sort_keys=True) if an.fields else ""
        at = _offset(an.event_time_us - t0).strip()
        first = (at, leg_letter(flow.leg_of(an.call_id)), an.anomaly, an.family)
        rest = (f"{an.confidence:g}", what, an.direction, an.ua_sender, an.ua_peer)
        rows.append(
            "<tr>"
            + "".join(f"<td>{_e(v)}</td>" for v in first)
            + f'<td class="sev" style="color: {color}">{_e(an.severity)}</td>'
            + "".join(f"<td>{_e(v)}</td>" for v in rest)
            + f'<td class="mono">{_e(fields)}</td>'
            + f'<td class="mono">{_e(" ".join(an.evidence))}</td>'
            + "</tr>"
        )
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _e(text: object) -> str:
    """Text escaped for HTML and XML alike (control characters other than tab/newline dropped,
    since XML 1.0 cannot carry them)."""
    s = str(text)
    s = "".join(ch for ch in s if ch in "\t\n\r" or ord(ch) >= 32)
    return escape(s, quote=True)
