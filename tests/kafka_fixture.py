"""The real Kafka broker for tests: never a mock.

- ``PINGSTREAM_KAFKA`` set: that cluster is used.
- Otherwise the project's own single-node KRaft broker (runtime.kafkabroker)
  is started once per session on free loopback ports, and stopped at the end.
- Every test gets its own topic prefix, so tests sharing the broker never see
  each other's records.
- A test that needs Kafka and was skipped fails the run (tests/conftest.py): CI must really run them.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from runtime.eventlog.kafka import KafkaEventLog
from runtime.kafkabroker import Broker, stop_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """The session's own broker, or None when PINGSTREAM_KAFKA names an external one."""
    if os.environ.get("PINGSTREAM_KAFKA"):
        yield None
        return
    broker = Broker(tmp_path_factory.mktemp("kafka"), partitions=8)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker) -> str:
    return os.environ.get("PINGSTREAM_KAFKA") or kafka_broker.bootstrap


@pytest.fixture
def kafka_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def kafka_log(kafka_bootstrap, kafka_prefix):
    # Two producers (lanes, each with its half of the partitions), as a deployed edge has.
    log = KafkaEventLog(kafka_bootstrap, default_partitions=4, prefix=kafka_prefix, producers=2)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
def own_kafka_broker(tmp_path):
    """A broker of this test's own, for tests that stop and start it (fault injection)."""
    broker = Broker(tmp_path / "own-kafka", partitions=4)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class LaunchedBroker:
    """The broker launcher as a user runs it, ``python -m runtime.kafkabroker run --dir D``, in a process
    of its own: ``stop()`` sends it SIGTERM (it stops the broker cleanly), ``start()`` runs it again on
    the same directory, which must bring the broker back on the same data, cluster id and port."""

    def __init__(self, workdir) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.bootstrap: str | None = None
        self.output: list[str] = []

    def start(self, timeout_s: float = 120.0) -> "LaunchedBroker":
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.kafkabroker", "run", "--dir", str(self.workdir)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError("the broker launcher printed no PINGSTREAM_KAFKA=:\n" + "".join(self.output[-30:]))
            self.output.append(line)
            if line.startswith("PINGSTREAM_KAFKA="):
                bootstrap = line.split("=", 1)[1].strip()
                assert self.bootstrap in (None, bootstrap), f"restarted on {bootstrap}, was {self.bootstrap}"
                self.bootstrap = bootstrap
                return self

    def stop(self, timeout_s: float = 60.0) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout_s)  # a killed launcher takes its broker along (it dies with its parent)


@pytest.fixture
def launched_broker(tmp_path):
    """A broker of this test's own, run through the launcher, stopped at the end even on failure."""
    broker = LaunchedBroker(tmp_path / "launched-kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
