"""Benchmark of `hepwatch analyze --json` against sip-doctor 0.8.0 on the same capture.

Writes (or takes, with --capture) a pcap of proxy-mirrored calls as Kamailio's siptrace
sends them to a collector (HEPv3 over UDP to port 9060: every relayed message twice, in
and out of the proxy, plus the proxy's own 100 Trying), then times both analyzers on it,
in one run, best of --repeat. The calls and the capture come from tests/capture_build.py
(scenarios built with tests/sipflow.py whose anomalies are known by construction, named
as in PROTOCOL.md C); the report says which of them each tool found, missed or invented.

    .venv/bin/python bench/analyze/run.py [--calls 400] [--repeat 3] [--capture FILE]

sip-doctor is installed from PyPI into its own virtualenv (bench/.venv-sipdoctor, or
--sipdoctor-venv) on first use; it needs nothing but the standard library.

Both tools run as installed tools do, with bytecode caches: the children get
PYTHONPYCACHEPREFIX=<workdir>/pycache (so neither source tree is written to) and never
PYTHONDONTWRITEBYTECODE, and each tool has one untimed warm-up run that fills the cache.
Without that, an environment with PYTHONDONTWRITEBYTECODE=1 made every hepwatch run compile
its ~130 modules (~80 ms) while sip-doctor used the bytecode pip wrote at install.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from capture_build import Call, Change, make_calls, write_capture  # noqa: E402

SIPDOCTOR = "sip-doctor==0.8.0"


# --- the two tools -------------------------------------------------------------------------------


def sipdoctor_bin(venv: Path) -> Path:
    exe = venv / "bin" / "sip-doctor"
    if exe.exists():
        return exe
    print(f"installing {SIPDOCTOR} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", SIPDOCTOR],
        check=True,
    )
    return exe


# --- comparison ----------------------------------------------------------------------------------

# What sip-doctor says for a catalogue anomaly: its finding topic and a word of the title. It
# has no counterpart for the others (retry timing, Allow bookkeeping), which count as missed.
SIPDOCTOR_EQUIVALENT: dict[str, tuple[str, str]] = {
    "glare_491": ("reinvite-rejected", "491"),
    "405_update_allow_said_yes": ("reinvite-rejected", "405"),
    "405_update_allow_said_no": ("reinvite-rejected", "405"),
    "C.7": ("missing-ack", ""),
    "refresh_missed": ("session-timer", ""),
    "session_expired_bye": ("session-timer", ""),
}
# Findings that describe how a call ended, true of any failed call, never an invention.
CALL_OUTCOME_TOPICS = ("status-", "call-failed")


def _sd_intent(event: str) -> str:
    if "on hold" in event:
        return "hold"
    if "resumed" in event:
        return "resume"
    if "session refresh" in event:
        return "no_sdp"  # its name for a re-INVITE/UPDATE that changes nothing
    if "media update" in event:
        return "codec_change"
    return event


def _status(result: str | None) -> int:
    head = (result or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class Score:
    calls: int = 0
    all_found: int = 0  # calls whose every expected anomaly was reported
    missed: Counter[str] = field(default_factory=Counter)
    invented: Counter[str] = field(default_factory=Counter)
    changes_truth: int = 0
    changes_right: int = 0  # reported with the right method/intent/status, in order


def _same_change(truth: Change, got: Change) -> bool:
    method, intent, status = truth
    ok_intent = got[1] == intent or (intent == "refresh" and got[1] in ("no_change", "refresh"))
    return got[0] == method and ok_intent and got[2] == status


def _score_changes(truth: list[Change], got: list[Change]) -> int:
    return sum(1 for t, g in zip(truth, got, strict=False) if _same_change(t, g))


def score_hepwatch(calls: list[Call], doc: dict[str, Any]) -> dict[str, Score]:
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for a in doc["anomalies"]:
        found[a["call_id"]].append((a["family"], a["anomaly"]))
    changes: dict[str, list[Change]] = defaultdict(list)
    for sc in sorted(doc["session_changes"], key=lambda x: x["event_time_us"]):
        changes[sc["call_id"]].append((sc["method"], sc["intent"], sc["status"]))
    scores: dict[str, Score] = defaultdict(Score)
    for c in calls:
        s = scores[c.scenario]
        got = found.get(c.flow.call_id, [])
        s.calls += 1
        hits = [any(f == fam and (n is None or a == n) for f, a in got) for fam, n in c.expected]
        s.all_found += all(hits)
        s.missed.update(n or fam for (fam, n), hit in zip(c.expected, hits, strict=True) if not hit)
        for fam, a in got:
            if a in c.optional:
                continue
            if not any(fam == f and (n is None or n == a) for f, n in c.expected):
                s.invented[a] += 1
        s.changes_truth += len(c.changes)
        s.changes_right += _score_changes(c.changes, changes.get(c.flow.call_id, []))
    return scores


def score_sipdoctor(calls: list[Call], doc: dict[str, Any]) -> dict[str, Score]:
    findings: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    changes: dict[str, list[Change]] = defaultdict(list)
    for d in doc.get("dialogs", []):
        for f in d.get("findings", []):
            if f.get("topic"):  # the untopicked ones are summaries ("Caller hung up after")
                findings[d["call_id"]].append((f["topic"], f["severity"], f["title"]))
        for ev in d.get("events") or []:
            method = "UPDATE" if "UPDATE" in ev["event"] else "INVITE"
            changes[d["call_id"]].append((method, _sd_intent(ev["event"]), _status(ev["result"])))
    scores: dict[str, Score] = defaultdict(Score)
    for c in calls:
        s = scores[c.scenario]
        got = findings.get(c.flow.call_id, [])
        s.calls += 1
        used: set[int] = set()
        all_hit = True
        for fam, name in c.expected:
            topic, word = SIPDOCTOR_EQUIVALENT.get(name or fam, ("", ""))
            hit = [
                i for i, (t, _, title) in enumerate(got) if topic and t == topic and word in title
            ]
            used.update(hit)
            if not hit:
                all_hit = False
                s.missed[name or fam] += 1
        s.all_found += all_hit
        for name in c.optional:
            topic, word = SIPDOCTOR_EQUIVALENT.get(name, ("", ""))
            used.update(i for i, (t, _, title) in enumerate(got) if t == topic and word in title)
        for i, (topic, severity, title) in enumerate(got):
            if i not in used and severity != "info" and not topic.startswith(CALL_OUTCOME_TOPICS):
                s.invented[f"{topic}: {title[:40]}"] += 1
        s.changes_truth += len(c.changes)
        s.changes_right += _score_changes(c.changes, changes.get(c.flow.call_id, []))
    return scores


def print_scores(calls: list[Call], hw: dict[str, Score], sd: dict[str, Score] | None) -> None:
    truths = {c.scenario: c.expected for c in calls}
    print(f"{'scenario':<19}{'calls':>6}  {'anomalies by construction':<50}  hepwatch  sip-doctor")
    for name in sorted(truths):
        truth = ", ".join(n or f"{f} (any)" for f, n in truths[name]) or "none"
        h = hw[name]
        sd_txt = f"{sd[name].all_found:>4}/{sd[name].calls}" if sd else "-"
        print(f"{name:<19}{h.calls:>6}  {truth:<50}  {h.all_found:>4}/{h.calls:<4} {sd_txt}")
    for label, scores in (("hepwatch", hw), ("sip-doctor", sd)):
        if scores is None:
            continue
        missed = sum((s.missed for s in scores.values()), Counter())
        invented = sum((s.invented for s in scores.values()), Counter())
        truth = sum(s.changes_truth for s in scores.values())
        right = sum(s.changes_right for s in scores.values())
        print(f"\n{label}:")
        print(f"  missed   : {dict(missed) or 'nothing'}")
        print(f"  invented : {dict(invented) or 'nothing'}")
        print(f"  session changes with the right method, intent and status: {right}/{truth}")


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--capture", type=Path, help="analyze this file instead of generating one")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hepwatch-bench-analyze"))
    ap.add_argument("--sipdoctor-venv", type=Path, default=ROOT / "bench" / ".venv-sipdoctor")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    calls: list[Call] = []
    if args.capture:
        capture = args.capture
    else:
        calls = make_calls(args.calls, args.seed)
        capture = args.workdir / f"calls{args.calls}.pcap"
        packets = write_capture(calls, capture)
        size = capture.stat().st_size / 1e6
        print(f"capture: {capture} ({len(calls)} calls, {packets} HEP packets, {size:.1f} MB)")

    try:
        sd_exe: Path | None = sipdoctor_bin(args.sipdoctor_venv)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"sip-doctor could not be installed: {exc}", file=sys.stderr)
        sd_exe = None
    hw_cmd = [sys.executable, "-m", "hepwatch.cli", "analyze", str(capture), "--json"]
    sd_cmd = [str(sd_exe), "read", str(capture), "--json"] if sd_exe else []
    hw_out = args.workdir / "hepwatch.json"
    sd_out = args.workdir / "sipdoctor.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(args.workdir / "pycache")
    for cmd, out in ((hw_cmd, hw_out), (sd_cmd, sd_out)):
        if cmd:
            timed(cmd, out, env)  # warm-up: fills the bytecode cache, not counted
    hw_runs: list[tuple[float, float]] = []
    sd_runs: list[tuple[float, float]] = []
    hw_rc = sd_rc = 0
    for _ in range(args.repeat):  # alternate, so both see the same load on a shared machine
        wall, cpu, hw_rc = timed(hw_cmd, hw_out, env)
        hw_runs.append((wall, cpu))
        if sd_cmd:
            wall, cpu, sd_rc = timed(sd_cmd, sd_out, env)
            sd_runs.append((wall, cpu))
    cpu_name = platform.processor() or platform.machine()
    print(f"machine: {cpu_name}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("both tools with bytecode caches (one untimed warm-up run each), best of the runs")
    print(f"hepwatch analyze --json: {_fmt(hw_runs)}  rc {hw_rc}")
    if sd_runs:
        print(f"sip-doctor read --json : {_fmt(sd_runs)}  rc {sd_rc}")
        wall_ratio = min(w for w, _ in sd_runs) / min(w for w, _ in hw_runs)
        cpu_ratio = min(c for _, c in sd_runs) / min(c for _, c in hw_runs)
        verdict = "met" if wall_ratio >= 5 else "not met"
        print(
            f"speed: hepwatch is {wall_ratio:.2f}x as fast as sip-doctor (wall), "
            f"{cpu_ratio:.2f}x (CPU); target >= 5x: {verdict}"
        )

    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    hw = json.loads(hw_out.read_text())
    sd = json.loads(sd_out.read_text()) if sd_runs and sd_rc == 0 else None
    st = hw["stats"]
    print(
        f"hepwatch: {st['packets']} packets, {hw['messages']} messages, {len(hw['dialogs'])} "
        f"dialogs, {len(hw['session_changes'])} session changes, {len(hw['anomalies'])} "
        f"anomalies, rejected {st['rejected'] or 'none'}"
    )
    if sd is not None:
        n_find = sum(len(d.get("findings", [])) for d in sd.get("dialogs", []))
        print(f"sip-doctor: {len(sd.get('dialogs', []))} dialogs, {n_find} findings")
    if calls:
        print()
        hw_scores = score_hepwatch(calls, hw)
        sd_scores = score_sipdoctor(calls, sd) if sd is not None else None
        print_scores(calls, hw_scores, sd_scores)
    return 0 if hw_rc == 0 else 1


def timed(cmd: list[str], out: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system of the child) and exit code of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as fh:
        t = time.perf_counter()
        run = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, env=env, check=False)
        rc = run.returncode
        wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, rc


def _fmt(runs: list[tuple[float, float]]) -> str:
    walls = " ".join(f"{w:.2f}" for w, _ in runs)
    best_wall = min(w for w, _ in runs)
    best_cpu = min(c for _, c in runs)
    return f"best {best_wall:.3f} s wall, {best_cpu:.3f} s CPU  (wall of each run: {walls})"


if __name__ == "__main__":
    sys.exit(main())
