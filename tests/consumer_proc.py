"""`hepwatch consume` as a subprocess for integration tests (sink and state in a temp dir).

Defaults suit short tests: checkpoints every 0.5 s, a 6 s session timeout (tansu), idle
partitions following the wall clock after 0.5 s, and T1 = 50 ms so ended calls are reported
3.2 s after their end; `env` overrides any of them. `sink` replaces the default
`jsonl:<tmp>/out` (for example `clickhouse:chdb:///<dir>`); `metrics_port` serves the
consumer's metrics there, read back with `metrics()`. The consumer's log goes to a file in
`tmp` (a pipe left unread could fill up and block it); `stop()` and `log()` return it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

from kafka_broker import TansuBroker
from prometheus_client.parser import text_string_to_metric_families

from consumers.partitioned import CLOSE_TIMEOUT_S, CLOSE_WATCHDOG_GRACE_S

ROOT = Path(__file__).resolve().parents[1]
HEPWATCH = str(Path(sys.executable).with_name("hepwatch"))
_serial = itertools.count(1)
# What faulthandler writes when the close watchdog (consumers/partitioned.py) fires.
WATCHDOG_MARK = f"Timeout (0:00:{CLOSE_TIMEOUT_S + CLOSE_WATCHDOG_GRACE_S:02.0f})!"


class ConsumerProc:
    def __init__(
        self,
        broker: TansuBroker,
        topic: str,
        group: str,
        tmp: Path,
        env: dict[str, str] | None = None,
        sink: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.metrics_port = metrics_port
        self.args = [
            HEPWATCH,
            "consume",
            "--kafka",
            broker.bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--sink",
            sink or f"jsonl:{tmp / 'out'}",
            "--state-dir",
            str(tmp / "state"),
            "--metrics",
            f"127.0.0.1:{metrics_port}" if metrics_port else "",
        ]
        self.env = {
            **os.environ,
            "HEPWATCH_CONSUMER__CHECKPOINT_INTERVAL_S": "0.5",
            "HEPWATCH_CONSUMER__SESSION_TIMEOUT_MS": "6000",
            "HEPWATCH_CONSUMER__IDLE_ADVANCE_S": "0.5",
            # 64*T1 = 3.2 s: ended calls are reported after that much stream time
            "HEPWATCH_CONSUMER__T1_MS": "50",
            **(env or {}),
        }
        self.log_path = tmp / f"consume-{next(_serial)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProc:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Where it hangs: the consumer writes every thread's stack to its log on SIGUSR1.
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"consumer did not stop within 30 s of SIGTERM; its log:\n{self.log()[-20000:]}"
            ) from None
        err = self.log()
        if self.proc.returncode == 1 and WATCHDOG_MARK in err:
            # librdkafka's close kept the interpreter lock (seen during a rebalance) and the
            # close watchdog ended the process after everything was checkpointed: a bounded
            # stop, which is what the product promises; the test goes on to check the output.
            warnings.warn(f"consumer ended by the close watchdog:\n{err[-4000:]}", stacklevel=2)
            return err
        assert self.proc.returncode == 0, err
        return err

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the consumer's /metrics: (name, sorted labels) -> value; {} while
        it does not answer yet."""
        assert self.metrics_port is not None, "started without metrics_port"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out
