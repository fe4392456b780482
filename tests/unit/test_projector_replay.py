"""The projector's batch policy: after a restart, the journaled batch is cut again at the same offsets."""

from __future__ import annotations

import asyncio

from projector.replay import Batcher, batch_token, ranges_of
from runtime.eventlog.base import TopicPartition

from .fake_consumer import TOPIC, FakeConsumer, offsets

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


async def test_the_first_batch_after_a_restart_is_cut_at_the_journaled_offsets():
    consumer = FakeConsumer()
    consumer.append(0, 20)
    batcher = Batcher(consumer, {P0: (0, 5, "t")}, max_records=50)
    first = await batcher.next(asyncio.Event())
    second = await batcher.next(asyncio.Event())
    assert first.replayed and offsets(first.records) == [(0, o) for o in range(6)]
    assert not second.replayed and offsets(second.records) == [(0, o) for o in range(6, 20)]


async def test_a_journaled_batch_over_two_partitions_is_read_whole_behind_a_backlog():
    consumer = FakeConsumer(partitions=2)
    consumer.append(0, 20)  # read first: the other partition's part comes later
    consumer.append(1, 20)
    journaled = {P0: (0, 3), P1: (0, 3)}
    token = batch_token(journaled)
    batcher = Batcher(consumer, {tp: (a, b, token) for tp, (a, b) in journaled.items()}, max_records=8)
    batch = await batcher.next(asyncio.Event())
    following = await batcher.next(asyncio.Event())
    assert batch.replayed and ranges_of(batch.records) == journaled
    assert batch_token(ranges_of(batch.records)) == token
    assert not following.replayed and following.records
    assert all(r.offset > 3 for r in following.records + batcher.held)


async def test_a_partition_whose_journal_entry_does_not_match_is_read_on():
    # p0's journaled batch was committed (the group reads on from 4); p1's was not.
    consumer = FakeConsumer(partitions=2, committed={P0: 4})
    consumer.append(0, 10)
    consumer.append(1, 10)
    batcher = Batcher(consumer, {P0: (0, 3, "done"), P1: (0, 3, "open")}, max_records=50)
    batch = await batcher.next(asyncio.Event())
    following = await batcher.next(asyncio.Event())
    assert batch.replayed and offsets(batch.records) == [(1, o) for o in range(4)]
    assert ranges_of(following.records) == {P0: (4, 9), P1: (4, 9)}


async def test_journal_entries_of_partitions_not_assigned_or_read_to_the_end_are_dropped():
    consumer = FakeConsumer(partitions=2, committed={P1: 4})
    consumer.append(0, 10)
    consumer.append(1, 4)  # all committed: nothing to read there
    batcher = Batcher(consumer, {P0: (0, 3, "t"), P1: (0, 3, "t"), TopicPartition(TOPIC, 7): (0, 3, "u")},
                      max_records=50)
    batch = await batcher.next(asyncio.Event())
    following = await batcher.next(asyncio.Event())
    assert batch.replayed and offsets(batch.records) == [(0, o) for o in range(4)]
    assert offsets(following.records) == [(0, o) for o in range(4, 10)]


async def test_a_journaled_batch_that_cannot_be_cut_again_is_logged_and_skipped(caplog):
    consumer = FakeConsumer()
    consumer.append(0, 100)
    batcher = Batcher(consumer, {P0: (0, 50, "t")}, max_records=4)  # more than it reads while looking
    batch = await batcher.next(asyncio.Event())
    following = await batcher.next(asyncio.Event())
    assert not batch.replayed and offsets(batch.records) == [(0, o) for o in range(4)]
    assert offsets(following.records) == [(0, o) for o in range(4, 8)]
    assert any("could not be cut again" in r.getMessage() for r in caplog.records)


async def test_stopping_during_the_replay_keeps_what_was_read_for_the_next_batch():
    consumer = FakeConsumer(partitions=2)
    consumer.append(0, 10)
    consumer.append(1, 2)
    batcher = Batcher(consumer, {P0: (0, 3, "t"), P1: (0, 3, "t")}, max_records=50)
    stop = asyncio.Event()
    task = asyncio.create_task(batcher.next(stop))  # waits for the rest of p1's part of the batch
    await asyncio.sleep(0.3)
    stop.set()
    batch = await asyncio.wait_for(task, 2)
    assert batch.records == [] and offsets(batcher.held) == [(0, o) for o in range(10)] + [(1, 0), (1, 1)]
    consumer.append(1, 3)
    again = await batcher.next(asyncio.Event())
    assert again.replayed and ranges_of(again.records) == {P0: (0, 3), P1: (0, 3)}


async def test_a_journaled_partition_that_never_shows_up_under_load_is_not_waited_for():
    """p1's journaled part was committed (the group starts past it) and p1 gets nothing new, while
    p0 never lets a read come back empty: p1's part is forgotten after one read, as an empty read
    would have it, and p0's is cut again, instead of waiting for p1 until stopped (a journaled
    transitions partition is quiet for minutes)."""
    consumer = FakeConsumer(partitions=2, committed={P1: 4})
    consumer.append(1, 4)
    stop = asyncio.Event()

    async def steady_load() -> None:
        while not stop.is_set():
            consumer.append(0, 3)
            await asyncio.sleep(0)

    load = asyncio.create_task(steady_load())
    try:
        batcher = Batcher(consumer, {P0: (0, 2, "t"), P1: (0, 3, "t")}, max_records=10_000)
        batch = await asyncio.wait_for(batcher.next(stop), 5)
    finally:
        stop.set()
        await load
    assert batch.replayed and offsets(batch.records) == [(0, 0), (0, 1), (0, 2)]
    assert consumer.reads <= 3
