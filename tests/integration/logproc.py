"""A child process for the event-log contract tests: produces or consumes until it is killed.

    python -m tests.integration.logproc produce <backend> <where> <prefix> <topic>
        produces records "0", "1", ... and prints each offset once it is acknowledged
    python -m tests.integration.logproc consume <backend> <where> <prefix> <topic> <group> <commit_every>
        consumes, commits every N records: prints `committing <values>` before and `committed` after
"""

from __future__ import annotations

import asyncio
import sys

from runtime.eventlog import kafka_log_class
from runtime.eventlog.base import EventLog


def open_log(backend: str, where: str, prefix: str) -> EventLog:
    if backend in ("kafka", "librdkafka"):  # librdkafka: Kafka, records sent through librdkafka
        return kafka_log_class("librdkafka" if backend == "librdkafka" else "aiokafka")(
            where, default_partitions=4, prefix=prefix)
    from runtime.eventlog.sqlite import SqliteEventLog

    return SqliteEventLog(where, default_partitions=4)


async def produce(log: EventLog, topic: str) -> None:
    i = 0
    async with log:
        print("ready", flush=True)
        while True:
            # a handful in flight at once, as concurrent pings are
            batch = [log.produce(topic, str(i + j).encode(), key=f"k{(i + j) % 7}".encode()) for j in range(8)]
            for j, (partition, offset) in enumerate(await asyncio.gather(*batch)):
                print(f"acked {i + j} {partition} {offset}", flush=True)
            i += 8


async def consume(log: EventLog, topic: str, group: str, commit_every: int) -> None:
    async with log:
        consumer = log.consumer([topic], group=group)
        await consumer.start()
        print("ready", flush=True)
        pending: list[bytes] = []
        while True:
            for record in await consumer.getmany(max_records=commit_every - len(pending), timeout_ms=200):
                pending.append(record.value)
                if len(pending) >= commit_every:
                    # a kill can land between commit and print: say what is being committed first
                    print("committing " + ",".join(v.decode() for v in pending), flush=True)
                    await consumer.commit()
                    print("committed", flush=True)
                    pending.clear()


def main() -> None:
    action, backend, where, prefix, topic, *rest = sys.argv[1:]
    log = open_log(backend, where, prefix)
    if action == "produce":
        asyncio.run(produce(log, topic))
    else:
        asyncio.run(consume(log, topic, rest[0], int(rest[1])))


if __name__ == "__main__":
    main()
