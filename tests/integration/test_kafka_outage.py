"""The Kafka event log through a broker outage: refused at once while the broker is away, a new
producer once it is back, nothing acknowledged that Kafka did not acknowledge. The broker is
stopped and started again with the launcher on its own directory (same data, cluster id, port)."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.eventlog import kafka_log_class
from runtime.eventlog.base import LogUnavailable
from runtime.eventlog.kafka import KafkaEventLog
from runtime.kafkabroker import Broker

TOPIC = "pingstream.pings"


async def _until(predicate, timeout_s: float, step_s: float = 0.05) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "timed out"
        await asyncio.sleep(step_s)
    return time.monotonic() - started


async def _send_ok(log: KafkaEventLog, value: bytes) -> bool:
    try:
        await log.send(TOPIC, value, key=b"k")
        return True
    except LogUnavailable:
        return False


async def test_it_refuses_at_once_while_the_broker_is_away_and_recovers_by_itself(launched_broker):
    log = KafkaEventLog(launched_broker.bootstrap, default_partitions=2, ack_timeout_s=10)
    await log.start()
    try:
        assert await _send_ok(log, b"before")
        first_producer = log._producer
        launched_broker.stop()
        # Found away within a couple of seconds (connection refused), though nothing was being sent.
        await _until(lambda: log.unavailable is not None, timeout_s=5)
        started = time.perf_counter()
        refused = [await _send_ok(log, b"during") for _ in range(100)]
        assert not any(refused)
        assert time.perf_counter() - started < 0.5, "refusals must not wait for an acknowledgement"
        launched_broker.start()
        back = time.monotonic()
        while not await _send_ok(log, b"after"):
            assert time.monotonic() - back < 10, f"not recovered: {log.unavailable}"
            await asyncio.sleep(0.1)
        assert log._producer is not first_producer  # a fresh producer id, sequences from 0
        assert log.unavailable is None
    finally:
        await log.close()


async def test_it_replaces_a_producer_aiokafka_gave_up_on(kafka_bootstrap, kafka_prefix):
    """aiokafka's idempotent producer ends its sender for good on OutOfOrderSequenceNumber (what a
    batch expired without a leader leaves behind after an outage) and fails every later send."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    log = KafkaEventLog(kafka_bootstrap, default_partitions=2, prefix=kafka_prefix, producers=2)
    await log.start()
    try:
        assert await _send_ok(log, b"before")
        lanes = list(log._producers)
        broken = lanes[1]  # the lane of key b"k" (partition 1 of 2); the other lane is replaced too
        broken._message_accumulator.fail_all(OutOfOrderSequenceNumber())  # the state aiokafka ends in
        assert not await _send_ok(log, b"broken")
        await _until(lambda: log._producers and not set(log._producers) & set(lanes), timeout_s=10)
        assert await _send_ok(log, b"after")
    finally:
        await log.close()


async def test_it_replaces_a_producer_librdkafka_reports_fatal(kafka_bootstrap, kafka_prefix):
    """librdkafka reports a fatal error (a fenced or out-of-sequence idempotent producer) to ``error_cb``, and
    every later record of that producer fails: the watch takes it down and a new one takes over."""
    from confluent_kafka import KafkaError

    from runtime.eventlog.rdkafka import RdKafkaEventLog

    log = RdKafkaEventLog(kafka_bootstrap, default_partitions=2, prefix=kafka_prefix)
    await log.start()
    try:
        assert await _send_ok(log, b"before")
        [lane] = log._producers
        lane._error(KafkaError(KafkaError._FENCED, "fenced (injected)", fatal=True))  # what error_cb receives
        await _until(lambda: not log._producers, timeout_s=5)
        assert not await _send_ok(log, b"while replaced")
        await _until(lambda: log._producers and log._producers[0] is not lane, timeout_s=10)
        assert await _send_ok(log, b"after")
    finally:
        await log.close()


@pytest.mark.parametrize("client", ["aiokafka", "librdkafka"])
async def test_close_is_bounded_while_the_broker_is_away(tmp_path, client):
    broker = Broker(tmp_path / "kafka", partitions=2).start()
    try:
        log = kafka_log_class(client)(broker.bootstrap, default_partitions=2)
        await log.start()
        assert await _send_ok(log, b"before")
        broker.kill()
        pending = [log.send(TOPIC, b"x", key=b"k") for _ in range(10)]
        started = time.monotonic()
        await log.close()
        assert time.monotonic() - started < 8
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, LogUnavailable) for r in results)
    finally:
        broker.stop()


def test_the_launcher_restarts_on_its_own_directory(tmp_path):
    broker = Broker(tmp_path / "kafka", partitions=2).start()
    cluster_id, port = broker.cluster_id(), broker.port
    broker.stop()
    again = Broker(tmp_path / "kafka", partitions=2)
    assert again._formatted and again.port == port
    try:
        again.start()
        assert again.cluster_id() == cluster_id
        meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
        assert f"cluster.id={cluster_id}" in meta
    finally:
        again.stop()
