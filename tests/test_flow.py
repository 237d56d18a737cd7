"""`hepwatch flow CALL-ID` on the real embedded engine (chDB): calls built with sipflow, run
through the engine's detectors (and the leg correlator), stored with the ClickHouse row
mapping, then loaded back and drawn in the terminal and as an HTML page with inline SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from clickhouse_connect.driver.client import Client
from history_db import insert_records, insert_rows, now_us, open_db, reset, shifted
from sipflow import T0, Flow
from test_detector_glare import crossing, established, reinvite_ok
from test_legs import B2bua, _relay_update_as, _x_cid

from consumers.engine import Engine, EngineConfig
from consumers.history.flow import CallNotFound, load_call
from consumers.legs import correlate
from hepwatch.cli import cli

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Client]]:
    path = tmp_path_factory.mktemp("chdb")
    client = open_db(path)
    reset(client)
    delta = now_us() - 10 * 60_000_000 - int(T0 * 1_000_000)
    insert_records(client, shifted(glare_call().engine_records(), delta))
    insert_records(client, shifted(b2bua_records(), delta))
    other = Flow("unrelated@test", a=("10.0.0.7", 5060))
    other.setup()
    other.wait(1)
    other.bye("A")
    insert_records(client, shifted(other.engine_records(), delta))
    yield path, client
    client.close()


def glare_call() -> Flow:
    """Both sides re-INVITE at once, both get 491, both retry, then BYE."""
    f = established()
    crossing(f)
    f.wait(1.0)
    reinvite_ok(f, "B")
    f.wait(1.5)
    reinvite_ok(f, "A")
    f.wait(1)
    f.bye("A")
    return f


def b2bua_records() -> list:
    """An SBC turns UA-A's UPDATE into a re-INVITE on the B-leg (X-CID names the A-leg)."""
    call = B2bua()
    call.setup(b_invite=_x_cid(call))
    _relay_update_as(call, "INVITE", delay=0.03)
    call.end(9)
    engine = Engine(EngineConfig())
    records: list = []
    for obs in call.observations():
        records += engine.feed(obs)
    records += engine.flush()
    return records + correlate(records)


def hepwatch_flow(db: tuple[Path, Client], *args: str) -> Result:
    return CliRunner().invoke(cli, ["flow", *args, "--clickhouse", f"chdb://{db[0]}"])


ARROW = re.compile(r"^\s*[+-]\d+\.\d{3}\s+(?:([A-Z])\s+)?(\|.*\|)\s\s(.*)$")


def arrows(output: str) -> list[tuple[str, str, str]]:
    """(leg, label, direction) of each ladder row with an arrow, top to bottom."""
    out = []
    for line in output.splitlines():
        m = ARROW.match(line)
        if m is None or not re.search("[<>]", m.group(2)):
            continue
        drawing = m.group(2)
        text = re.search(r"-\s(\S.*?\S|\S)\s-", drawing)
        direction = "right" if ">" in drawing else "left"
        out.append((m.group(1) or "", text.group(1) if text else "", direction))
    return out


def test_ladder_of_a_glare_call(db):
    res = hepwatch_flow(db, "flow-1@test")
    assert res.exit_code == 0, res.output
    assert arrows(res.stdout) == [
        ("", "INVITE (SDP)", "right"),
        ("", "100 Trying", "left"),
        ("", "180 Ringing", "left"),
        ("", "200 OK (SDP)", "left"),
        ("", "ACK", "right"),
        ("", "INVITE (SDP)", "right"),  # A's re-INVITE
        ("", "INVITE (SDP)", "left"),  # B's, crossing it
        ("", "491 Request Pending", "right"),  # A refuses B's
        ("", "491 Request Pending", "left"),  # B refuses A's
        ("", "ACK", "left"),
        ("", "ACK", "right"),
        ("", "INVITE (SDP)", "left"),  # B, the non-owner, retries first
        ("", "200 OK (SDP)", "right"),
        ("", "ACK", "left"),
        ("", "INVITE (SDP)", "right"),  # then A
        ("", "200 OK (SDP)", "left"),
        ("", "ACK", "right"),
        ("", "BYE", "right"),
        ("", "200 OK", "left"),
    ]
    lines = res.stdout.splitlines()
    glare_rows = [ln for ln in lines if "491 Request Pending -" in ln]
    assert len(glare_rows) == 2
    assert all(ln.endswith("!! glare_491 [info]") for ln in glare_rows)
    header = lines[lines.index(next(ln for ln in lines if ln.startswith("Ladder"))) + 1]
    assert header.split() == ["10.0.0.2:5060", "10.0.0.1:5060", "10.0.0.3:5060"]
    assert "unrelated@test" not in res.stdout and "10.0.0.7" not in res.stdout
    assert "Legs:\n  A  flow-1@test  (requested, 19 messages)" in res.stdout
    assert "glare_491 [info] C.1" in res.stdout  # the anomaly list with its fields
    assert "glare_peer_method=INVITE" in res.stdout


