"""`hepwatch run` as a real subprocess for tests and benchmarks: free ports, a data directory,
HEP senders over UDP and TCP, and queries through its ClickHouse HTTP endpoint.

Defaults suit short tests (`env` overrides them): flushes every 0.2 s, checkpoints every
0.5 s, stream time following the wall clock after 0.5 s idle, and T1 = 50 ms so ended calls
are reported 3.2 s after their end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hepbuild import hep3
from kafka_broker import free_port

from consumers.observation import Observation

ROOT = Path(__file__).resolve().parents[1]
HEPWATCH = str(Path(sys.executable).with_name("hepwatch"))

FAST_ENV = {
    "HEPWATCH_CLICKHOUSE__FLUSH_INTERVAL_S": "0.2",
    "HEPWATCH_CONSUMER__CHECKPOINT_INTERVAL_S": "0.5",
    "HEPWATCH_CONSUMER__IDLE_ADVANCE_S": "0.5",
    "HEPWATCH_CONSUMER__T1_MS": "50",
    "HEPWATCH_ALERTS__INTERVAL_S": "3600",
}


class RunProc:
    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        config: Path | None = None,
        extra_args: Sequence[str] = (),
        fast: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.query_port = free_port()
        self.metrics_port = free_port()
        self.config = config
        self.extra_args = list(extra_args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(FAST_ENV if fast else {}),
                    **(env or {})}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-run.log"
        self.out = data_dir.parent / f"{data_dir.name}-run.out"
        self.auth: tuple[str, str] | None = None

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def args(self) -> list[str]:
        head = [HEPWATCH]
        if self.config is not None:
            head += ["--config", str(self.config)]
        return [
            *head,
            "run",
            "--listen",
            f"udp://127.0.0.1:{self.udp_port}",
            "--listen",
            f"tcp://127.0.0.1:{self.tcp_port}",
            "--data-dir",
            str(self.data_dir),
            "--query-http",
            f"127.0.0.1:{self.query_port}",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> RunProc:
        with self.log.open("ab") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args(), env=self.env, cwd=ROOT, stdout=out, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hepwatch run exited: {self.log_tail()}")
            if "hepwatch run is up" in self.out.read_text():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("hepwatch run did not come up: " + self.log_tail())

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: run stores everything received and checkpoints before exiting."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- input -----------------------------------------------------------------------------

    def send_udp(self, packets: Iterable[bytes], pace_every: int = 200) -> int:
        n = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for pkt in packets:
                sock.sendto(pkt, ("127.0.0.1", self.udp_port))
                n += 1
                if pace_every and n % pace_every == 0:
                    time.sleep(0.001)  # a test must not depend on a socket buffer's size
        return n

    def send_tcp(self, packets: Iterable[bytes]) -> int:
        data = list(packets)
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=10) as sock:
            sock.sendall(b"".join(data))
        return len(data)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (every label set) on the metrics endpoint."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        total = 0.0
        with urllib.request.urlopen(url, timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                key, _, value = line.rpartition(" ")
                if key == name or key.startswith(name + "{"):
                    total += float(value)
        return total

    # -- queries ---------------------------------------------------------------------------

    def http(
        self,
        query: str | None = None,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/",
    ) -> tuple[int, dict[str, str], bytes]:
        q = dict(params or {})
        if query is not None:
            q["query"] = query
        url = self.query_url + path + ("?" + urllib.parse.urlencode(q) if q else "")
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """JSONEachRow rows of a query (params bound server-side as param_<name>)."""
        binds = {f"param_{k}": str(v) for k, v in params.items()}
        status, _, body = self.http(query, params={"default_format": "JSONEachRow", **binds})
        if status != 200:
            raise AssertionError(f"query failed ({status}): {body.decode(errors='replace')}")
        return [json.loads(line) for line in body.decode().splitlines() if line]

    def scalar(self, query: str, **params: Any) -> Any:
        rows = self.rows(query, **params)
        return next(iter(rows[0].values())) if rows else None

    def wait_for(self, query: str, expected: Any, timeout: float = 20.0, **params: Any) -> Any:
        deadline = time.monotonic() + timeout
        value = self.scalar(query, **params)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.scalar(query, **params)
        return value


def hep_packets(observations: Iterable[Observation], shift_us: int = 0) -> list[bytes]:
    """The observations as HEPv3 packets, capture times moved by `shift_us`."""
    out = []
    for o in sorted(observations, key=lambda o: o.ts_us):
        ts = o.ts_us + shift_us
        out.append(
            hep3(
                o.payload,
                src=o.src_ip,
                dst=o.dst_ip,
                sport=o.src_port,
                dport=o.dst_port,
                ts=divmod(ts, 1_000_000),
                capture_id=o.capture_id,
            )
        )
    return out


def now_shift(observations: Sequence[Observation], lead_s: float = 0.0) -> int:
    """The shift that puts the last observation `lead_s` before the wall clock."""
    last = max(o.ts_us for o in observations)
    return int((time.time() - lead_s) * 1e6) - last
