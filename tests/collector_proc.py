"""Runs `hepwatch collect` as a real subprocess for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kafka_broker import free_port


class CollectorProcess:
    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        topic: str,
        *,
        extra_toml: str = "",
        listeners: tuple[str, ...] = ("udp", "tcp"),
        message_timeout_ms: int = 3000,
    ) -> None:
        self.workdir = workdir
        self.udp_port = free_port(2)
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.metrics_port = free_port()
        urls = {
            "udp": f"udp://127.0.0.1:{self.udp_port}",
            "tcp": f"tcp://127.0.0.1:{self.tcp_port}",
            "tls": f"tls://127.0.0.1:{self.tls_port}",
        }
        listen = ", ".join(f'"{urls[k]}"' for k in listeners)
        self.config = workdir / "hepwatch.toml"
        self.config.write_text(
            f"""
[collector]
listen = [{listen}]
node_name = "test-node"
{extra_toml}
[kafka]
bootstrap = "{bootstrap}"
topic = "{topic}"
message_timeout_ms = {message_timeout_ms}
linger_ms = 2
[spool]
dir = "{workdir / "spool"}"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
"""
        )
        self.log = workdir / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hepwatch.cli", "--config", str(self.config), "collect"],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-3000:]}")
            try:
                self.http("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("collector did not come up: " + self.log.read_text()[-3000:])

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of one metric whose labels include `labels`."""
        _, text = self.http("/metrics")
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def wait_metric(
        self, name: str, at_least: float, timeout: float = 20.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout
        value = self.metric(name, **labels)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.metric(name, **labels)
        return value

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the collector flushes everything accepted before it exits."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
