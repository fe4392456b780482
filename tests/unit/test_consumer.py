"""The consumer shell (runtime.consumer): batches bounded by count and time, commit after handle, retry, stop."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
import uvloop

from runtime.consumer import Batch, Batches, ConsumerShell, Stopped, next_offsets, partitions_of, ranges_of, retry
from runtime.eventlog.base import Record, TopicPartition

from .fake_consumer import TOPIC, FakeConsumer, offsets

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


# --- batches -------------------------------------------------------------------


def _records(*runs: tuple[int, range]) -> list[Record]:
    return [Record(TOPIC, partition, offset, b"k", b"v", 0) for partition, offsets_ in runs for offset in offsets_]


def test_a_batchs_ranges_are_its_partitions_first_and_last_offsets_however_its_records_run():
    runs = _records((0, range(5, 9)), (1, range(0, 3)), (0, range(9, 12)), (1, range(3, 4)), (2, range(7, 8)))
    one_by_one = [r for pair in zip(_records((0, range(0, 100))), _records((1, range(50, 150)))) for r in pair]
    expected = {P0: (5, 11), P1: (0, 3), TopicPartition(TOPIC, 2): (7, 7)}
    assert ranges_of(runs) == expected and ranges_of(one_by_one) == {P0: (0, 99), P1: (50, 149)}
    assert ranges_of([]) == {} and next_offsets(runs) == {P0: 12, P1: 4, TopicPartition(TOPIC, 2): 8}
    assert partitions_of(one_by_one) == {P0, P1}
    batch = Batch(runs)
    assert batch.ranges == expected and batch.next_offsets == next_offsets(runs) and batch.ranges is batch.ranges


async def test_it_cuts_a_batch_at_max_records():
    consumer = FakeConsumer()
    consumer.append(0, 25)
    batches = Batches(consumer, max_records=10, max_wait_s=10.0)
    started = time.monotonic()
    first, second = await batches.next(asyncio.Event()), await batches.next(asyncio.Event())
    assert time.monotonic() - started < 1.0, "a full batch does not wait for its time to be up"
    assert offsets(first.records) == [(0, o) for o in range(10)]
    assert offsets(second.records) == [(0, o) for o in range(10, 20)]
    assert not first.replayed


async def test_it_cuts_a_batch_when_its_time_is_up():
    consumer = FakeConsumer()
    stop_writing = asyncio.Event()

    async def trickle():
        while not stop_writing.is_set():
            consumer.append(0)
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(trickle())
    try:
        batches = Batches(consumer, max_records=10_000, max_wait_s=0.15, poll_ms=1000)
        started = time.monotonic()
        batch = await batches.next(asyncio.Event())
        elapsed = time.monotonic() - started
    finally:
        stop_writing.set()
        await writer
    assert 0.15 <= elapsed < 1.0
    assert 2 <= len(batch.records) < 10_000
    assert [o for _, o in offsets(batch.records)] == list(range(len(batch.records)))


async def test_what_comes_in_a_batchs_window_is_taken_in_one_read_at_its_end():
    """Not a read per few records as they come (under load, reads back to back for the whole window)."""
    consumer = FakeConsumer()
    async with consumer.trickling():
        batch = await Batches(consumer, max_records=10_000, max_wait_s=0.2, poll_ms=1000).next(asyncio.Event())
    assert consumer.reads == 2  # the first records, then the window's
    assert len(batch.records) >= 10
    assert [o for _, o in offsets(batch.records)] == list(range(len(batch.records)))


async def test_stopping_during_a_batchs_window_returns_what_it_holds_at_once():
    consumer = FakeConsumer()
    consumer.append(0, 3)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    batch = await Batches(consumer, max_records=100, max_wait_s=5.0).next(stop)
    assert time.monotonic() - started < 1.0
    assert len(batch.records) == 3


async def test_after_a_busy_batch_the_next_gathers_for_the_busy_wait():
    """A batch of busy_records or more makes the next one gather for busy_wait_s; a small batch
    brings max_wait_s back."""
    consumer = FakeConsumer()
    batches = Batches(consumer, max_records=100_000, max_wait_s=0.05, poll_ms=1000, busy_records=100, busy_wait_s=0.3)
    stop = asyncio.Event()

    async def timed_batch(per_tick: int) -> tuple[float, int]:
        async with consumer.trickling(per_tick):
            started = time.monotonic()
            batch = await batches.next(stop)
            return time.monotonic() - started, len(batch.records)

    elapsed, size = await timed_batch(50)  # not busy yet: max_wait_s
    assert elapsed < 0.25 and size >= 100
    elapsed, size = await timed_batch(50)  # after a busy batch: busy_wait_s
    assert 0.3 <= elapsed < 1.0
    elapsed, size = await timed_batch(1)  # still after a busy one, itself small
    assert 0.3 <= elapsed < 1.0 and size < 100
    elapsed, size = await timed_batch(1)  # the last batch was small: max_wait_s again
    assert elapsed < 0.25 and size < 100


async def test_busy_is_a_rate_the_longer_window_does_not_hold_on_to():
    """Busy is entered at busy_records per max_wait_s and left below half that rate. Counted per batch, a
    batch of the longer window holds four times the records at the same rate: 600 records a second kept a
    service busy that 600 a second could never have made busy."""
    consumer = FakeConsumer()
    batches = Batches(consumer, max_records=100_000, max_wait_s=0.05, poll_ms=1000, busy_records=100, busy_wait_s=0.3)
    stop = asyncio.Event()

    async def timed_batch(per_tick: int) -> float:
        async with consumer.trickling(per_tick):
            started = time.monotonic()
            await batches.next(stop)
            return time.monotonic() - started

    assert await timed_batch(3) < 0.25  # 600/s: not busy (busy is 2,000/s)
    await timed_batch(50)  # 10,000/s: busy from here
    assert await timed_batch(3) >= 0.3  # the busy window; 600/s in it (180 records) is below half of 2,000/s
    assert await timed_batch(3) < 0.25  # so busy is left


async def test_it_reads_once_without_a_wait():
    consumer = FakeConsumer()
    consumer.append(0, 3)
    batch = await Batches(consumer, max_records=10).next(asyncio.Event())
    assert len(batch.records) == 3 and consumer.reads == 1


async def test_an_idle_read_returns_an_empty_batch_after_the_poll_time():
    batches = Batches(FakeConsumer(), max_records=10, max_wait_s=5.0, poll_ms=50)
    started = time.monotonic()
    batch = await batches.next(asyncio.Event())
    assert batch.records == [] and time.monotonic() - started < 1.0


async def test_it_reads_nothing_once_stopped():
    consumer = FakeConsumer()
    consumer.append(0, 5)
    stop = asyncio.Event()
    stop.set()
    batch = await Batches(consumer, max_records=10).next(stop)
    assert batch.records == [] and consumer.reads == 0


async def test_records_beyond_max_records_are_held_for_the_next_batch():
    source = FakeConsumer(partitions=2)
    records = source.append(0, 3) + source.append(1, 3)  # e.g. read while looking for a journaled batch
    batches = Batches(FakeConsumer(partitions=2), max_records=4)
    assert batches.split(records) == records[:4]
    batch = await batches.next(asyncio.Event())
    assert offsets(batch.records) == [(1, 1), (1, 2)]


# --- the shell -------------------------------------------------------------------


def shell_for(consumer, handle, **kw) -> ConsumerShell:
    return ConsumerShell("test", consumer, handle, batches=Batches(consumer, max_records=kw.pop("max_records", 100),
                                                                       poll_ms=20), **kw)


async def run_until(shell: ConsumerShell, done, stop: asyncio.Event | None = None, timeout_s: float = 5.0) -> None:
    stop = stop or asyncio.Event()
    task = asyncio.create_task(shell.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout_s)


async def test_it_commits_each_batch_after_handling_it():
    consumer = FakeConsumer(partitions=2)
    consumer.append(0, 3)
    consumer.append(1, 2)
    seen = []

    async def handle(batch: Batch):
        if batch.records:
            seen.append((offsets(batch.records), dict(consumer.committed)))

    await run_until(shell_for(consumer, handle), lambda: consumer.commits)
    [(records, committed_while_handling)] = seen
    assert records == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert committed_while_handling == {P0: 0, P1: 0}
    assert consumer.commits == [{P0: 3, P1: 2}]


async def test_it_commits_the_offsets_handle_names():
    consumer = FakeConsumer()
    consumer.append(0, 5)

    async def handle(batch: Batch):
        return {P0: 2}  # e.g. deliveries still open from offset 2 on

    await run_until(shell_for(consumer, handle), lambda: consumer.commits)
    assert consumer.commits[0] == {P0: 2}


async def test_nothing_is_committed_when_handle_fails():
    consumer = FakeConsumer()
    consumer.append(0, 5)

    async def handle(batch: Batch):
        if batch.records:
            raise ValueError("poison in the shell")

    with pytest.raises(ValueError):
        await shell_for(consumer, handle).run(asyncio.Event())
    assert consumer.commits == []


async def test_a_transient_failure_is_retried_then_committed(caplog):
    consumer = FakeConsumer()
    consumer.append(0, 4)
    attempts = []
    stop = asyncio.Event()

    async def insert():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("database away")

    async def handle(batch: Batch):
        if batch.records:
            await retry("test insert", insert, stop=stop, first_backoff_s=0.01)

    await run_until(shell_for(consumer, handle), lambda: consumer.commits, stop)
    assert len(attempts) == 3 and consumer.commits == [{P0: 4}]
    failures = [r for r in caplog.records if "test insert failed" in r.getMessage() and "trying again" in r.getMessage()]
    assert len(failures) == 2


async def test_stopping_while_retrying_leaves_the_batch_uncommitted(caplog):
    consumer = FakeConsumer()
    consumer.append(0, 4)
    stop = asyncio.Event()

    async def insert():
        stop.set()
        raise ConnectionError("database away")

    async def handle(batch: Batch):
        if batch.records:
            await retry("test insert", insert, stop=stop, first_backoff_s=0.01)

    await asyncio.wait_for(shell_for(consumer, handle).run(stop), 5)
    assert consumer.commits == []
    assert any("not committed" in r.getMessage() for r in caplog.records)


async def test_retry_gives_up_with_stopped_only_once_stopping():
    stop = asyncio.Event()
    stop.set()

    async def fail():
        raise ConnectionError("away")

    with pytest.raises(Stopped):
        await retry("x", fail, stop=stop)


async def test_the_assignment_is_reported_before_the_first_batch_and_after_a_refused_commit(caplog):
    consumer = FakeConsumer()
    consumer.append(0, 2)
    events = []
    consumer.refuse_next_commit = True

    async def assigned(partitions):
        events.append(("assigned", sorted(partitions)))

    async def handle(batch: Batch):
        if batch.records:
            events.append(("handle", offsets(batch.records)))
            consumer.append(0)  # something for the next batch

    await run_until(shell_for(consumer, handle, on_assignment=assigned), lambda: consumer.commits)
    assert events[:4] == [
        ("assigned", [P0]), ("handle", [(0, 0), (0, 1)]),  # this commit is refused
        ("assigned", [P0]), ("handle", [(0, 2)]),
    ]
    assert consumer.commits[0] == {P0: 3}
    assert any("commit refused" in r.getMessage() for r in caplog.records)


async def test_it_reads_the_next_batch_while_handling_with_read_ahead():
    consumer = FakeConsumer()
    consumer.append(0, 6)
    reads_while_handling = []

    async def handle(batch: Batch):
        if batch.records:
            await asyncio.sleep(0.05)
            reads_while_handling.append(consumer.reads)

    shell = shell_for(consumer, handle, max_records=3, read_ahead=True)
    await run_until(shell, lambda: len(consumer.commits) == 2)
    assert consumer.commits == [{P0: 3}, {P0: 6}]
    assert reads_while_handling[0] >= 2  # the second batch was read before the first was committed


async def _batches_under_a_trickle(ready_records: int, per_ms: int, handle_s: float, max_wait_s: float,
                                   consumer: FakeConsumer | None = None, **busy):
    """Batches a read-ahead shell cuts from records arriving ``per_ms`` a millisecond for 0.6 s,
    with a handler busy ``handle_s`` per batch; the time each batch was handed over."""
    consumer = consumer or FakeConsumer()
    batches = Batches(consumer, max_records=1_000_000, max_wait_s=max_wait_s, poll_ms=50, **busy)
    batches.ready_records = ready_records
    seen: list[tuple[float, int]] = []

    async def handle(batch: Batch):
        if batch.records:
            seen.append((time.monotonic(), len(batch.records)))
            await asyncio.sleep(handle_s)

    async def trickle():
        for _ in range(300):
            consumer.append(0, per_ms)
            await asyncio.sleep(0.002)

    shell = ConsumerShell("test", consumer, handle, batches=batches, read_ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(shell.run(stop))
    started = time.monotonic()
    await trickle()
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5.0)
    return started, seen


async def test_under_load_a_read_ahead_batch_goes_when_the_handler_waits():
    """Group commit: the next batch is what arrived while the last one was handled, not a wait
    of max_wait_s (here longer than the whole trickle)."""
    started, seen = await _batches_under_a_trickle(ready_records=20, per_ms=4, handle_s=0.05, max_wait_s=2.0)
    assert len(seen) >= 5, seen
    # Bounds far under max_wait_s (2 s), which is what a batch that waited for its window would show: the
    # handler's 50 ms and the loop's turns take 0.05-0.06 s here, and up to 0.23 s was seen beside a busy suite.
    assert seen[0][0] - started < 1.0, "the first batch goes once it holds ready_records and the handler waits"
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:-1])]
    assert max(gaps) < 1.0, gaps


async def test_busy_a_read_ahead_batch_gathers_for_the_busy_wait():
    """After a batch of busy_records, the next read-ahead batch does not go as soon as the handler
    waits: it gathers for busy_wait_s (fewer, bigger batches under load)."""
    started, seen = await _batches_under_a_trickle(ready_records=20, per_ms=4, handle_s=0.02, max_wait_s=2.0,
                                                   busy_records=20, busy_wait_s=0.25)
    assert len(seen) >= 2, seen
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:-1])]
    assert all(gap >= 0.25 for gap in gaps), gaps


async def test_busy_with_busy_read_ms_the_batch_still_gathers_but_is_read_as_it_comes():
    """A Kafka consumer fetches again only for partitions whose fetched records were taken: with
    ``busy_read_ms`` the busy window is read that often, and the batches are as long as without it."""
    once, often = FakeConsumer(), FakeConsumer()
    _, seen_once = await _batches_under_a_trickle(ready_records=20, per_ms=4, handle_s=0.02, max_wait_s=2.0,
                                                  consumer=once, busy_records=20, busy_wait_s=0.25)
    _, seen = await _batches_under_a_trickle(ready_records=20, per_ms=4, handle_s=0.02, max_wait_s=2.0,
                                             consumer=often, busy_records=20, busy_wait_s=0.25, busy_read_ms=20)
    assert len(seen) >= 2, seen
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:-1])]
    assert all(gap >= 0.25 for gap in gaps), gaps
    # About one read per 20 ms of the 0.6 s trickle, against one per window.
    assert often.reads >= once.reads + 10, (once.reads, often.reads)
    assert sum(n for _, n in seen) == sum(n for _, n in seen_once) == 1200


async def _gaps_behind_a_handler(handle_s, seconds: float = 1.6) -> list[float]:
    """A read-ahead shell (window 0.05 s, busy window 0.3 s, a record rate that never makes it busy) over
    records arriving every 10 ms; ``handle_s(elapsed)`` is how long the handler takes a batch handed to it
    ``elapsed`` seconds in. The gaps between the batches handed over, with when each later one was."""
    consumer = FakeConsumer()
    batches = Batches(consumer, max_records=1_000_000, max_wait_s=0.05, poll_ms=50, busy_records=10_000,
                      busy_wait_s=0.3)
    seen: list[float] = []
    started = time.monotonic()

    async def handle(batch: Batch):
        if batch.records:
            seen.append(time.monotonic())
            await asyncio.sleep(handle_s(seen[-1] - started))

    shell = ConsumerShell("test", consumer, handle, batches=batches, read_ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(shell.run(stop))
    while time.monotonic() - started < seconds:
        consumer.append(0)
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5.0)
    return [(b - a, b - started) for a, b in zip(seen, seen[1:])]


async def test_a_handler_busy_half_the_time_or_more_makes_the_batches_gather_for_the_busy_wait():
    """Few records, but each batch costs the handler 0.1 s against a 0.05 s window: with batches cut as soon
    as it waits, it would be busy all the time. Its share of the time makes the shell busy, so the batches
    gather for busy_wait_s and it pays its cost about a third as often; once it takes little, short
    windows again."""
    gaps = await _gaps_behind_a_handler(lambda elapsed: 0.1 if elapsed < 1.0 else 0.002, seconds=1.8)
    slow = [gap for gap, at in gaps[2:] if at < 1.0]
    assert slow and all(gap >= 0.28 for gap in slow), gaps
    fast = [gap for gap, at in gaps if at > 1.5]  # a share of 0.002 s over 0.3 s leaves busy
    assert fast and max(fast) < 0.2, gaps


async def test_a_handler_that_takes_little_keeps_the_short_window():
    gaps = await _gaps_behind_a_handler(lambda elapsed: 0.005)
    assert len(gaps) >= 8 and max(gap for gap, _ in gaps[1:]) < 0.2, gaps


async def test_under_light_load_a_read_ahead_batch_still_waits_its_time():
    started, seen = await _batches_under_a_trickle(ready_records=10_000, per_ms=1, handle_s=0.0, max_wait_s=0.25)
    assert seen and seen[0][0] - started >= 0.25  # fewer than ready_records: the batch's time, as before
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert min(gaps, default=1.0) >= 0.2, gaps  # at most one batch per window, however long the trickle took


async def _batches_behind_a_busy_handler(handle_s: float, max_wait_s: float) -> list[tuple[float, float, list]]:
    """Records arrive every 5 ms for 0.6 s; the handler is busy ``handle_s`` per batch. Per batch: when the
    handler got it, when the handler before it ended, and its records' arrival times."""
    consumer = FakeConsumer()
    batches = Batches(consumer, max_records=1_000_000, max_wait_s=max_wait_s, poll_ms=50)
    arrived: dict[int, float] = {}
    seen: list[tuple[float, float, list]] = []
    ended = [0.0]

    async def handle(batch: Batch):
        if batch.records:
            seen.append((time.monotonic(), ended[0], [arrived[r.offset] for r in batch.records]))
            await asyncio.sleep(handle_s)
            ended[0] = time.monotonic()

    shell = ConsumerShell("test", consumer, handle, batches=batches, read_ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(shell.run(stop))
    for _ in range(120):
        for record in consumer.append(0):
            arrived[record.offset] = time.monotonic()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5.0)
    return seen


