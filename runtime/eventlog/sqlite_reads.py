"""One process's reads of the embedded log, shared by its consumers.

The engine of ``pingstream up`` runs three consumers of the pings topic (projector, monitor,
notifier), each in its own group and all close behind the edges. With a SELECT each, every ping
was read three times and made into three sets of Python objects. Here the consumer that reaches
the end of what was read reads on for all of them: the records stay in a window per partition
until every consumer of that partition has passed them, and the others take them from there.

A record is immutable once committed and offsets grow with commits (they are given under the
write lock), so a record from the window is the record the consumer's own SELECT would return,
and a window holds every record of the log from its ``start`` to its ``end``. Each consumer keeps
its own position, group and commits: what a group commits, and when, does not change.

Bounded: a window holds at most ``WINDOW_MAX`` records; a consumer behind its start (a slow one,
or one replaying history) reads from the file on its own, as without the window, until it has
caught up with it.
"""

from __future__ import annotations

import bisect
import operator
import sqlite3
import threading

from .base import Record, TopicPartition, as_record

WINDOW_MAX = 20_000  # records held per partition for the consumers behind the one reading ahead

_offset_of = operator.itemgetter(2)

# The topic and partition are the Record's own, not selected: the sqlite3 module makes a new str (and int)
# of a selected value for every row, a third of a read's CPU for these two.
_SELECT = ("SELECT offset, key, value, ts FROM records WHERE topic=? AND partition=? AND offset>=? "
           "ORDER BY offset LIMIT ?")


def select(conn: sqlite3.Connection, tp: TopicPartition, position: int, limit: int) -> list[Record]:
    """Up to ``limit`` records of ``tp`` from offset ``position`` on, straight from the file."""
    rows = conn.execute(_SELECT, (tp.topic, tp.partition, position, limit)).fetchall()
    head = (tp.topic, tp.partition)
    return [as_record(head + row) for row in rows]  # rows follow the Record's fields after these two


class _Window:
    __slots__ = ("lock", "records", "start", "end", "readers")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[Record] = []  # by offset: every record of the log from start to end (excluded)
        self.start = 0
        self.end = 0
        self.readers: dict[object, int] = {}  # consumer -> its position in this partition

    def take(self, position: int, limit: int) -> list[Record]:
        """Records from ``position`` on (``start <= position <= end``), at most ``limit``."""
        i = bisect.bisect_left(self.records, position, key=_offset_of)
        return self.records[i : i + limit]

    def extend(self, conn: sqlite3.Connection, tp: TopicPartition, limit: int) -> None:
        """Read on from ``end``: up to ``limit`` more records, for every consumer of the partition."""
        more = select(conn, tp, self.end, limit)
        if more:
            self.records += more
            self.end = _offset_of(more[-1]) + 1

    def trim(self) -> None:
        """Drop what every consumer has passed, and the oldest beyond ``WINDOW_MAX``."""
        low = min(self.readers.values(), default=self.end)
        if low >= self.end:
            self.records.clear()
            self.start = self.end = max(low, self.end)
            return
        drop = bisect.bisect_left(self.records, low, key=_offset_of)
        drop = max(drop, len(self.records) - WINDOW_MAX)
        if drop > 0:
            self.start = _offset_of(self.records[drop - 1]) + 1
            del self.records[:drop]
        self.start = max(self.start, low)


class SharedReads:
    """The windows of one event log object, one per partition read (thread-safe: each consumer
    reads on a thread of its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[TopicPartition, _Window] = {}

    def _window(self, tp: TopicPartition) -> _Window:
        window = self._windows.get(tp)
        if window is None:
            with self._lock:
                window = self._windows.setdefault(tp, _Window())
        return window

    def join(self, reader: object, positions: dict[TopicPartition, int]) -> None:
        """``reader`` starts at ``positions``: what it has not read is kept for it from now on."""
        for tp, position in positions.items():
            window = self._window(tp)
            with window.lock:
                window.readers[reader] = position

    def leave(self, reader: object) -> None:
        for window in list(self._windows.values()):
            with window.lock:
                if window.readers.pop(reader, None) is not None:
                    window.trim()

    def read(self, conn: sqlite3.Connection, reader: object, tp: TopicPartition, position: int,
             limit: int) -> list[Record]:
        """Up to ``limit`` records of ``tp`` from ``position`` on, for ``reader`` (on ``conn``, its
        own connection, when it reads from the file)."""
        window = self._window(tp)
        with window.lock:
            if not window.records and not window.start <= position <= window.end:
                window.start = window.end = position  # nothing held: the window moves to who reads
            if window.start <= position <= window.end:
                out = window.take(position, limit)
                if not out:  # at the window's end: read on, for the others too
                    window.extend(conn, tp, limit)
                    out = window.take(position, limit)
            else:  # behind the window (or ahead of it): on its own, as without one
                out = select(conn, tp, position, limit)
            if out:
                window.readers[reader] = _offset_of(out[-1]) + 1
                window.trim()
            else:
                window.readers[reader] = position
            return out
