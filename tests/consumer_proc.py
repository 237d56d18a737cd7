"""`hepwatch consume` as a subprocess for integration tests (sink and state in a temp dir).

Defaults suit short tests: checkpoints every 0.5 s, a 6 s session timeout (tansu), idle
partitions following the wall clock after 0.5 s, and T1 = 50 ms so ended calls are reported
3.2 s after their end; `env` overrides any of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kafka_broker import TansuBroker

ROOT = Path(__file__).resolve().parents[1]
HEPWATCH = str(Path(sys.executable).with_name("hepwatch"))


class ConsumerProc:
    def __init__(
        self,
        broker: TansuBroker,
        topic: str,
        group: str,
        tmp: Path,
        env: dict[str, str] | None = None,
    ) -> None:
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
            f"jsonl:{tmp / 'out'}",
            "--state-dir",
            str(tmp / "state"),
            "--metrics",
            "",
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
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProc:
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err.decode()
        return err.decode()
