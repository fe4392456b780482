"""An in-memory consumer for unit tests of the consumer shell and batch policies.

Behaves as the embedded log's group consumer: owns every partition, reads
from the committed offsets, hands out one partition's records before the
next one's, waits up to ``timeout_ms`` for records to arrive. Integration
tests use the real SQLite log and a real Kafka broker instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from runtime.eventlog.base import Consumer, Record, TopicPartition

TOPIC = "pingstream.pings"


class FakeConsumer(Consumer):
    def __init__(self, partitions: int = 1, committed: dict[TopicPartition, int] | None = None) -> None:
        self.logs: dict[TopicPartition, list[Record]] = {TopicPartition(TOPIC, p): [] for p in range(partitions)}
        self.committed: dict[TopicPartition, int] = {tp: 0 for tp in self.logs} | dict(committed or {})
        self.read_to = dict(self.committed)  # the next offset read, per partition
        self.assigned: set[TopicPartition] = set(self.logs)
        self.commits: list[dict[TopicPartition, int]] = []  # every commit, in order
        self.reads = 0
        self.refuse_next_commit = False
        self._arrived = asyncio.Event()

    def append(self, partition: int, n: int = 1) -> list[Record]:
        """Write ``n`` records to ``partition``; offsets follow the last one."""
        records = self.logs[TopicPartition(TOPIC, partition)]
        new = [Record(TOPIC, partition, len(records) + i, None, b"x", 0) for i in range(n)]
        records += new
        self._arrived.set()
        return new

    @contextlib.asynccontextmanager
    async def trickling(self, per_tick: int = 1, every_s: float = 0.005, partition: int = 0) -> AsyncIterator[None]:
        """Within the block, ``per_tick`` records are written every ``every_s`` (a steady stream of pings)."""

        async def trickle() -> None:
            while True:
                self.append(partition, per_tick)
                await asyncio.sleep(every_s)

        writer = asyncio.create_task(trickle())
        try:
            yield
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def _read(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp in sorted(self.assigned):
            start = self.read_to[tp]
            got = self.logs[tp][start : start + max_records - len(out)]
            self.read_to[tp] = start + len(got)
            out += got
        return out

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        self.reads += 1
        await asyncio.sleep(0)  # a real read always waits on I/O: other tasks get their turn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            self._arrived.clear()
            records = self._read(max_records)
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return records
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.refuse_next_commit:
            self.refuse_next_commit = False
            raise RuntimeError("partitions were reassigned")
        offsets = dict(self.read_to if offsets is None else offsets)
        self.commits.append(offsets)
        self.committed.update(offsets)

    async def positions(self) -> dict[TopicPartition, int]:
        return {tp: self.read_to[tp] for tp in self.assigned}

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in self.assigned}


def offsets(records: list[Record]) -> list[tuple[int, int]]:
    """(partition, offset) of each record, in order."""
    return [(r.partition, r.offset) for r in records]
