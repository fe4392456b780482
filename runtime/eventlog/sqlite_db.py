"""The embedded log's SQLite file: its schema, how a connection is opened, how records are inserted."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import threading
import zlib
from pathlib import Path

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL, token TEXT NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
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


_HEADS_HEADER = struct.Struct("<QQII")  # last writer's token, its publication number, payload length, crc32
_HEADS_MAX = 1 << 20
_encode_heads = msgspec.msgpack.Encoder().encode
_decode_heads = msgspec.msgpack.Decoder(list[tuple[str, int, int]]).decode


def lock_file(log_path: Path) -> str:
    """The write lock's file beside the log (``WriteLock``), which also carries the published heads."""
    return f"{log_path}-writer.lock"


def _read_header(fd: int) -> tuple[int, int, int, int] | None:
    """The heads' header (writer token, publication number, payload length, crc32); None if unreadable."""
    try:
        header = os.pread(fd, _HEADS_HEADER.size, 0)
    except OSError:
        return None
    return _HEADS_HEADER.unpack(header) if len(header) == _HEADS_HEADER.size else None


def _read_heads(fd: int, header: tuple[int, int, int, int]) -> dict[tuple[str, int], int]:
    """The heads ``header`` describes; empty when they cannot be read whole (a write under way: the crc)."""
    _, _, length, crc = header
    try:
        payload = os.pread(fd, length, _HEADS_HEADER.size) if length <= _HEADS_MAX else b""
        if len(payload) != length or zlib.crc32(payload) != crc:
            return {}
        return {(topic, partition): offset for topic, partition, offset in _decode_heads(payload)}
    except (OSError, msgspec.DecodeError):
        return {}


class PublishedHeads:
    """The partition heads the writers last published (``WriteLock``), as consumers read them.

    A partition whose published head is at or below a consumer's position has nothing new for it:
    the consumer does not ask SQLite (a SELECT per partition per poll made hundreds of empty
    SELECTs a second in an idle ``pingstream up``). The heads are a hint that may lag the log
    for a moment (published after the commit) or, after a writer was killed between the two,
    until the next write: consumers still ask for every partition now and then (``FULL_READ_S``).
    Thread-safe; empty when nothing was published or it cannot be read."""

    def __init__(self, log_path: Path) -> None:
        self._path = lock_file(log_path)
        self._fd = -1
        self._lock = threading.Lock()
        self._header: tuple | None = None
        self._heads: dict[tuple[str, int], int] = {}

    def get(self) -> dict[tuple[str, int], int]:
        with self._lock:
            if self._fd < 0:
                try:
                    self._fd = os.open(self._path, os.O_RDONLY)
                except OSError:
                    return {}
            header = _read_header(self._fd)
            if header is None:
                return {}
            if header != self._header:
                heads = _read_heads(self._fd, header)
                if not heads:
                    return {}
                self._header, self._heads = header, heads
            return self._heads

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class WriteLock:
    """A lock file beside the log, taken around every write transaction by every process writing the
    file (the edges of ``pingstream up`` and its engine). SQLite lets one writer in at a time and
    has the others poll with growing sleeps (1, 2, 5, 10 ms...) until the lock is free; a blocking
    ``flock`` wakes the next writer as soon as the lock is released. One per user (a connection's
    thread): locks of one open file do not exclude each other.

    The file also carries the partition heads (the next offset of each partition) as the last
    writer left them, so that writers taking turns append where the one before stopped without
    asking SQLite (``shared_heads``, ``publish_heads``). They are a hint: a writer killed between
    its commit and its publication leaves heads behind the log, its successor's insert then
    collides with records on the primary key and takes the locked way, which counts from the log.
    A hint is never ahead of the log: it is written only after the commit it describes."""

    def __init__(self, log_path: Path) -> None:
        self._fd = os.open(lock_file(log_path), os.O_RDWR | os.O_CREAT, 0o600)
        self._token = int.from_bytes(os.urandom(8), "little")  # this writer, in the file's header
        self._published = 0  # number of this writer's last publication

    def __enter__(self) -> "WriteLock":
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def shared_heads(self) -> dict[tuple[str, int], int] | None:
        """Under the lock: None when nobody wrote since this writer published its heads; else the
        heads the last writer published (empty when there are none, or they cannot be read)."""
        header = _read_header(self._fd)
        if header is None:
            return {}
        token, number, _, _ = header
        if token == self._token and number == self._published:
            return None
        return _read_heads(self._fd, header)

    def publish_heads(self, heads: dict[tuple[str, int], int]) -> None:
        """Under the lock, after a commit: where each partition's next record goes, for the next writer."""
        payload = _encode_heads([(topic, partition, offset) for (topic, partition), offset in heads.items()])
        self._published += 1
        try:
            os.pwrite(self._fd, _HEADS_HEADER.pack(self._token, self._published, len(payload), zlib.crc32(payload))
                      + payload, 0)
        except OSError:
            pass  # a full disk: the commit stands, the heads in the file stay behind (a collision, then the log)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
