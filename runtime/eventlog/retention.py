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
    """(partition, last offset) of the topic's non-empty partitions."""
    return conn.execute(
        "SELECT partition, MAX(offset) FROM records WHERE topic = ? GROUP BY partition", (topic,)
    ).fetchall()


def _group_floors(conn: sqlite3.Connection, topic: str, partition: int) -> dict[str, int]:
    """Each group that reads ``topic`` and how far it has committed in ``partition`` (0: nothing yet)."""
    groups = [g for (g,) in conn.execute("SELECT DISTINCT grp FROM group_offsets WHERE topic = ?", (topic,))]
    floors = {g: 0 for g in groups}
    for grp, offset in conn.execute(
        "SELECT grp, offset FROM group_offsets WHERE topic = ? AND partition = ?", (topic, partition)
    ):
        floors[grp] = offset
    return floors


def _past_retention(conn: sqlite3.Connection, policy: RetentionPolicy, topic: str, partition: int,
                    now_ms: int) -> int:
    """The first offset retention keeps (everything below it is past retention)."""
    keep_from = 0
    if policy.retention_ms is not None:
        (newest_old,) = conn.execute(
            "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ? AND ts < ?",
            (topic, partition, now_ms - policy.retention_ms),
        ).fetchone()
        if newest_old is not None:
            keep_from = max(keep_from, newest_old + 1)
    if policy.retention_bytes is not None:
        row = conn.execute(
            """SELECT offset FROM (
                   SELECT offset, SUM(LENGTH(value) + COALESCE(LENGTH(key), 0))
                          OVER (ORDER BY offset DESC) AS newer_bytes
                   FROM records WHERE topic = ? AND partition = ?)
               WHERE newer_bytes > ? ORDER BY offset DESC LIMIT 1""",
            (topic, partition, policy.retention_bytes),
        ).fetchone()
        if row is not None:
            keep_from = max(keep_from, row[0] + 1)
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


def compact_sql(conn: sqlite3.Connection, topic: str, now_ms: int | None = None) -> int:
    """Drop records superseded by a later record with the same key (Kafka's log compaction), and
    tombstones older than ``TOMBSTONE_RETENTION_MS`` (as Kafka's cleaner does; a reader from the
    start then sees neither the key nor its tombstone). A partition's last record stays: offsets
    count on from it."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cur = conn.execute(
        """DELETE FROM records WHERE topic = ?1 AND key IS NOT NULL AND offset < (
               SELECT MAX(r.offset) FROM records r
               WHERE r.topic = ?1 AND r.partition = records.partition AND r.key = records.key)""",
        (topic,),
    )
    removed = cur.rowcount
    cur = conn.execute(
        """DELETE FROM records WHERE topic = ?1 AND key IS NOT NULL AND LENGTH(value) = 0 AND ts < ?2
               AND offset < (SELECT MAX(r.offset) FROM records r
                             WHERE r.topic = ?1 AND r.partition = records.partition)""",
        (topic, now_ms - TOMBSTONE_RETENTION_MS),
    )
    return removed + cur.rowcount


async def enforce(event_log, policy: RetentionPolicy, now_ms: int | None = None) -> PassResult:
    """One retention and compaction pass over ``event_log`` (a SqliteEventLog)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = PassResult()
    for topic in sorted(policy.retained):
        for partition, last in await event_log.on_writer(_partitions, topic):
            keep_from = await event_log.on_writer(_past_retention, policy, topic, partition, now_ms)
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
        result.compacted += await event_log.on_writer(compact_sql, topic, now_ms)
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
