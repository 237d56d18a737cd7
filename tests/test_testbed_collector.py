"""Real Kamailio siptrace into `hepwatch collect`: every mirrored message is in Kafka.

Runs the shared testbed (Kamailio 5.6 proxying SIPp calls, mirroring every datagram it
receives and sends as HEPv3 over UDP) against the collector. Ground truth is SIPp's own
message logs: on loopback the proxy receives every message a SIPp side sent (one in-copy
each) and sent every message a SIPp side received (one out-copy each), so the mirror holds
exactly sent + received messages per scenario.

Skips with the reason when ../shared, kamailio or sipp is missing, or when the testbed's
fixed SIP ports are taken.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from collector_proc import CollectorProcess
from kafka_broker import TansuBroker, consume, drain_extra

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCENARIOS = ("a-basic-call", "e2-glare-crossing", "g-update-early-481", "i-session-timer")


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sipp_messages(run_dir: Path) -> Counter[str]:
    """(call-id, first line, CSeq) of every message SIPp logged as sent or received."""
    out: Counter[str] = Counter()
    for log in run_dir.glob("runs/*/*_messages.log"):
        text = log.read_text(errors="replace")
        for block in re.split(r"\n-{10,}[^\n]*\n", "\n" + text):
            m = re.search(r"message (?:sent|received)[^\n]*:\s*\n\s*\n?(.*)", block, re.S)
            if not m:
                continue
            msg = m.group(1).lstrip()
            first = msg.split("\n", 1)[0].strip()
            cid = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", msg, re.M | re.I)
            cseq = re.search(r"^CSeq\s*:\s*(.+?)\s*$", msg, re.M | re.I)
            if cid and cseq:
                out[f"{cid.group(1)}|{first}|{cseq.group(1)}"] += 1
    return out


def _hep_sip(value: bytes) -> bytes:
    from collector.hep.fast import decode

    return decode(value).payload


def test_kamailio_mirror_reaches_kafka(tmp_path: Path, broker: TansuBroker, shared: Path) -> None:
    testbed = shared / "testbed"
    for tool in ("kamailio", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs it when run as root)")
    for port in (5060, 5070, 5080):
        if not _udp_port_free(port):
            pytest.skip(f"udp 127.0.0.1:{port} is busy (another Kamailio or SIPp is running)")

    topic = f"tb-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    col = CollectorProcess(tmp_path, broker.bootstrap, topic, listeners=("udp",))
    col.start()
    run_dir = tmp_path / "testbed"
    env = {
        **os.environ,
        "TESTBED_RUN_DIR": str(run_dir),
        "HEP_PORT": str(col.udp_port),
        "ST_REFRESH_MS": "1000",
    }
    try:
        # Kamailio signals its whole process group when it stops: give it a session of its own.
        up = subprocess.run(
            [str(testbed / "up.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
        )
        assert up.returncode == 0, up.stderr
        try:
            for name in SCENARIOS:
                res = subprocess.run(
                    [str(testbed / "run-scenario.sh"), name],
                    env={**env, "CHECK_HEP": "0"},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert res.returncode == 0, f"{name}: {res.stdout}\n{res.stderr}"
        finally:
            subprocess.run([str(testbed / "down.sh")], env=env, capture_output=True, timeout=60)

        expected = _sipp_messages(run_dir)
        total = sum(expected.values())
        assert total > 50
        col.wait_metric("hepwatch_collector_accepted_packets_total", total, timeout=30)
        consumer = broker.consumer(topic)
        msgs = consume(consumer, total, 60) + list(drain_extra(consumer, 2.0))
        consumer.close()
        assert col.metric("hepwatch_collector_rejected_packets_total") == 0
    finally:
        col.stop()

    got: Counter[str] = Counter()
    for m in msgs:
        sip = _hep_sip(m.value()).decode("latin-1")
        first = sip.split("\r\n", 1)[0].strip()
        cid = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", sip, re.M | re.I)
        cseq = re.search(r"^CSeq\s*:\s*(.+?)\s*$", sip, re.M | re.I)
        assert cid and cseq
        assert m.key().decode() == cid.group(1)  # keyed by Call-ID
        assert dict(m.headers())["hep.version"] == b"3"
        got[f"{cid.group(1)}|{first}|{cseq.group(1)}"] += 1
    assert got == expected
