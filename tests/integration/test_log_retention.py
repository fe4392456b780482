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


async def test_a_record_younger_than_retention_is_never_deleted_even_below_an_older_one(clocked_log):
    # The clock went back ten days between two records: the older stamp sits above the younger one.
    log, clock = clocked_log
    await log.produce("pings", b"young", key=b"a", partition=0)
    clock.now -= 10 * DAY
    await log.produce("pings", b"stamped old", key=b"a", partition=0)
    await log.produce("pings", b"stamped old", key=b"a", partition=0)
    clock.now += 10 * DAY + HOUR
    result = await enforce(log, POLICY, clock.ms)
    assert result.deleted == 0
    assert [v for (v,) in _rows(log, "SELECT value FROM records WHERE topic = 'pings' ORDER BY offset")] == [
        b"young", b"stamped old", b"stamped old"
    ]
    # A week later the young one is past retention too, and all but the partition's last record go.
    clock.now += 8 * DAY
    assert (await enforce(log, POLICY, clock.ms)).deleted == 2


async def test_compaction_keeps_exactly_the_newest_record_of_each_key_in_each_partition(tmp_path):
    # Many keys, several versions each, spread over partitions, with tombstones younger than a day:
    # what stays is the newest record of every (partition, key), and the records without a key.
    import random

    rng = random.Random(7)
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=4)
    await log.start()
    try:
        newest: dict[tuple[int, bytes], bytes] = {}
        unkeyed = 0
        for i in range(3_000):
            partition = rng.randrange(4)
            if rng.random() < 0.05:
                await log.produce("state", b"unkeyed", partition=partition)
                unkeyed += 1
                continue
            key = f"check-{rng.randrange(800)}".encode()
            value = b"" if rng.random() < 0.1 else f"v{i}".encode()
            await log.produce("state", value, key=key, partition=partition)
            newest[(partition, key)] = value
        removed = await log.compact("state")
        rows = _rows(log, "SELECT partition, key, value FROM records WHERE topic = 'state' AND key IS NOT NULL")
        assert sorted(rows) == sorted((p, k, v) for (p, k), v in newest.items())
        assert _rows(log, "SELECT COUNT(*) FROM records WHERE topic = 'state' AND key IS NULL") == [(unkeyed,)]
        assert removed == 3_000 - unkeyed - len(newest)
        assert await log.compact("state") == 0
    finally:
        await log.close()


@pytest.mark.parametrize("policy", [
    RetentionPolicy(retention_ms=50 * HOUR * 1000, retained=frozenset({"pings"})),
    RetentionPolicy(retention_ms=None, retention_bytes=3_000, retained=frozenset({"pings"})),
], ids=["time", "size"])
async def test_retention_read_in_chunks_finds_the_same_limit_as_one_reading(clocked_log, monkeypatch, policy):
    # A pass reads SCAN_CHUNK records per call on the writer thread: with chunks of 7 records, the limits
    # fall inside chunks and on their edges, and must be those of the whole partition read at once.
    from runtime.eventlog import retention

    monkeypatch.setattr(retention, "SCAN_CHUNK", 7)
    log, clock = clocked_log
    sizes = [(i * 37) % 200 + 10 for i in range(100)]
    stamps = []
    for size in sizes:
        await log.produce("pings", b"z" * size, key=b"k", partition=0)
        stamps.append(clock.ms)
        clock.now += HOUR
    if policy.retention_ms is not None:
        expected = next(i for i, ts in enumerate(stamps) if ts >= clock.ms - policy.retention_ms)
    else:
        newer, expected = 0, 0
        for offset in range(99, -1, -1):
            newer += sizes[offset] + 1
            if newer > policy.retention_bytes:
                expected = offset + 1
                break
    result = await enforce(log, policy, clock.ms)
    assert 0 < expected < 99
    assert result.deleted == expected
    assert _rows(log, "SELECT MIN(offset) FROM records WHERE topic = 'pings'") == [(expected,)]
