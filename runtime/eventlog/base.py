"""The event-log interface every service talks to; SQLite and Kafka implement it.

Contract (tests/integration/test_eventlog_contract.py runs it on both):
- ``produce`` returns only once the record is durable (fsynced SQLite
  transaction / Kafka acks=all), with the partition and offset it got.
- Records with the same key land in the same partition, in produce order.
- A consumer in a group reads from its group's committed offsets (the
  beginning when there are none); what it does not commit is read again by
  the next consumer of that group.
- A consumer with ``group=None`` reads every partition from the beginning and
  commits nothing (used to rebuild in-memory views such as the registry).
- ``from_end=True``: where a group has no committed offset (or with ``group=None``)
  the consumer starts at the end instead (a new notifier never replays history).
"""

from __future__ import annotations

import abc
import asyncio
import functools
import zlib
from typing import Callable, NamedTuple


class LogUnavailable(Exception):
    """The log could not durably accept a record (broker down, disk full, ...)."""


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


# A Record from a tuple in its field order, by tuple's C constructor (a NamedTuple's own is a Python
# function, a visible cost at hundreds of thousands of records a second).
as_record = functools.partial(tuple.__new__, Record)


class TopicPartition(NamedTuple):
    topic: str
    partition: int


def partition_for(key: bytes, partitions: int) -> int:
    """Stable key → partition mapping used by the embedded log."""
    return zlib.crc32(key) % partitions


class Consumer(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout_ms`` for the first."""

    @abc.abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit next-offsets to read; ``None`` commits everything returned so far."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    async def positions(self) -> dict[TopicPartition, int]:
        """The next offset this consumer returns, per assigned partition (where it starts, before
        anything was read: its group's committed offset, or the beginning or end)."""
        raise NotImplementedError

    @abc.abstractmethod
    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to be written on each assigned partition (for lag and catch-up)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> "Consumer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class EventLog(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @property
    def unavailable(self) -> str | None:
        """Why the log cannot take records now (its broker is known to be away), or None."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        """Write one record durably; returns (partition, offset). Raises LogUnavailable."""

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future:
        """``produce`` as a future instead of a coroutine (the edge's fast ping path waits on
        thousands of these at once and a future is cheaper than a task)."""
        return asyncio.ensure_future(self.produce(topic, value, key, partition))

    @abc.abstractmethod
    async def partitions(self, topic: str) -> list[int]: ...

    @abc.abstractmethod
    def consumer(self, topics: list[str], group: str | None, *, from_end: bool = False) -> Consumer:
        """``from_end``: where there is no committed offset (a new group; with ``group=None``,
        everywhere) start at the end of the partition instead of its beginning."""

    # A consumer group's journal: per partition, the last batch it cut, (topic, partition, first offset, last offset,
    # token), written before the batch's effects (the projector's, projector/replay.py). A log that keeps one
    # returns True and a list; one that does not (Kafka: ClickHouse keeps it there) False and None.
    async def write_journal(self, group: str, entries: list[tuple[str, int, int, int, str]]) -> bool:
        return False

    async def read_journal(self, group: str) -> list[tuple[str, int, int, int, str]] | None:
        return None

    async def read_to_end(self, topic: str, apply: Callable[[list[Record]], None], max_records: int = 50_000) -> int:
        """Every record of ``topic``, from its beginning to its end as of the call, read by a consumer of no
        group (a compacted topic read back at start): ``apply`` gets the records of each read, in order per
        partition. Returns how many were read."""
        read = 0
        async with self.consumer([topic], group=None) as consumer:
            end = await consumer.end_offsets()
            seen = {tp: 0 for tp in end}
            while any(seen[tp] < offset for tp, offset in end.items()):
                records = await consumer.getmany(max_records=max_records, timeout_ms=200)
                for r in records:
                    seen[TopicPartition(r.topic, r.partition)] = r.offset + 1
                apply(records)
                read += len(records)
        return read

    async def __aenter__(self) -> "EventLog":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
