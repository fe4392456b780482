"""The embedded event log: one SQLite file in WAL mode.

Durability: a produce is acknowledged after the transaction holding it has
committed with ``synchronous=FULL`` (fsync of the WAL). Produces that arrive
while a commit is under way wait and share the next one (group commit), so
thousands of concurrent pings cost one fsync, not thousands.

Offsets are assigned inside the write transaction (``BEGIN IMMEDIATE`` +
``MAX(offset)``), so several processes may produce into the same file safely;
once a partition's head is known, a batch is one INSERT at the offsets after it
(the heads as the last writer left them, in the write lock's file: processes
taking turns do not ask SQLite), and a collision with records the heads did not
know of (the primary key) sends the batch the locked way.
Reading is ``sqlite_consumer.py``; the file's schema and inserts are ``sqlite_db.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runtime import metrics

from .base import EventLog, LogUnavailable, partition_for
from .retention import VACUUM_PAGES, compact_topic
from .sqlite_consumer import SqliteConsumer
from .sqlite_db import ROWS_PER_INSERT, SCHEMA, PublishedHeads, WriteLock, connect, insert_records
from .sqlite_reads import SharedReads

log = logging.getLogger(__name__)
_LATENCY = metrics.PRODUCE_SECONDS.labels("sqlite")
_ERRORS = metrics.PRODUCE_ERRORS.labels("sqlite")

MAX_GROUP = 20_000  # records per group commit
DRAIN_S = 0.1  # longest the writer thread commits back to back before other work on it gets a turn
_JOURNAL_SQL = ("INSERT INTO journal(grp, topic, partition, first_offset, last_offset, token) VALUES {} "
                "ON CONFLICT(grp, topic, partition) DO UPDATE SET first_offset=excluded.first_offset, "
                "last_offset=excluded.last_offset, token=excluded.token")
WATCH_S = 0.05  # how often a process looks at the heads other processes publish, while its consumers wait


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _moved(before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> set[str]:
    """The topics with a partition whose head differs between two readings of the published heads."""
    return {tp[0] for tp, head in after.items() if before.get(tp) != head}


class SqliteEventLog(EventLog):
    def __init__(self, path: str | Path, default_partitions: int = 1, clock=time.time) -> None:
        self.path = Path(path)
        self._clock = clock  # records' timestamps (seconds); retention tests pass another
        self.default_partitions = default_partitions
        self._conn: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-log-writer")
        self._pending: collections.deque | None = None  # produces waiting for the writer thread
        self._wake = asyncio.Event()  # set when something was queued (or on close)
        self._closing = False
        self._writer_task: asyncio.Task | None = None
        self._inflight: list = []  # the batch being committed
        self._failure = "event log is not started"
        self._partitions: dict[str, int] = {}
        self._heads: dict[tuple[str, int], int] = {}  # next offset per partition, as last committed (WriteLock)
        self._waiting: dict[str, list[asyncio.Future]] = {}  # per topic, who waits for records (wait_written)
        self._watcher: asyncio.Task | None = None  # reads the published heads for them (_watch_heads)
        self._lock = threading.Lock()
        self._write_lock: WriteLock | None = None  # across processes, on the writer thread
        self.shared_reads = SharedReads()  # its consumers' reads of the file (sqlite_reads.py)
        self.published_heads = PublishedHeads(self.path)  # which partitions have records past a position

    # --- lifecycle ---

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = await loop.run_in_executor(self._writer, self._open)
        except (OSError, sqlite3.Error) as exc:
            # A read-only or full disk, or no permission: one clear line, not a traceback.
            raise LogUnavailable(f"cannot open the event log {self.path}: {exc}") from exc
        self._pending = collections.deque()
        self._closing = False
        self._writer_task = asyncio.create_task(self._write_loop(), name="sqlite-log-group-commit")
        self._writer_task.add_done_callback(self._writer_ended)

    def _writer_ended(self, task: asyncio.Task) -> None:
        """Should the group-commit loop ever die, nobody waits forever for an acknowledgement: the
        batch in flight and what is queued fail, and later produces raise LogUnavailable (503)."""
        if not task.cancelled() and task.exception() is None:
            return  # closed normally: everything queued was written first
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        log.error("event log writer stopped: %s", reason)
        self._failure = f"event log writer stopped: {reason}"
        self._fail_queued(self._failure)

    def _fail_queued(self, reason: str) -> None:
        queued, self._pending = self._pending, None
        self._fail_batch([*self._inflight, *(queued or ())], LogUnavailable(reason))

    def _open(self) -> sqlite3.Connection:
        self._write_lock = WriteLock(self.path)
        conn = connect(self.path)
        # Pages freed by retention go back to the file system step by step (retention.py). Once a
        # file has a header (WAL mode writes one) the mode only changes with a VACUUM: instant on a
        # new file, once for a file made before.
        (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
        if mode != 2:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                log.info("event log %s: switching to incremental vacuum (a one-time VACUUM)", self.path)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
        conn.executescript(SCHEMA)
        return conn

    async def close(self) -> None:
        if self._writer_task is not None:
            self._closing = True  # write what is queued, then stop
            self._wake.set()
            await asyncio.gather(self._writer_task, return_exceptions=True)
            self._writer_task = None
            self._failure = "event log is closed"
            self._fail_queued(self._failure)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._writer, conn.close)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._write_lock is not None:
            self._write_lock.close()
        self.published_heads.close()
        self._writer.shutdown(wait=True)

    # --- topics ---

    def _topic_partitions(self, conn: sqlite3.Connection, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            with self._lock:
                conn.execute(
                    "INSERT OR IGNORE INTO topics(topic, partitions) VALUES (?, ?)",
                    (topic, self.default_partitions),
                )
                (n,) = conn.execute("SELECT partitions FROM topics WHERE topic=?", (topic,)).fetchone()
            self._partitions[topic] = n
        return n

    async def partitions(self, topic: str) -> list[int]:
        loop = asyncio.get_running_loop()
        n = await loop.run_in_executor(self._writer, self._topic_partitions, self._conn, topic)
        return list(range(n))

    # --- produce (group commit) ---

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        return await self.send(topic, value, key, partition)

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        pending = self._pending
        if pending is None:
            _ERRORS.inc()
            fut.set_exception(LogUnavailable(self._failure))
        else:
            pending.append((topic, key, value, partition, fut, time.perf_counter()))
            self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        """Hands queued produces to the writer thread, which commits batch after batch on its own
        (no round trip through the event loop between two commits) and posts each batch's results
        back. Returns once closing and nothing is left to write."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()  # before looking: what is queued after the look sets it again
            if self._pending:
                await loop.run_in_executor(self._writer, self._drain, loop)
            elif self._closing:
                return
            else:
                await self._wake.wait()

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: commit what is queued, one group commit per batch, until the queue is
        empty or ``DRAIN_S`` passed (then other work on the connection gets its turn)."""
        pending = self._pending
        until = time.monotonic() + DRAIN_S
        while pending and time.monotonic() < until:
            batch = []
            try:
                while len(batch) < MAX_GROUP:
                    batch.append(pending.popleft())
            except IndexError:
                pass
            self._inflight = batch
            try:
                results = self._write_batch(batch)
            except Exception as exc:  # disk full, read-only, locked: nobody gets a false ack
                log.error("event log write of %d records failed: %s", len(batch), exc)
                loop.call_soon_threadsafe(self._fail_batch, batch, LogUnavailable(str(exc)))
            else:
                loop.call_soon_threadsafe(self._deliver, batch, results)
        self._inflight = []  # anything still queued: _write_loop looks at the queue again right away

    def _deliver(self, batch: list, results: list) -> None:
        now = time.perf_counter()
        for (*_, fut, started), result in zip(batch, results):
            if not fut.done():
                fut.set_result(result)
                _LATENCY.observe(now - started)
        if self._waiting:
            for topic in {item[0] for item in batch}:
                for woken in self._waiting.pop(topic, ()):
                    _wake(woken)

    @staticmethod
    def _fail_batch(batch: list, exc: LogUnavailable) -> None:
        for *_, fut, _started in batch:
            if not fut.done():
                _ERRORS.inc()
                fut.set_exception(exc)

    def _write_batch(self, batch: list) -> list[tuple[int, int]]:
        with self._write_lock as lock:
            shared = lock.shared_heads()
            if shared is not None:  # another process wrote since: count from where it stopped
                self._heads = shared
            results = self._write_at_known_heads(batch)
            if results is None:
                results = self._write_locked(batch)
            lock.publish_heads(self._heads)
            return results

    def _write_at_known_heads(self, batch: list) -> list[tuple[int, int]] | None:
        """The common case as one statement, its own transaction: the offsets follow the partition
        heads last committed (by this process, or by the one before it as the write lock tells).
        Each statement the writer thread runs gives the GIL away and waits to get it back from the
        busy event-loop thread, so one statement instead of four (BEGIN, SELECT MAX, INSERT, COMMIT).
        Should the heads be behind the log (a writer killed before it published them), an offset
        collides with its records (the primary key), nothing is written, and None sends the batch
        the locked way. None too when a head or partition count is not known yet, or for more rows
        than one statement takes."""
        if len(batch) > ROWS_PER_INSERT:
            return None
        heads, counts = self._heads, self._partitions
        planned: dict[tuple[str, int], int] = {}
        rows, results = [], []
        ts = int(self._clock() * 1000)
        for topic, key, value, partition, *_ in batch:
            if partition is None:
                n = counts.get(topic)
                if n is None:
                    return None
                partition = partition_for(key, n) if key is not None else 0
            tp = (topic, partition)
            offset = planned.get(tp)
            if offset is None:
                offset = heads.get(tp)
                if offset is None:
                    return None
            planned[tp] = offset + 1
            rows.append((topic, partition, offset, key, value, ts))
            results.append((partition, offset))
        try:
            insert_records(self._conn, rows)
        except sqlite3.IntegrityError:
            for tp in planned:
                heads.pop(tp, None)
            return None
        heads.update(planned)
        return results

    def _write_locked(self, batch: list) -> list[tuple[int, int]]:
        """Any batch: under the write lock, offsets from each partition's last record."""
        conn = self._conn
        ts = int(self._clock() * 1000)
        rows, results, next_offset = [], [], {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for topic, key, value, partition, *_ in batch:
                if partition is None:
                    n = self._topic_partitions(conn, topic)
                    partition = partition_for(key, n) if key is not None else 0
                tp = (topic, partition)
                offset = next_offset.get(tp)
                if offset is None:
                    (offset,) = conn.execute(
                        "SELECT COALESCE(MAX(offset) + 1, 0) FROM records WHERE topic=? AND partition=?",
                        tp,
                    ).fetchone()
                next_offset[tp] = offset + 1
                rows.append((topic, partition, offset, key, value, ts))
                results.append((partition, offset))
            insert_records(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full) may have rolled back already
                conn.execute("ROLLBACK")
            raise
        self._heads.update(next_offset)
        return results

    async def wait_written(self, timeout_s: float, topics: list[str],
                           seen: dict[tuple[str, int], int] | None = None) -> None:
        """Wake when records are committed to one of ``topics``: by this process, at once; by another, within
        ``WATCH_S`` (the process's one watcher of the published heads sees a partition of them move); or after
        ``timeout_s``. Commits to other topics do not wake: the edge's registry follower sleeps through its pings.

        ``seen``: the published heads the caller last looked at (``published_heads.get()``). Should they have
        moved for ``topics`` since, it returns at once; without them (none were published, or they could not be
        read) only this process's commits wake it, and the caller polls."""
        # A future woken by the write, the watcher or a timer: ``asyncio.wait_for`` made a task and a timeout
        # for each wait.
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        for topic in topics:
            self._waiting.setdefault(topic, []).append(woken)
        if seen:
            heads = self.published_heads.get()
            if heads and heads is not seen and _moved(seen, heads).intersection(topics):
                _wake(woken)
            else:
                self._watch(loop)
        timer = loop.call_later(timeout_s, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()
            for topic in topics:
                waiting = self._waiting.get(topic)
                if waiting is not None and woken in waiting:
                    waiting.remove(woken)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watcher of the published heads on ``loop``, unless it runs."""
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch_heads(), name="sqlite-log-heads-watcher")

    async def _watch_heads(self) -> None:
        """While consumers of this process wait, read the heads other processes publish every ``WATCH_S``, and
        wake those waiting for a topic whose head moved. One read of the lock file for the whole process: each
        consumer looking for itself every 50 ms made about 200 reads and wake-ups a second in an idle engine."""
        last = self.published_heads.get()
        while any(self._waiting.values()):
            await asyncio.sleep(WATCH_S)
            heads = self.published_heads.get()
            if not heads or heads is last:
                continue
            moved, last = _moved(last, heads), heads
            for topic in moved:
                for woken in self._waiting.pop(topic, ()):
                    _wake(woken)

    # --- maintenance ---

    async def on_writer(self, fn, *args):
        """Run ``fn(connection, *args)`` on the writer thread, between group commits."""
        if self._conn is None:
            raise LogUnavailable(self._failure)

        def locked():
            with self._write_lock:
                return fn(self._conn, *args)

        return await asyncio.get_running_loop().run_in_executor(self._writer, locked)

    async def compact(self, topic: str) -> int:
        """Drop records superseded by a later record with the same key (Kafka's log compaction)."""
        return await compact_topic(self, topic)

    async def write_journal(self, group: str, entries: list[tuple[str, int, int, int, str]]) -> bool:
        """Keep ``entries`` as ``group``'s journal (``EventLog.write_journal``): one row per partition, the last
        batch's, replaced in one durable transaction. A commit into this file costs a fraction of an insert into
        chdb (a part each, to merge)."""
        if not entries:
            return True
        params = [field for entry in entries for field in (group, *entry)]
        sql = _JOURNAL_SQL.format(",".join(["(?,?,?,?,?,?)"] * len(entries)))
        await self.on_writer(lambda conn: conn.execute(sql, params))
        return True

    async def read_journal(self, group: str) -> list[tuple[str, int, int, int, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, int, int, int, str]]:
            return conn.execute("SELECT topic, partition, first_offset, last_offset, token FROM journal WHERE grp=?",
                                (group,)).fetchall()

        return await self.on_writer(run)

    async def vacuum_step(self, pages: int = VACUUM_PAGES) -> int:
        """Give up to ``pages`` free pages back to the file system; returns how many were freed."""

        def run(conn: sqlite3.Connection) -> int:
            (before,) = conn.execute("PRAGMA freelist_count").fetchone()
            # executescript steps the pragma to its end (execute() stops after its first page)
            conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            (after,) = conn.execute("PRAGMA freelist_count").fetchone()
            return before - after

        return await self.on_writer(run)

    def consumer(self, topics: list[str], group: str | None, *, from_end: bool = False) -> SqliteConsumer:
        return SqliteConsumer(self, topics, group, from_end=from_end)
