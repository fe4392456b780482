"""ClickHouse refusing inserts: the projector backs off and retries, commits nothing early, loses nothing.

The fault is injected in real chdb: a CHECK constraint that every row violates
makes each insert into ``pings`` fail, as a full disk or a down server would.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from projector import service as projector_service
from schemas.events import TOPIC_PINGS, PingEvent, encode, utcnow, uuid7

PROJECT = "019ab7ef-0000-7000-8000-000000000001"


async def _uncommitted(log: SqliteEventLog) -> int:
    """Records the projector's group has not committed: what a new member of the group would read."""
    consumer = log.consumer([TOPIC_PINGS], group=projector_service.GROUP)
    await consumer.start()
    try:
        n = 0
        while records := await consumer.getmany(timeout_ms=0):
            n += len(records)
        return n
    finally:
        await consumer.close()  # without committing: the group's offsets stay as they were


async def test_failing_inserts_are_retried_and_nothing_is_committed_early(tmp_path, clickhouse, caplog):
    caplog.set_level(logging.ERROR, logger="projector.service")
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=2)
    await log.start()
    await clickhouse.run(lambda c: c.command("ALTER TABLE pings ADD CONSTRAINT refuse_all CHECK n = 0"))
    stop = asyncio.Event()
    config = Config.from_env({}, data_dir=tmp_path)
    task = asyncio.create_task(projector_service.run(config, log, clickhouse, stop))
    checks = [str(uuid7()) for _ in range(5)]
    for i in range(200):
        c = checks[i % len(checks)]
        e = PingEvent(event_id=uuid7(), check_id=c, project_id=PROJECT, kind="success", received_at=utcnow())
        await log.produce(TOPIC_PINGS, encode(e), key=c.encode())
    try:
        await asyncio.sleep(3)
        assert not task.done()
        assert await _uncommitted(log) == 200, "offsets committed while inserts fail"
        failures = [r for r in caplog.records if "failed" in r.getMessage() and "trying again" in r.getMessage()]
        assert len(failures) >= 2, "no backoff and retry logged"
        [(rows,)] = await clickhouse.query("SELECT count() FROM pings")
        assert rows == 0

        await clickhouse.run(lambda c: c.command("ALTER TABLE pings DROP CONSTRAINT refuse_all"))  # healthy again
        deadline = time.monotonic() + 40  # the backoff may be several seconds long by now
        while time.monotonic() < deadline:
            [(rows,)] = await clickhouse.query("SELECT count() FROM pings FINAL")
            if rows == 200 and await _uncommitted(log) == 0:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await log.close()
    [(rows, ids)] = await clickhouse.query("SELECT count(), uniqExact(event_id) FROM pings")
    assert (rows, ids) == (200, 200)
    [(n,)] = await clickhouse.query("SELECT sum(n_pings) FROM check_state FINAL")
    assert n == 200
