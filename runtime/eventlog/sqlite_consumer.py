"""Reading the embedded log: a consumer over the SQLite file, with group offsets kept in it.

A consumer group here owns every partition of its topics: the embedded mode runs
one process per service; scale-out is what the Kafka backend is for. The consumers of one log
object share their reads of the file (``sqlite_reads.py``): one SELECT serves all those close behind
each other, each keeping its own position and group.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from .base import Consumer, Record, TopicPartition
from .sqlite_db import WriteLock, connect

_offset_of = operator.itemgetter(2)

_COMMIT_SQL = ("INSERT INTO group_offsets(grp, topic, partition, offset) VALUES {} "
               "ON CONFLICT(grp, topic, partition) DO UPDATE SET offset=excluded.offset")
_POLL_S = 0.05  # how often an idle consumer looks for records of other processes when no heads are published
FULL_READ_S = 1.0  # a consumer asks SQLite for every partition at least this often, whatever the heads say


class SqliteConsumer(Consumer):
    def __init__(self, log_, topics: list[str], group: str | None, *, from_end: bool = False) -> None:
        self._log = log_
        self._from_end = from_end
        self._topics = topics
        self._group = group
        self._conn: sqlite3.Connection | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-log-reader")
        self._positions: dict[TopicPartition, int] = {}
        self._write_lock: WriteLock | None = None  # taken around offset commits (sqlite_db.WriteLock)
        self._full_read_at = 0.0  # when every partition is read next (see _wanted)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def start(self) -> None:
        for topic in self._topics:
            for p in await self._log.partitions(topic):
                self._positions[TopicPartition(topic, p)] = 0
        self._conn = await self._run(connect, self._log.path)
        if self._from_end:
            self._positions.update(await self.end_offsets())
        if self._group is not None:
            rows = await self._run(
                lambda: self._conn.execute(
                    "SELECT topic, partition, offset FROM group_offsets WHERE grp=?", (self._group,)
                ).fetchall()
            )
            for topic, partition, offset in rows:
                tp = TopicPartition(topic, partition)
                if tp in self._positions:
                    self._positions[tp] = offset
        self._log.shared_reads.join(self, self._positions)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def _wanted(self) -> tuple[list[tuple[TopicPartition, int]], dict]:
        """The partitions to read, at their positions, and the published heads (``PublishedHeads``) that said so:
        those whose published head is past this consumer's position; every partition once every
        ``FULL_READ_S``, and whenever no heads were published. A partition the heads leave out has had no record
        since they were first published (a writer adds each partition it writes to them)."""
        now = time.monotonic()
        heads = self._log.published_heads.get()
        if not heads or now >= self._full_read_at:
            self._full_read_at = now + FULL_READ_S
            return list(self._positions.items()), heads
        return [(tp, position) for tp, position in self._positions.items() if heads.get(tp, 0) > position], heads

    def _read(self, wanted: list[tuple[TopicPartition, int]], max_records: int) -> list[tuple[TopicPartition, list]]:
        """The records read, per partition."""
        out: list[tuple[TopicPartition, list[Record]]] = []
        reads = self._log.shared_reads
        n = 0
        for tp, position in wanted:
            if n >= max_records:
                break
            got = reads.read(self._conn, self, tp, position, max_records - n)
            if got:
                out.append((tp, got))
                n += len(got)
        return out

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            wanted, heads = self._wanted()
            read = await self._run(self._read, wanted, max_records) if wanted else []
            if read:
                records: list[Record] = []
                for tp, got in read:  # the positions per partition read, not per record
                    self._positions[tp] = _offset_of(got[-1]) + 1
                    records += got
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if heads:  # woken when they move for these topics (or at the next full read)
                await self._log.wait_written(min(max(0.0, self._full_read_at - time.monotonic()), remaining),
                                             self._topics, heads)
            else:
                await self._log.wait_written(min(_POLL_S, remaining), self._topics)

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self._group is None:
            return
        offsets = dict(self._positions if offsets is None else offsets)
        if not offsets:
            return

        # One statement, so one transaction and one fsync for all the partitions (the connection is in
        # autocommit: executemany would commit, and fsync, row by row, the write lock held throughout).
        params = [field for tp, off in offsets.items() for field in (self._group, tp.topic, tp.partition, off)]
        sql = _COMMIT_SQL.format(",".join(["(?,?,?,?)"] * len(offsets)))

        def run() -> None:
            if self._write_lock is None:
                self._write_lock = WriteLock(self._log.path)
            with self._write_lock:
                self._conn.execute(sql, params)

        await self._run(run)

    async def positions(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        def run() -> dict[TopicPartition, int]:
            out = {}
            for tp in self._positions:
                (end,) = self._conn.execute(
                    "SELECT COALESCE(MAX(offset) + 1, 0) FROM records WHERE topic=? AND partition=?", tp
                ).fetchone()
                out[tp] = end
            return out

        return await self._run(run)

    async def close(self) -> None:
        self._log.shared_reads.leave(self)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        if self._write_lock is not None:
            self._write_lock.close()
        self._reader.shutdown(wait=True)
