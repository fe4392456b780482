"""Stream time: per-partition watermarks, ingest gaps, and the deadline heap.

The monitor never reads the wall clock to decide that a check is late. Each
partition's watermark is the newest event timestamp read from it (the edge's
Tick.at, a ping's received_at, ...); the clock is the slowest partition's
watermark, so a lagging consumer or a silent partition stops time instead of
calling checks down.

Ingest gaps: when a partition's watermark jumps by more than ``gap_threshold_s``
(no tick, no ping for that long) pingstream itself was deaf from the old
watermark to the new one. The gap is recorded (and reported as an
``IngestGap``); deadlines of that partition's checks falling inside it are
postponed by its length (see ``monitor.transitions``), evaluated from the time
data resumed. Only the last few gaps per partition are kept: a deadline is
inside a gap only if it was computed before the gap, and those are all
re-evaluated as soon as the clock passes the gap's end.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Iterator

_GAPS_KEPT = 8


class StreamClock:
    def __init__(self, partitions: list[int], gap_threshold_s: float) -> None:
        self.gap_threshold_s = gap_threshold_s
        self.watermarks: dict[int, float | None] = {p: None for p in partitions}
        self.gaps: dict[int, deque[tuple[float, float]]] = {p: deque(maxlen=_GAPS_KEPT) for p in partitions}

    def assign(self, partitions: list[int]) -> None:
        """Follow a new partition assignment (keeps what is known about partitions we still own)."""
        self.watermarks = {p: self.watermarks.get(p) for p in partitions}
        self.gaps = {p: self.gaps.get(p, deque(maxlen=_GAPS_KEPT)) for p in partitions}

    def observe(self, partition: int, at: float) -> tuple[float, float] | None:
        """Move ``partition``'s watermark to ``at``; returns (start, end) if that jump is an ingest gap."""
        old = self.watermarks.get(partition)
        if old is not None and at <= old:
            return None  # events may be slightly out of order across edges: the watermark only moves forward
        self.watermarks[partition] = at
        if old is not None and at - old > self.gap_threshold_s:
            gap = (old, at)
            self.gaps.setdefault(partition, deque(maxlen=_GAPS_KEPT)).append(gap)
            return gap
        return None

    def restore(self, partition: int, watermark: float | None, gaps: list[tuple[float, float]]) -> None:
        self.watermarks[partition] = watermark
        self.gaps[partition] = deque((tuple(g) for g in gaps), maxlen=_GAPS_KEPT)

    def gaps_of(self, partition: int) -> tuple[tuple[float, float], ...]:
        g = self.gaps.get(partition)
        return tuple(g) if g else ()

    @property
    def now(self) -> float | None:
        """The global clock: the slowest partition; None until every partition has spoken."""
        if not self.watermarks:
            return None
        values = self.watermarks.values()
        if any(v is None for v in values):
            return None
        return min(values)


class DeadlineHeap:
    """(due, check_id) pairs in due order. Lazy deletion: a popped entry is acted on only
    if the check's current deadline still equals it (the caller checks), so a
    rescheduled check just pushes again instead of searching the heap."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float | None, check_id: str) -> None:
        if due is not None:
            heapq.heappush(self._heap, (due, check_id))

    def earliest(self) -> float | None:
        """The earliest due time queued (maybe a stale entry), or None."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[float, str]]:
        """Pop entries with due <= now, earliest first (entries pushed meanwhile are seen too)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)

    def compact(self, is_current) -> None:
        """Drop stale entries (``is_current(due, check_id)`` false) when they pile up."""
        self._heap = [e for e in self._heap if is_current(*e)]
        heapq.heapify(self._heap)