async def test_behind_a_busy_handler_a_batch_goes_as_soon_as_the_handler_waits():
    """A backlog (records older than the window when the handler frees) goes at once, however few
    (ready_records is 500 here, far more than arrive)."""
    seen = await _batches_behind_a_busy_handler(handle_s=0.25, max_wait_s=0.15)
    later = seen[1:-1]
    assert len(later) >= 1, seen
    for got_at, previous_ended, _ in later:
        assert got_at - previous_ended < 0.12, (got_at - previous_ended)  # a loop turn or two, never a window


async def test_a_batch_read_ahead_is_not_cut_while_the_handler_is_busy():
    """The window ends during the handling, yet the batch keeps reading: it holds what arrived until
    the handler waited for it, not only the first max_wait_s of it (which would then wait, stale)."""
    seen = await _batches_behind_a_busy_handler(handle_s=0.25, max_wait_s=0.02)
    assert len(seen) >= 3, seen
    for got_at, previous_ended, arrivals in seen[1:-1]:
        assert previous_ended - arrivals[-1] < 0.1, "records that came while the handler was busy are in"
        assert arrivals[-1] - arrivals[0] > 0.15, "far longer than the window: the batch was not cut at its end"


async def test_when_idle_a_batch_waits_its_window_after_its_first_record():
    consumer = FakeConsumer()
    batches = Batches(consumer, max_records=1_000, max_wait_s=0.2, poll_ms=50)
    seen: list[tuple[float, int]] = []

    async def handle(batch: Batch):
        if batch.records:
            seen.append((time.monotonic(), len(batch.records)))

    shell = ConsumerShell("test", consumer, handle, batches=batches, read_ahead=True)
    stop = asyncio.Event()
    task = asyncio.create_task(shell.run(stop))
    await asyncio.sleep(0.1)  # the handler waits
    first = time.monotonic()
    consumer.append(0)
    await asyncio.sleep(0.05)
    consumer.append(0, 2)
    await asyncio.sleep(0.4)
    stop.set()
    await asyncio.wait_for(task, 5.0)
    assert [n for _, n in seen] == [3], seen  # one batch of the three records, not one per record
    assert seen[0][0] - first >= 0.2