def test_b2bua_legs_are_found_and_drawn_together(db):
    for asked in ("leg-a@test", "leg-b@sbc"):
        res = hepwatch_flow(db, asked)
        assert res.exit_code == 0, res.output
        assert "  A  leg-a@test  (" in res.stdout and "  B  leg-b@sbc  (" in res.stdout
    assert "  A  leg-a@test  (x_cid leg-a@test, 8 messages)" in res.stdout
    rows = arrows(res.stdout)
    assert [r for r in rows if r[1] in ("UPDATE (SDP)", "INVITE (SDP)")] == [
        ("A", "INVITE (SDP)", "right"),
        ("B", "INVITE (SDP)", "right"),
        ("A", "UPDATE (SDP)", "right"),
        ("B", "INVITE (SDP)", "right"),  # the SBC's translation of A's UPDATE
    ]
    update = next(ln for ln in res.stdout.splitlines() if "UPDATE (SDP)" in ln)
    assert update.endswith("!! update_to_reinvite [info]")
    # the proxy relays both legs: one column for it in each leg
    lines = res.stdout.splitlines()
    roles = lines[lines.index(next(ln for ln in lines if ln.startswith("Ladder"))) + 2]
    assert roles.split() == ["A", "caller", "A", "proxy", "A", "callee", "B", "caller", "B",
                             "proxy", "B", "callee"]  # fmt: skip
    res = hepwatch_flow(db, "leg-b@sbc", "--no-legs")
    assert "1 leg," in res.stdout and "leg-a@test  (" not in res.stdout


class _Checker(HTMLParser):
    """Every element closed in order (void elements aside): the page is well-formed."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        for name, value in attrs:
            if name in ("src", "href") and value and "://" in value:
                self.errors.append(f"external asset {value}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def _page(path: Path) -> tuple[str, ET.Element]:
    text = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == [] and checker.scripts == 0
    return text, ET.fromstring(text)  # well-formed XML too (the DOCTYPE is allowed)


def test_html_page_with_svg_ladder(db, tmp_path: Path):
    out = tmp_path / "call.html"
    res = hepwatch_flow(db, "leg-a@test", "--html", str(out))
    assert res.exit_code == 0, res.output
    assert f"HTML written to {out}" in res.stdout
    text, root = _page(out)
    svg = root.find(f".//{SVG}svg")
    assert svg is not None
    arrows_drawn = [el for el in svg.iter(f"{SVG}line") if el.get("marker-end")]
    assert len(arrows_drawn) == 17  # every message of both legs
    labels = [el.text for el in svg.iter(f"{SVG}text")]
    assert labels.count("UPDATE (SDP)") == 1 and labels.count("INVITE (SDP)") == 3
    marks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "anomaly"]
    assert [g.get("data-anomaly") for g in marks] == ["update_to_reinvite"]
    # the anomaly table: name, severity and evidence
    cells = [td.text for td in root.iter("td")]
    assert "update_to_reinvite" in cells and "info" in cells
    assert "leg-a@test#7 leg-b@sbc#7" in cells
    assert "<details" in text and "UPDATE sip:b@10.0.0.10:5060 SIP/2.0" in text


def test_html_escapes_what_it_shows(db, tmp_path: Path):
    _path, client = db
    nasty = "<script>alert('x')</script>&\"ua\""
    insert_rows(
        client,
        "sip_messages",
        [
            {"id": "esc1", "event_time": now_us() - 60_000_000, "node_name": "p1",
             "call_id": "esc@test", "is_request": True, "method": "INVITE", "cseq": 1,
             "src_ip": "10.0.0.2", "src_port": 5060, "dst_ip": "10.0.0.1", "dst_port": 5060,
             "user_agent": nasty, "raw": f"INVITE sip:x SIP/2.0\r\nUser-Agent: {nasty}\r\n\r\n",
             "obs_time": [now_us() - 60_000_000], "obs_src_ip": ["10.0.0.2"],
             "obs_src_port": [5060], "obs_dst_ip": ["10.0.0.1"], "obs_dst_port": [5060],
             "obs_hop": ["in"], "obs_ref": ["esc#1"], "obs_copies": [1],
             "src_partition": -1, "src_offset": -1},
        ],
    )  # fmt: skip
    insert_rows(
        client,
        "anomalies",
        [
            {"id": "esc-a", "event_time": now_us() - 60_000_000, "anomaly": "spurious_491",
             "family": "C.1", "severity": "medium", "call_id": "esc@test", "node_name": "p1",
             "ua_sender": nasty, "evidence": ["esc#1"], "fields": {"why": nasty},
             "src_partition": -1, "src_offset": -1},
        ],
    )  # fmt: skip
    out = tmp_path / "esc.html"
    res = hepwatch_flow(db, "esc@test", "--html", str(out))
    assert res.exit_code == 0, res.output
    text, root = _page(out)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert any(td.text == nasty for td in root.iter("td"))  # shown as text, intact
    assert "!! spurious_491 [medium]" in res.stdout


def test_unknown_call_id(db):
    res = hepwatch_flow(db, "no-such-call@nowhere")
    assert res.exit_code == 1
    assert "no call with Call-ID 'no-such-call@nowhere'" in res.stderr
    with pytest.raises(CallNotFound):
        load_call(db[1], "no-such-call@nowhere")
