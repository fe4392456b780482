"""What only the embedded SQLite log has: its group-commit writer task."""

from __future__ import annotations

import asyncio

import pytest

from pingstream.eventlog.base import LogUnavailable
from pingstream.eventlog.sqlite import SqliteEventLog


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
