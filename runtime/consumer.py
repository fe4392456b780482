"""The one consumer shell every service runs: read a batch → handle it → commit its offsets.

A service brings the pure part (its fold and what it writes); the shell does
the rest the same way for all of them:

- a batch policy cuts the log into batches (``Batches``: at most
  ``max_records``, read for at most ``max_wait_s`` after the first record
  arrived; read ahead, an adaptive window: at once when the handler waits and
  records came while it was busy; a service may plug in its own, as the
  projector does to re-cut a journaled batch after a restart);
- ``handle(batch)`` makes the batch's effects durable (flush, produce) and
  may name the offsets to commit (default: each partition's next offset
  after the batch);
- only then are the offsets committed, so a crash anywhere re-reads the batch
  and nothing is lost;
- a change of partition assignment is reported before the batch is handled
  (``on_assignment``), and again after a refused commit (partitions moved to
  another member meanwhile: that member reads the batch again);
- ``retry`` retries a transient failure with capped exponential backoff until
  it works (``runtime.backoff``), or gives up with ``Stopped`` once ``stop`` is
  set: the shell then ends without committing the batch;
- a progress line (records/s, batches, and whatever the service adds) every
  ``log_every_s``; the lag gauges every ``LAG_EVERY_S``; a line per batch at DEBUG on the logger
  ``batches.<name>`` (how old its oldest record was when it was read, cut and committed, how long
  it waited for the handler, its handling and its commit: where a record's latency goes);
- a watchdog: the loop beats on every turn (and on every attempt of ``retry``);
  a loop that has not turned for ``watchdog_s`` is hung on some await, and
  the shell ends with ``Stalled`` (the process exits non-zero for its supervisor
  to restart it; if even the cancellation hangs, the process exits at once);
- health (``runtime.health``): alive while it turns, ready while its lag is
  known and within ``max_lag``.

Knows no service: it imports only ``runtime`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import operator
import os
import time
from collections import deque
from itertools import groupby
from typing import Awaitable, Callable

from runtime import health, metrics
from runtime.backoff import Stopped, until_answered
from runtime.eventlog.base import Consumer, Record, TopicPartition

log = logging.getLogger(__name__)

Offsets = dict[TopicPartition, int]

WATCHDOG_S = 120.0  # a loop that has not turned for this long is hung
LAG_EVERY_S = 5.0
READY_MAX_LAG = 100_000  # records behind the end of the log beyond which a consumer is not ready
_LAG_STALE_S = 30.0  # lag not measured for this long (log unreachable): not ready
_ESCALATE_S = 15.0  # a hung loop that does not end this long after its cancellation: the process exits


# The heartbeat of the shell whose batch is being handled, for ``retry`` to beat while it waits.
_beat: contextvars.ContextVar[health.Loop | None] = contextvars.ContextVar("consumer_beat", default=None)


class Batch:
    """A batch's records, and whether it was cut again as it was before a restart (``replayed``: its effects may be
    in place already). ``ranges`` (per partition, its first and last offsets) is found once, when first asked."""

    __slots__ = ("records", "replayed", "_ranges")

    def __init__(self, records: list[Record], replayed: bool = False) -> None:
        self.records = records
        self.replayed = replayed
        self._ranges: dict[TopicPartition, tuple[int, int]] | None = None

    @property
    def ranges(self) -> dict[TopicPartition, tuple[int, int]]:
        if self._ranges is None:
            self._ranges = ranges_of(self.records)
        return self._ranges

    @property
    def next_offsets(self) -> Offsets:
        """Per partition, the offset after its last record: what committing the batch means."""
        return {tp: last + 1 for tp, (_, last) in self.ranges.items()}

    def __repr__(self) -> str:
        return f"Batch({len(self.records)} records{', replayed' if self.replayed else ''})"


class Stalled(Exception):
    """The loop did not turn within its watchdog bound: hung. The process should end (non-zero)."""


async def retry(
    what: str,
    attempt: Callable[[], Awaitable],
    *,
    stop: asyncio.Event | None = None,
    logger: logging.Logger = log,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
):
    """``await attempt()`` until it returns, waiting longer after each failure (a database or an
    endpoint may be away for a while; ``runtime.backoff``). Raises ``Stopped`` when it fails once
    ``stop`` is set, or ``stop`` is set while it waits; without ``stop`` it retries until cancelled."""
    beat = _beat.get()
    return await until_answered(
        attempt, stop=stop, logger=logger, level=logging.ERROR, first_s=first_backoff_s, max_s=max_backoff_s,
        describe=lambda exc: f"{what} failed ({exc.__class__.__name__}: {str(exc)[:300]})",
        on_try=beat.beat if beat is not None else None)


_partition_of = operator.itemgetter(0, 1)  # a Record's (topic, partition)
_timestamp_of = operator.itemgetter(5)  # a Record's timestamp_ms


def ranges_of(records: list[Record]) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition, the (first, last) offsets of ``records`` (each partition's in offset order, as read).

    By runs of one partition: a read gives each partition's records together (the embedded log selects a
    partition at a time, Kafka's fetch answers by partition), so a batch of 50,000 is a few runs, each looked at
    in C at its ends: 4 ms, where a dict of every record's partition took 13."""
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for tp, run in groupby(records, _partition_of):
        first = next(run)[2]
        tail = deque(run, maxlen=1)
        last = tail[0][2] if tail else first
        seen = found.get(tp)
        found[tp] = (first if seen is None else seen[0], last)
    return {TopicPartition(*tp): offsets for tp, offsets in found.items()}


