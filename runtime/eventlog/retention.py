"""Keeping the embedded log bounded, as Kafka keeps its topics: retention by time and size for the
event topics, compaction for the topics that hold the latest value per key.

One pass (``enforce``) per partition of a retained topic deletes the records that are both
- past retention: older than ``retention_ms`` or beyond the newest ``retention_bytes``, and
- consumed: below the offset every consumer group that reads the topic has committed (a topic
  no group reads is trimmed by retention alone, as Kafka does).

A consumer group that stopped (a projector that is down) therefore holds retention back instead
of losing pings: the pass keeps those records, says so in a warning and reports each group's lag
in ``pingstream_consumer_lag``. The last record of a partition is never deleted (its offset is
where the next record's offset is counted from). Freed pages go back to the file system with
SQLite's incremental vacuum.

The SQL runs on the log's writer thread in chunks, so pings keep being acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time

from runtime import metrics
from schemas.events import (
    TOPIC_CHECKS,
    TOPIC_DEAD_LETTER,
    TOPIC_DELIVERIES,
    TOPIC_MONITOR_STATE,
    TOPIC_NOTIFIER_PINGS,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
)

log = logging.getLogger(__name__)

DELETE_CHUNK = 20_000  # records deleted per statement: the writer thread serves produces between chunks
VACUUM_PAGES = 2_000  # pages given back per incremental-vacuum step
SCAN_CHUNK = 50_000  # records read per call when looking for what is past retention


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    retention_ms: int | None = 7 * 24 * 3600 * 1000  # Kafka's default retention.ms (7 days); None = keep
    retention_bytes: int | None = None  # per partition, keys + values; None = no size limit (Kafka: -1)
    compacted: frozenset[str] = frozenset()  # topics kept as the latest record per key
    retained: frozenset[str] = frozenset()  # topics trimmed by time and size


def policy_for(config) -> RetentionPolicy:
    """The embedded log's policy from the configuration: event topics by time and size, the
    registry, the monitor's state and the notifier's last pings compacted (as their Kafka topics are)."""
    return RetentionPolicy(
        retention_ms=config.retention_ms,
        retention_bytes=config.retention_bytes,
        retained=frozenset({TOPIC_PINGS, TOPIC_TRANSITIONS, TOPIC_DEAD_LETTER, TOPIC_DELIVERIES}),
        compacted=frozenset({TOPIC_CHECKS, TOPIC_MONITOR_STATE, TOPIC_NOTIFIER_PINGS}),
    )


@dataclasses.dataclass
class PassResult:
    deleted: int = 0  # records deleted past retention
    compacted: int = 0  # superseded records deleted from compacted topics
    held_back: dict = dataclasses.field(default_factory=dict)  # (topic, partition) -> records kept for a group
    pages_freed: int = 0


def _partitions(conn: sqlite3.Connection, topic: str) -> list[tuple[int, int]]:
    """(partition, last offset) of the topic's non-empty partitions: two seeks in the primary key per
    partition, where a GROUP BY would read every record of the topic (a week of pings) on each pass."""
    found = []
    partition = -1
    while True:
        (partition,) = conn.execute(
            "SELECT MIN(partition) FROM records WHERE topic = ? AND partition > ?", (topic, partition)
        ).fetchone()
        if partition is None:
            return found
        (last,) = conn.execute(
            "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?", (topic, partition)
        ).fetchone()
        found.append((partition, last))


def _group_floors(conn: sqlite3.Connection, topic: str, partition: int) -> dict[str, int]:
    """Each group that reads ``topic`` and how far it has committed in ``partition`` (0: nothing yet)."""
    groups = [g for (g,) in conn.execute("SELECT DISTINCT grp FROM group_offsets WHERE topic = ?", (topic,))]
    floors = {g: 0 for g in groups}
    for grp, offset in conn.execute(
        "SELECT grp, offset FROM group_offsets WHERE topic = ? AND partition = ?", (topic, partition)
    ):
        floors[grp] = offset
    return floors


def _first_young(conn: sqlite3.Connection, topic: str, partition: int, lo: int, hi: int, cutoff_ms: int) -> int | None:
    """The first offset in [lo, hi) whose record is not older than ``cutoff_ms``, if any."""
    row = conn.execute(
        """SELECT offset FROM records WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ? AND ts >= ?
           ORDER BY offset LIMIT 1""",
        (topic, partition, lo, hi, cutoff_ms),
    ).fetchone()
    return None if row is None else row[0]


def _sizes(conn: sqlite3.Connection, topic: str, partition: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """(offset, bytes of key and value) of the records in [lo, hi), newest first."""
    return conn.execute(
        """SELECT offset, LENGTH(value) + COALESCE(LENGTH(key), 0) FROM records
           WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ? ORDER BY offset DESC""",
        (topic, partition, lo, hi),
    ).fetchall()


def _first_offset(conn: sqlite3.Connection, topic: str, partition: int) -> int:
    (first,) = conn.execute(
        "SELECT MIN(offset) FROM records WHERE topic = ? AND partition = ?", (topic, partition)
    ).fetchone()
    return first


async def _past_retention(event_log, policy: RetentionPolicy, topic: str, partition: int, last: int,
                          now_ms: int) -> int:
    """The first offset retention keeps (everything below it is past retention).

    Both limits are found by reading ``SCAN_CHUNK`` records per call on the writer thread, so a pass never
    holds SQLite's write lock (every process's pings) for long:
    - by time, the partition's first record younger than retention, read from the start: a pass reads what
      it is about to delete (and what a consumer group holds back), not the week it keeps. As Kafka
      deletes whole segments from the start of the log, a record is never deleted while a younger one sits
      below it (clocks do not always move forward);
    - by size, the newest records whose bytes add up to ``retention_bytes``, read from the end."""
    first = await event_log.on_writer(_first_offset, topic, partition)
    if first is None:  # emptied meanwhile
        return 0
    keep_from = first
    if policy.retention_ms is not None:
        keep_from = last + 1
        for lo in range(first, last + 1, SCAN_CHUNK):
            found = await event_log.on_writer(_first_young, topic, partition, lo, lo + SCAN_CHUNK,
                                              now_ms - policy.retention_ms)
            if found is not None:
                keep_from = found
                break
    if policy.retention_bytes is not None:
        newer_bytes = 0
        for hi in range(last + 1, first, -SCAN_CHUNK):
            for offset, size in await event_log.on_writer(_sizes, topic, partition, max(first, hi - SCAN_CHUNK), hi):
                newer_bytes += size
                if newer_bytes > policy.retention_bytes:
                    return max(keep_from, offset + 1)
    return keep_from


def _delete_below(conn: sqlite3.Connection, topic: str, partition: int, below: int) -> int:
    cur = conn.execute(
        """DELETE FROM records WHERE topic = ?1 AND partition = ?2 AND offset IN (
               SELECT offset FROM records WHERE topic = ?1 AND partition = ?2 AND offset < ?3
               ORDER BY offset LIMIT ?4)""",
        (topic, partition, below, DELETE_CHUNK),
    )
    return cur.rowcount


# Kafka's delete.retention.ms default: how long a tombstone (empty value) outlives what it deleted.
TOMBSTONE_RETENTION_MS = 24 * 3600 * 1000


def compact_sql(conn: sqlite3.Connection, topic: str, partition: int, now_ms: int) -> int:
    """In one partition, drop records superseded by a later record with the same key (Kafka's log
    compaction), and tombstones older than ``TOMBSTONE_RETENTION_MS`` (as Kafka's cleaner does; a
    reader from the start then sees neither the key nor its tombstone). The partition's last record
    stays: offsets count on from it.

    The newest offset of every key is found once, by one grouping of the partition (n log n). Looked up
    record by record (no index has the key), it was n squared: 20,000 checks took seconds, with
    SQLite's write lock held and every process's pings waiting for it."""
    removed = conn.execute(
        """DELETE FROM records WHERE topic = ?1 AND partition = ?2 AND key IS NOT NULL AND offset NOT IN (
               SELECT MAX(offset) FROM records WHERE topic = ?1 AND partition = ?2 AND key IS NOT NULL
               GROUP BY key)""",
        (topic, partition),
    ).rowcount
    removed += conn.execute(
        """DELETE FROM records WHERE topic = ?1 AND partition = ?2 AND key IS NOT NULL AND LENGTH(value) = 0
               AND ts < ?3 AND offset < (SELECT MAX(offset) FROM records WHERE topic = ?1 AND partition = ?2)""",
        (topic, partition, now_ms - TOMBSTONE_RETENTION_MS),
    ).rowcount
    return removed


async def compact_topic(event_log, topic: str, now_ms: int | None = None) -> int:
    """Compact every partition of ``topic`` (``compact_sql``), one writer call each, so the group commits
    of pings run between partitions."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    removed = 0
    for partition, _ in await event_log.on_writer(_partitions, topic):
        removed += await event_log.on_writer(compact_sql, topic, partition, now_ms)
    return removed


