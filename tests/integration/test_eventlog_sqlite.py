"""What only the embedded SQLite log has: its group-commit writer task."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.eventlog.base import LogUnavailable
from runtime.eventlog.sqlite import SqliteEventLog


class WriterCrash(BaseException):
    """Not an Exception: escapes the writer's handling of failed writes, as a bug would."""


async def test_a_dead_writer_fails_waiting_produces_instead_of_hanging(tmp_path, monkeypatch):
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    try:
        assert await log.produce("t", b"kept") == (0, 0)

        def crash(batch):
            raise WriterCrash("boom")

        monkeypatch.setattr(log, "_write_batch", crash)
        waiting = [asyncio.ensure_future(log.produce("t", f"{i}".encode())) for i in range(50)]
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(isinstance(r, LogUnavailable) for r in results), results
        with pytest.raises(LogUnavailable, match="writer stopped"):
            await log.produce("t", b"after")
    finally:
        await log.close()
    reopened = SqliteEventLog(tmp_path / "log.sqlite3")
    async with reopened:
        consumer = reopened.consumer(["t"], group=None)
        await consumer.start()
        records = await consumer.getmany(timeout_ms=100)
        await consumer.close()
    assert [r.value for r in records] == [b"kept"]  # what was acknowledged is there, nothing else


async def test_other_work_on_the_connection_gets_turns_under_sustained_produce_load(tmp_path):
    """The writer thread commits batch after batch on its own while produces keep coming; it still
    yields the connection regularly, so a compaction or a new topic does not wait for the load to stop."""
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    stop = asyncio.Event()
    acked = 0

    async def producer(n: int) -> None:
        nonlocal acked
        while not stop.is_set():
            await log.produce("t", b"x", key=f"k{n}".encode())
            acked += 1

    producers = [asyncio.create_task(producer(n)) for n in range(64)]
    try:
        await asyncio.sleep(0.3)
        before = acked
        assert await asyncio.wait_for(log.partitions("another-topic"), 2) == [0]
        assert await asyncio.wait_for(log.compact("t"), 2) >= 0
        assert acked > before  # the load was really going on meanwhile
    finally:
        stop.set()
        await asyncio.gather(*producers)
        await log.close()
    reopened = SqliteEventLog(tmp_path / "log.sqlite3")
    async with reopened:
        consumer = reopened.consumer(["t"], group=None)
        await consumer.start()
        end = await consumer.end_offsets()
        await consumer.close()
    assert sum(end.values()) == acked  # offsets run on past compaction: every acknowledged record was written



async def test_close_during_a_commit_with_more_queued_still_writes_all_and_returns(tmp_path, monkeypatch):
    """close() arriving while the writer thread is busy, with a produce queued behind that commit,
    writes the produce and returns: the writer loop must not sleep through the close."""
    log = SqliteEventLog(tmp_path / "log.sqlite3")
    await log.start()
    gate = threading.Event()
    drain = log._drain

    def held_drain(loop):
        drain(loop)
        gate.wait(5)  # the writer thread is still busy while the test queues more and closes

    monkeypatch.setattr(log, "_drain", held_drain)
    first = asyncio.ensure_future(log.produce("t", b"a"))
    assert await asyncio.wait_for(first, 5) == (0, 0)
    queued = asyncio.ensure_future(log.produce("t", b"b"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(log.close())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(closing, 5)
    assert await queued == (0, 1)


async def test_two_writers_on_one_file_never_share_an_offset(tmp_path, monkeypatch):
    """Each log writes a batch as one INSERT after the partition head it last committed; when the
    other log wrote there meanwhile the offsets collide, nothing is written, and the batch goes the
    locked way. Both logs' records end up contiguous, each once, where produce said."""
    locked = []
    original = SqliteEventLog._write_locked
    monkeypatch.setattr(SqliteEventLog, "_write_locked", lambda self, batch: locked.append(len(batch)) or original(self, batch))
    path = tmp_path / "log.sqlite3"
    a, b = SqliteEventLog(path), SqliteEventLog(path)
    await a.start()
    await b.start()
    placed = {}
    try:
        for rnd in range(30):
            values = [f"{w}{rnd}:{i}".encode() for w in "ab" for i in range(8)]
            logs = [a if v.startswith(b"a") else b for v in values]
            results = await asyncio.gather(*(log.produce("t", v, key=b"k") for log, v in zip(logs, values)))
            placed.update(zip(results, values))
        consumer = a.consumer(["t"], group=None)
        await consumer.start()
        records = []
        while batch := await consumer.getmany(timeout_ms=0):
            records += batch
        await consumer.close()
    finally:
        await a.close()
        await b.close()
    assert len(placed) == len(records) == 30 * 16
    assert sorted(r.offset for r in records) == list(range(30 * 16))
    assert {(r.partition, r.offset): r.value for r in records} == placed
    assert len(locked) > 2  # collisions happened and were resolved under the lock