def last_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset of the last of ``records``."""
    return {tp: last for tp, (_, last) in ranges_of(records).items()}


def first_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset of the first of ``records``."""
    return {tp: first for tp, (first, _) in ranges_of(records).items()}


def partitions_of(records: list[Record]) -> set[TopicPartition]:
    """The partitions ``records`` are of."""
    return set(ranges_of(records))


def next_offsets(records: list[Record]) -> Offsets:
    """Per partition, the offset after the last of ``records``: what committing them means."""
    return {tp: last + 1 for tp, (_, last) in ranges_of(records).items()}


async def _first(stop: asyncio.Event, event: asyncio.Event | None, timeout_s: float | None) -> None:
    """Wait until ``stop`` or ``event`` is set, or ``timeout_s`` has passed."""
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, event) if e is not None]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Batches:
    """Batches bounded by count and time. An idle read returns an empty batch after ``poll_ms``,
    so the shell looks at ``stop`` (and services with periodic work get their turn).

    Without read-ahead, a batch is what arrives within ``max_wait_s`` of its first record, taken in one
    read when that window ends (at most ``max_records``; the rest opens the next batch). Read ahead
    (``waiting`` is then the shell's event, set while the handler has nothing to do), the batch goes
    when the handler waits for it:

    - while the handler is busy the batch keeps reading (up to ``max_records``), whatever its age:
      a batch cut then would only wait for the handler while newer records pile up outside it;
    - once the handler waits, a batch whose first record is ``max_wait_s`` old (under load: it
      came during the last one's handling), or that holds ``ready_records``, goes at once with
      whatever is buffered, a group commit;
    - otherwise it waits until one of them holds: under light load at most one batch every
      ``max_wait_s``, a few records each, rather than a batch (and its inserts) per record.

    bench/e2e.py measures the projector's share of ping → queryable with it.

    Busy (``busy_wait_s``): once records come at ``busy_records`` per ``max_wait_s`` or faster (counted
    from one batch's cut to the next's), a batch gathers for ``busy_wait_s`` instead of ``max_wait_s``
    (read ahead: its first record is that old, however many it holds, before it goes; what comes meanwhile
    is taken in one read at that end, not read as it comes, unless ``busy_read_ms`` is set: a Kafka consumer's),
    until they come at half that rate. A service
    whose every batch costs a fixed price (log writes, a commit, an insert) then pays it a few times a
    second under load, not ten or twenty, and leaves the cores to the edges; under light load nothing
    changes. (Counted per batch instead, the rate that keeps a batch of the
    longer window busy is a quarter of the one that makes it so: at a rate between them a service stayed
    in whichever mode its past left it, its CPU twice as high in one as in the other.)

    Busy too while the handler takes ``BUSY_SHARE`` of the time from one batch's cut to the next or more
    (``handled_s``, which the shell sets after each batch), until that share falls under ``IDLE_SHARE``. At a few
    hundred records a second a batch's fixed costs (the projector's four inserts and their views: about 0.14 s on a
    slow machine) kept the handler busy all the time with batches every ``max_wait_s``, and a core with it; the
    longer window pays them a third as often. (bench/results/engine.md, 2026-12-03.)"""

    ready_records = 500
    busy_poll_ms = 10  # while the handler is busy and records are held: read what gathered this often
    BUSY_SHARE, IDLE_SHARE = 0.5, 0.2  # of the time between cuts spent handling: busy from the first, until the second

    def __init__(self, consumer: Consumer, max_records: int, max_wait_s: float = 0.0, poll_ms: int = 200,
                 busy_records: int | None = None, busy_wait_s: float | None = None,
                 busy_read_ms: int | None = None) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self.max_wait_s = max_wait_s
        self.poll_ms = poll_ms
        self.busy_records = busy_records
        self.busy_wait_s = busy_wait_s
        # Read ahead and busy: read what came this often while the batch gathers, instead of once at its end.
        # A Kafka consumer fetches again only for partitions whose fetched records were taken: left untaken
        # for a whole window, the next fetch asks for the other partitions alone and waits out their
        # ``fetch_max_wait_ms``, and the records that came meanwhile stay on the broker.
        self.busy_read_ms = busy_read_ms
        self.held: list[Record] = []  # read already, beyond the last batch: the start of the next one
        self.waiting: asyncio.Event | None = None  # set by a read-ahead shell while its handler is idle
        self.read_at = 0.0  # monotonic time the last batch's first records were read (0: not known)
        self._busy = False  # records come at busy_records per max_wait_s or faster (see the class docstring)
        self._cut_at = 0.0  # monotonic time the last batch was cut (0: none yet)
        self.handled_s = 0.0  # how long the handler took over its last batch since the last cut (set by the shell)

    async def _read(self, max_records: int, timeout_ms: int) -> list[Record]:
        """One read of the consumer (a subclass may look at each read's records as they come)."""
        return await self.consumer.getmany(max_records=max_records, timeout_ms=timeout_ms)

    async def next(self, stop: asyncio.Event) -> Batch:
        if self.waiting is not None:
            return await self._next_read_ahead(stop)
        records, self.held = self.held, []
        self.read_at = 0.0
        if not records and not stop.is_set():
            # Into the batch's own list: the read's may be kept as it is (the projector's Batcher decodes each).
            records += await self._read(self.max_records, self.poll_ms)
        if records:
            self.read_at = time.monotonic()
            window = self._window()
            # The window is open: the records that come in it are taken in one read at its end, not read as
            # they come (a read per few records, back to back under load, cost more than the batch's work).
            if window > 0 and len(records) < self.max_records and not stop.is_set():
                await _first(stop, None, window)
                if not stop.is_set():
                    records += await self._read(self.max_records - len(records), 0)
        return self._cut(records)

    def _window(self) -> float:
        return self.busy_wait_s if self._busy else self.max_wait_s

    def _cut(self, records: list[Record]) -> Batch:
        batch = Batch(self.split(records))
        if self.busy_records is not None and self.busy_wait_s is not None:
            now = time.monotonic()
            since, self._cut_at = self._cut_at or self.read_at or now, now
            window = max(self.max_wait_s, 0.001)
            interval = max(now - since, window)
            rate = len(batch.records) / interval  # records a second since the last batch
            busy_rate = self.busy_records / window
            # Of that time, the handler's (over the batch before: with read-ahead, this one went when it was done).
            share, self.handled_s = self.handled_s / interval, 0.0
            self._busy = (rate >= (busy_rate / 2 if self._busy else busy_rate)
                          or share >= (self.IDLE_SHARE if self._busy else self.BUSY_SHARE))
        return batch

    async def _next_read_ahead(self, stop: asyncio.Event) -> Batch:
        records, self.held = self.held, []
        waiting = self.waiting
        # Records held over from the last batch (it was full) are a backlog: due at once.
        due = time.monotonic() if records else None
        self.read_at = 0.0
        ready_records = self.max_records if self._busy else self.ready_records  # busy: the window only
        while len(records) < self.max_records and not stop.is_set():
            idle = waiting.is_set()
            if idle and records and (len(records) >= ready_records or time.monotonic() >= due):
                # The handler waits: what is buffered already joins the batch, then it goes.
                records += await self._read(self.max_records - len(records), 0)
                break
            if not records:
                wait_ms = self.poll_ms
            elif self._busy:
                # Busy: the batch goes at its window's end, whatever it holds then. What comes meanwhile is
                # taken in one read at that end (or, the handler still busy then, once it waits), not read
                # as it comes: each read costs the event loop's thread a hand-over to the reader and back.
                # With ``busy_read_ms`` it is read that often instead (see __init__).
                now = time.monotonic()
                step = None if self.busy_read_ms is None else self.busy_read_ms / 1000
                if now < due:
                    await _first(stop, None, due - now if step is None else min(due - now, step))
                elif not idle:
                    await _first(stop, waiting, step)
                wait_ms = 0
            elif idle:
                # Rounded up: the last millisecond before ``due`` rounded down to 0 spun the loop, a read of
                # nothing after another (about 24 a batch).
                wait_ms = max(1, math.ceil((due - time.monotonic()) * 1000))
            else:
                # The handler is busy: let records gather a moment, then take them all in one read.
                await asyncio.sleep(self.busy_poll_ms / 1000)
                wait_ms = 0
            got = await self._read(self.max_records - len(records), wait_ms)
            if got and not records:
                self.read_at = time.monotonic()
                due = self.read_at + self._window()
            records += got
            if not records:
                break  # idle: let the caller look at stop
        return self._cut(records)

    def split(self, records: list[Record]) -> list[Record]:
        """At most ``max_records`` of ``records``; the rest is held for the next batch. A prefix of
        the read order is a prefix of every partition, so each batch's offsets stay contiguous."""
        if len(records) > self.max_records:
            records, self.held = records[: self.max_records], records[self.max_records :] + self.held
        return records