async def enforce(event_log, policy: RetentionPolicy, now_ms: int | None = None) -> PassResult:
    """One retention and compaction pass over ``event_log`` (a SqliteEventLog)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = PassResult()
    for topic in sorted(policy.retained):
        for partition, last in await event_log.on_writer(_partitions, topic):
            keep_from = await _past_retention(event_log, policy, topic, partition, last, now_ms)
            floors = await event_log.on_writer(_group_floors, topic, partition)
            for group, committed in floors.items():
                metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(last + 1 - committed)
            limit = min(keep_from, last)  # the last record stays: offsets count on from it
            floor = min(floors.values(), default=limit)
            below = min(limit, floor)
            if below < limit:
                slowest = min(floors, key=floors.get)
                result.held_back[(topic, partition)] = limit - below
                log.warning(
                    "retention of %s/%d held back by consumer group %r (committed %d of %d): "
                    "%d records past retention kept until it catches up",
                    topic, partition, slowest, floor, last + 1, limit - below,
                )
            while below > 0:
                n = await event_log.on_writer(_delete_below, topic, partition, below)
                result.deleted += n
                if n < DELETE_CHUNK:
                    break
    for topic in sorted(policy.compacted):
        result.compacted += await compact_topic(event_log, topic, now_ms)
    if result.deleted or result.compacted:
        while (freed := await event_log.vacuum_step()) > 0:
            result.pages_freed += freed
            if freed < VACUUM_PAGES:
                break
        log.info("log retention: %d records past retention and %d superseded deleted, %d pages freed",
                 result.deleted, result.compacted, result.pages_freed)
    return result


async def maintain(event_log, policy: RetentionPolicy, stop: asyncio.Event, interval_s: float = 60.0) -> None:
    """Run ``enforce`` every ``interval_s`` until ``stop`` is set; a failed pass is logged and retried."""
    while not stop.is_set():
        try:
            await enforce(event_log, policy)
        except Exception:  # a pass that failed (disk full, log closing) must not end the program
            log.exception("log retention pass failed; next try in %.0f s", interval_s)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except asyncio.TimeoutError:
            pass
