"""The embedded log stays bounded like a Kafka topic: retention by time and size, compaction, and
space given back, without ever deleting what a consumer group has not committed.

Time is injected: the log stamps records with a clock the test moves, and each retention pass is
told what "now" is, so ten days pass in a second.
"""

from __future__ import annotations

import logging

import pytest

from runtime import metrics
from runtime.eventlog.retention import RetentionPolicy, enforce
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.eventlog.sqlite_db import connect

HOUR = 3600
DAY = 24 * HOUR
WEEK_MS = 7 * DAY * 1000
T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


@pytest.fixture
async def clocked_log(tmp_path):
    clock = Clock()
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=2, clock=clock)
    await log.start()
    try:
        yield log, clock
    finally:
        await log.close()


async def _hours(log, clock, hours: int, per_hour: int = 10, topic: str = "pings") -> None:
    for _ in range(hours):
        for i in range(per_hour):
            await log.produce(topic, b"x" * 100, key=f"check-{i}".encode())
        clock.now += HOUR


async def _consume_all(log, group: str) -> None:
    consumer = log.consumer(["pings"], group=group)
    await consumer.start()
    try:
        while await consumer.getmany(timeout_ms=0):
            pass
        await consumer.commit()
    finally:
        await consumer.close()


def _rows(log, sql: str, *args) -> list[tuple]:
    conn = connect(log.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _oldest_age_days(log, clock) -> float:
    [(oldest,)] = _rows(log, "SELECT MIN(ts) FROM records WHERE topic = 'pings'")
    return (clock.ms - oldest) / 1000 / DAY


POLICY = RetentionPolicy(retention_ms=WEEK_MS, retained=frozenset({"pings"}))


async def test_it_deletes_what_is_older_than_retention_once_every_group_committed_it(clocked_log):
    log, clock = clocked_log
    for _ in range(10):  # ten days of pings, both groups keeping up, a retention pass each day
        await _hours(log, clock, 24)
        await _consume_all(log, "projector")
        await _consume_all(log, "monitor")
        await enforce(log, POLICY, clock.ms)
    assert 6.9 <= _oldest_age_days(log, clock) <= 7.0
    [(n,)] = _rows(log, "SELECT COUNT(*) FROM records WHERE topic = 'pings'")
    assert 7 * 24 * 10 - 10 <= n <= 7 * 24 * 10


async def test_a_stopped_consumer_group_holds_retention_back_and_loses_nothing(clocked_log, caplog):
    log, clock = clocked_log
    await _hours(log, clock, 24)
    await _consume_all(log, "projector")
    await _consume_all(log, "monitor")  # the monitor stops after the first day
    for _ in range(9):
        await _hours(log, clock, 24)
        await _consume_all(log, "projector")
    caplog.set_level(logging.WARNING, logger="runtime.eventlog.retention")
    result = await enforce(log, POLICY, clock.ms)
    # Everything the monitor has not committed is still there, with nine days of it past retention.
    [(n,)] = _rows(log, "SELECT COUNT(*) FROM records WHERE topic = 'pings'")
    assert n == 9 * 24 * 10
    assert sum(result.held_back.values()) == 2 * 24 * 10  # days 2 and 3 are past retention, kept
    assert "held back by consumer group 'monitor'" in caplog.text
    lag = sum(metrics.CONSUMER_LAG.labels("monitor", "pings", str(p))._value.get() for p in (0, 1))
    assert lag == 9 * 24 * 10
    # Once it catches up, retention catches up too.
    await _consume_all(log, "monitor")
    await enforce(log, POLICY, clock.ms)
    assert 6.9 <= _oldest_age_days(log, clock) <= 7.0


async def test_it_keeps_the_last_record_of_each_partition_so_offsets_count_on(clocked_log):
    log, clock = clocked_log
    await _hours(log, clock, 2)
    await _consume_all(log, "projector")
    heads = dict(_rows(log, "SELECT partition, MAX(offset) FROM records WHERE topic = 'pings' GROUP BY partition"))
    clock.now += 30 * DAY
    await enforce(log, POLICY, clock.ms)
    left = _rows(log, "SELECT partition, offset FROM records WHERE topic = 'pings' ORDER BY partition")
    assert dict(left) == heads
    partition, offset = await log.produce("pings", b"new", key=b"check-0")
    assert offset == heads[partition] + 1


async def test_it_keeps_at_most_retention_bytes_per_partition(clocked_log):
    log, clock = clocked_log
    await _hours(log, clock, 10)  # 100 records of ~107 bytes over 2 partitions
    await _consume_all(log, "projector")
    await enforce(log, RetentionPolicy(retention_ms=None, retention_bytes=2_000, retained=frozenset({"pings"})),
                  clock.ms)
    sizes = _rows(log, "SELECT partition, SUM(LENGTH(value) + LENGTH(key)), COUNT(*) FROM records "
                       "WHERE topic = 'pings' GROUP BY partition")
    for _, size, count in sizes:
        assert 2_000 - 110 < size <= 2_000 and count > 1


async def test_it_compacts_topics_that_keep_the_latest_value_per_key(clocked_log):
    log, clock = clocked_log
    for version in range(5):
        for check in range(3):
            await log.produce("checks", f"v{version}".encode(), key=f"check-{check}".encode())
    result = await enforce(log, RetentionPolicy(compacted=frozenset({"checks"})), clock.ms)
    assert result.compacted == 12
    assert sorted(_rows(log, "SELECT key, value FROM records WHERE topic = 'checks'")) == [
        (f"check-{c}".encode(), b"v4") for c in range(3)
    ]


async def test_space_of_deleted_records_goes_back_to_the_file_system(clocked_log):
    log, clock = clocked_log
    for _ in range(20):
        for i in range(100):
            await log.produce("pings", b"y" * 4_000, key=f"check-{i}".encode())
        clock.now += HOUR
    await _consume_all(log, "projector")
    [(pages_before,)] = _rows(log, "PRAGMA page_count")
    clock.now += 30 * DAY
    result = await enforce(log, POLICY, clock.ms)
    [(pages_after,)] = _rows(log, "PRAGMA page_count")
    assert result.deleted == 2_000 - 2
    assert result.pages_freed > 0 and pages_after < pages_before / 4


async def test_it_drops_tombstones_a_day_after_they_were_written_as_kafka_does(clocked_log):
    log, clock = clocked_log
    await log.produce("state", b"v", key=b"old", partition=0)
    await log.produce("state", b"", key=b"old", partition=0)  # deleted two days ago
    clock.now += DAY
    await log.produce("state", b"v", key=b"young", partition=0)
    await log.produce("state", b"", key=b"young", partition=0)  # deleted a day ago: kept a little longer
    await log.produce("state", b"v", key=b"kept", partition=0)
    await log.produce("state", b"", key=b"last", partition=1)  # a partition's last record always stays
    clock.now += DAY - 60
    await enforce(log, RetentionPolicy(compacted=frozenset({"state"})), clock.ms)
    assert sorted(_rows(log, "SELECT key, value FROM records WHERE topic = 'state'")) == [
        (b"kept", b"v"), (b"last", b""), (b"young", b"")
    ]
