"""The embedded log's SQLite file: its schema, how a connection is opened, how records are inserted."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
"""

# A group commit inserts its rows with one multi-row INSERT statement instead of executemany:
# Python's sqlite3 releases the GIL around every statement step, and under load each release then
# waits for the event loop thread to give the GIL back, so executemany pays that wait once per row
# while the loop is busy. Bound parameters carry keys and values as exact bytes. SQLite allows at
# least 32,766 parameters a statement: 5,000 rows of 6.
ROWS_PER_INSERT = 5_000
_insert_sql: dict[int, str] = {}


def connect(path: Path) -> sqlite3.Connection:
    # Statements are cached by their text; a multi-row INSERT has one text per row count.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def insert_records(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert (topic, partition, offset, key, value, ts) rows, one statement per 5,000."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        sql = _insert_sql.get(len(chunk))
        if sql is None:
            sql = _insert_sql[len(chunk)] = "INSERT INTO records VALUES " + ",".join(["(?,?,?,?,?,?)"] * len(chunk))
        conn.execute(sql, [field for row in chunk for field in row])


class WriteLock:
    """A lock file beside the log, taken around every write transaction by every process writing the
    file (the edges of ``pingstream up`` and its engine). SQLite lets one writer in at a time and
    has the others poll with growing sleeps (1, 2, 5, 10 ms...) until the lock is free; a blocking
    ``flock`` wakes the next writer as soon as the lock is released. One per user (a connection's
    thread): locks of one open file do not exclude each other."""

    def __init__(self, log_path: Path) -> None:
        self._fd = os.open(f"{log_path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
