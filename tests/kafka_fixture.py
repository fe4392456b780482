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
import uuid

import pytest

from runtime.eventlog.kafka import KafkaEventLog
from runtime.kafkabroker import Broker


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
    log = KafkaEventLog(kafka_bootstrap, default_partitions=4, prefix=kafka_prefix)
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