async def test_it_stops_promptly_when_idle():
    stop = asyncio.Event()

    async def handle(batch: Batch):
        return None

    task = asyncio.create_task(shell_for(FakeConsumer(), handle, read_ahead=True).run(stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 1.0)


async def test_it_logs_progress_with_counts_and_rates(caplog):
    caplog.set_level(logging.INFO)
    consumer = FakeConsumer()
    consumer.append(0, 7)

    async def handle(batch: Batch):
        return None

    shell = shell_for(consumer, handle, log_every_s=0.0, progress=lambda elapsed_s: "12 widgets")
    await run_until(shell, lambda: consumer.commits)
    lines = [r.getMessage() for r in caplog.records if "records/s" in r.getMessage()]
    assert lines and lines[-1].startswith("test: ") and "(7 in 1 batches), 12 widgets" in lines[-1]


async def test_it_logs_each_batch_at_debug_with_where_its_records_time_went(caplog):
    caplog.set_level(logging.DEBUG, logger="batches.test")
    consumer = FakeConsumer()
    consumer.append(0, 5)
    written_ms = int(time.time() * 1000) - 300  # the records were produced 300 ms ago
    consumer.logs[P0][:] = [r._replace(timestamp_ms=written_ms) for r in consumer.logs[P0]]

    async def handle(batch: Batch):
        await asyncio.sleep(0.05)

    shell = shell_for(consumer, handle, read_ahead=True)
    await run_until(shell, lambda: consumer.commits)
    lines = [r.getMessage() for r in caplog.records if r.name == "batches.test"]
    assert lines, "one line per batch"
    m = re.search(r"test batch: 5 records, oldest (\d+) ms old when read, (\d+) ms when cut, (\d+) ms when committed; "
                  r"waited (\d+) ms for the handler, handled in (\d+) ms, committed in (\d+) ms", lines[0])
    assert m, lines[0]
    read, cut, committed, _, handled, _ = map(int, m.groups())
    assert 300 <= read <= cut <= committed
    assert handled >= 49 and committed - cut >= handled - 2  # figures rounded to the millisecond


def test_a_read_ahead_batch_waits_out_its_window_without_spinning():
    """A record alone, the handler waiting: the batch waits for its window's end, then takes what came in one
    read. (The wait was rounded down to whole milliseconds: in the window's last one it read without waiting,
    again and again, about 24 reads of nothing a batch in an idle engine.) On uvloop, as the services run: its
    timers count whole milliseconds and may end up to one before the time asked."""
    uvloop.run(_a_lone_record_batched_five_times())


async def _a_lone_record_batched_five_times() -> None:
    for _ in range(5):
        consumer = FakeConsumer()
        timeouts = []
        read = consumer.getmany

        async def getmany(max_records: int = 10_000, timeout_ms: int = 200):
            timeouts.append(timeout_ms)
            return await read(max_records, timeout_ms)

        consumer.getmany = getmany
        batches = Batches(consumer, max_records=10_000, max_wait_s=0.0505, poll_ms=1000)
        batches.waiting = asyncio.Event()
        batches.waiting.set()  # the handler waits
        consumer.append(0)
        started = time.monotonic()
        batch = await batches.next(asyncio.Event())
        assert len(batch.records) == 1 and time.monotonic() - started >= 0.05
        assert timeouts.count(0) == 1, timeouts  # the last read, at the window's end