class ConsumerShell:
    """Runs ``handle`` over the batches of one consumer until ``stop``; see the module docstring.

    ``read_ahead`` reads the next batch while the current one is handled (worth it when
    handling waits on I/O, as the projector's inserts do). ``progress(elapsed_s)`` returns
    the service's part of the progress line.
    """

    def __init__(
        self,
        name: str,
        consumer: Consumer,
        handle: Callable[[Batch], Awaitable[Offsets | None]],
        *,
        batches: Batches | None = None,
        group: str | None = None,
        logger: logging.Logger = log,
        on_assignment: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
        read_ahead: bool = False,
        log_every_s: float | None = None,
        progress: Callable[[float], str] | None = None,
        watchdog_s: float = WATCHDOG_S,
        max_lag: int = READY_MAX_LAG,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.handle = handle
        self.batches = batches or Batches(consumer, max_records=10_000)
        self.group = group
        self.log = logger
        self.on_assignment = on_assignment
        self.read_ahead = read_ahead
        self.log_every_s = log_every_s
        self.progress = progress
        self.counts = {"records": 0, "batches": 0}
        self.positions: Offsets = {}  # committed: next offset to read per partition
        self._assignment: set[TopicPartition] = set()  # as last reported to on_assignment
        self.watchdog_s = watchdog_s
        self.max_lag = max_lag
        self.lag: int | None = None  # records behind, as last measured
        self._lag_at = time.monotonic()  # when it was last measured (or the shell started)
        self._stalled: str | None = None
        self.batch_log = logging.getLogger(f"batches.{name}")

    async def run(self, stop: asyncio.Event) -> None:
        beat = health.loop(self.name, self.watchdog_s)
        _beat.set(beat)
        health.check(self.name, self._not_ready)
        side = asyncio.create_task(self._watch(beat, asyncio.current_task()), name=f"{self.name}-watchdog")
        try:
            await self._run(stop, beat)
        except asyncio.CancelledError:
            if self._stalled is not None:
                raise Stalled(self._stalled) from None
            raise
        finally:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
            health.forget(self.name)

    async def _watch(self, beat: health.Loop, main: asyncio.Task) -> None:
        """The watchdog, and the lag gauges (measured here so that a slow answer never holds the loop)."""
        next_lag = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if beat.stalled_for(now):
                self._stalled = f"{self.name}: no turn for {now - beat.at:.0f} s (watchdog {self.watchdog_s:g} s)"
                self.log.error("%s: ending, for the supervisor to restart the process", self._stalled)
                main.cancel()
                await asyncio.sleep(_ESCALATE_S)
                self.log.critical("%s, and it did not end when cancelled: exiting now", self._stalled)
                logging.shutdown()
                os._exit(70)
            if self.group is not None and now >= next_lag:
                next_lag = now + LAG_EVERY_S
                lag = await metrics.record_lag(self.group, self.consumer, self.positions)
                if lag is not None:
                    self.lag, self._lag_at = lag, time.monotonic()

    def _not_ready(self) -> str | None:
        if self.group is None:
            return None
        stale = time.monotonic() - self._lag_at
        if stale > _LAG_STALE_S:
            return f"lag unknown for {stale:.0f} s"
        if self.lag is not None and self.lag > self.max_lag:
            return f"{self.lag} records behind (ready within {self.max_lag})"
        return None

    async def _run(self, stop: asyncio.Event, beat: health.Loop) -> None:
        waiting = self.batches.waiting = asyncio.Event() if self.read_ahead else None
        cut = [0.0, 0.0]  # when the batch read ahead was cut (its task's end) and first read

        def stamp(_=None) -> None:
            cut[:] = time.monotonic(), self.batches.read_at

        def read_ahead() -> asyncio.Future:
            future = asyncio.ensure_future(self.batches.next(stop))
            future.add_done_callback(stamp)
            return future

        upcoming = read_ahead() if self.read_ahead else None
        last_log, logged = time.monotonic(), dict(self.counts)
        try:
            while not stop.is_set():
                beat.beat()
                if upcoming is None:
                    batch = await self.batches.next(stop)
                    stamp()
                else:
                    waiting.set()
                    batch = await upcoming
                    waiting.clear()
                    upcoming = read_ahead()
                try:
                    committed = await self._step(batch, *cut)
                except Stopped as exc:
                    self.log.warning("%s: stopping with a batch not committed (it will be read again): %s",
                                     self.name, exc)
                    break
                now = time.monotonic()
                if committed and self.log_every_s is not None and now - last_log >= self.log_every_s:
                    self._log_progress(logged, now - last_log)
                    logged, last_log = dict(self.counts), now
            if self.log_every_s is not None:
                self._log_progress(logged, max(time.monotonic() - last_log, 1e-9))
        finally:
            if upcoming is not None:
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)

    async def _step(self, batch: Batch, cut_at: float = 0.0, read_at: float = 0.0) -> bool:
        """Handle one batch and commit it; False when the commit was refused. ``cut_at``, ``read_at``:
        when it was cut, and when its first records were read (for the batch log line)."""
        started = time.monotonic()
        assigned = self.consumer.assignment()
        if assigned != self._assignment:
            self._assignment = assigned
            if self.on_assignment is not None:
                await self.on_assignment(assigned)
        offsets = await self.handle(batch)
        handled = time.monotonic()
        if batch.records:
            self.counts["records"] += len(batch.records)
            self.counts["batches"] += 1
        if offsets is None:
            offsets = batch.next_offsets
        if offsets:
            # flush → produce → commit: handle has made the batch's effects durable; only now are
            # its offsets committed, so a crash before this line re-reads the batch, never loses it.
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # partitions moved to another member meanwhile (rebalance)
                self.log.warning("%s: commit refused (%s: %s): the new owner reads those records again",
                                 self.name, exc.__class__.__name__, exc)
                self._assignment = set()  # report the assignment again before the next batch
                return False
            self.positions.update(offsets)
        if batch.records:
            self.batches.handled_s = time.monotonic() - started
            metrics.BATCH_RECORDS.labels(self.name).observe(len(batch.records))
            if self.batch_log.isEnabledFor(logging.DEBUG):
                self._log_batch(batch, cut_at, read_at, started, handled)
        return True

    def _log_batch(self, batch: Batch, cut_at: float, read_at: float, started: float, handled: float) -> None:
        now = time.monotonic()
        # Record timestamps are wall-clock milliseconds (the producer's); the rest is monotonic.
        committed_ms = time.time() * 1000 - min(map(_timestamp_of, batch.records))
        cut_ms = committed_ms - (now - cut_at) * 1000 if cut_at else float("nan")
        read_ms = cut_ms - (cut_at - read_at) * 1000 if read_at and cut_at else float("nan")
        self.batch_log.debug(
            "%s batch: %d records, oldest %.0f ms old when read, %.0f ms when cut, %.0f ms when committed; "
            "waited %.0f ms for the handler, handled in %.0f ms, committed in %.0f ms", self.name,
            len(batch.records), read_ms, cut_ms, committed_ms,
            (started - cut_at) * 1000 if cut_at else float("nan"), (handled - started) * 1000, (now - handled) * 1000)

    def _log_progress(self, before: dict, elapsed_s: float) -> None:
        c = self.counts
        extra = f", {self.progress(elapsed_s)}" if self.progress is not None else ""
        self.log.info("%s: %.0f records/s (%d in %d batches)%s", self.name,
                      (c["records"] - before["records"]) / elapsed_s, c["records"], c["batches"], extra)
