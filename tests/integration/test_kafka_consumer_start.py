"""A Kafka consumer started while its broker is away waits for it (runtime/eventlog/kafka_consumer.py): a
service whose broker went away between its log's start and its consumer's (the projector of
tests/e2e/test_faults.py, on a slow machine) ended with a traceback instead."""

from __future__ import annotations

import asyncio

from runtime.eventlog.base import LogUnavailable
from runtime.eventlog.kafka import KafkaEventLog
from schemas.events import TOPIC_PINGS


async def test_a_consumer_started_while_the_broker_is_away_joins_once_it_is_back(own_kafka_broker, caplog):
    log = KafkaEventLog(own_kafka_broker.bootstrap, default_partitions=4)
    await log.start()
    try:
        own_kafka_broker.stop()
        consumer = log.consumer([TOPIC_PINGS], group="waits-for-its-broker")
        starting = asyncio.create_task(consumer.start())
        await asyncio.sleep(4)
        assert not starting.done(), starting  # neither started nor ended with the broker's error
        assert any("not reachable for a consumer" in r.getMessage() for r in caplog.records)
        await asyncio.to_thread(own_kafka_broker.start)
        await asyncio.wait_for(starting, 60)
        try:
            for _ in range(120):  # the log's producer refuses records until its probe finds the broker back
                try:
                    await log.produce(TOPIC_PINGS, b"after the broker came back", key=b"k")
                    break
                except LogUnavailable:
                    await asyncio.sleep(0.5)
            got = []
            for _ in range(100):
                got += await consumer.getmany(timeout_ms=500)
                if got:
                    break
            assert [r.value for r in got] == [b"after the broker came back"]
        finally:
            await consumer.close()
    finally:
        await log.close()
