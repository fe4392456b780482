"""The projector's batch policy: after a restart, the journaled batch is cut again at the same offsets."""

from __future__ import annotations

import asyncio

from projector.replay import Batcher, batch_token
from runtime.consumer import ranges_of
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


def _decode(records):
    """A decode as the projector's: a tuple of lists, record by record (here: offsets, and the odd ones)."""
    return [r.offset for r in records], [r.offset for r in records if r.offset % 2]


class _Greedy(FakeConsumer):
    """A consumer whose reads may hold more than asked for (the batch then ends within a read)."""

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200):
        return await super().getmany(max_records=10_000, timeout_ms=timeout_ms)


async def test_each_read_is_decoded_as_it_comes_and_a_batch_gets_the_decoding_of_its_records():
    consumer = _Greedy()
    decoded_sizes = []

    def decode(records):
        decoded_sizes.append(len(records))
        return _decode(records)

    batcher = Batcher(consumer, {}, max_records=10, max_wait_s=0.0, decode=decode)
    consumer.append(0, 4)
    first = await batcher.next(asyncio.Event())
    assert batcher.decoded(first.records) == _decode(first.records)
    consumer.append(0, 14)  # one read of 14: the next batch ends within it
    second = await batcher.next(asyncio.Event())
    assert batcher.decoded(second.records) == _decode(second.records)
    third = await batcher.next(asyncio.Event())
    assert batcher.decoded(third.records) == _decode(third.records)
    assert offsets(second.records) == [(0, o) for o in range(4, 14)]
    assert offsets(third.records) == [(0, o) for o in range(14, 18)]
    assert decoded_sizes[:2] == [4, 14], "each read decoded when it was read, not when its batch was cut"


async def test_a_batch_made_of_several_reads_gets_their_decodings_end_to_end():
    consumer = FakeConsumer()
    batcher = Batcher(consumer, {}, max_records=100, max_wait_s=0.3, decode=_decode)

    async def trickle():
        for _ in range(5):
            consumer.append(0, 3)
            await asyncio.sleep(0.02)

    batch, _ = await asyncio.gather(batcher.next(asyncio.Event()), trickle())
    assert len(batch.records) == 15
    assert batcher.decoded(batch.records) == _decode(batch.records)


async def test_a_replayed_batch_read_outside_the_decoding_reads_is_decoded_whole():
    consumer = FakeConsumer()
    consumer.append(0, 20)
    batcher = Batcher(consumer, {P0: (0, 5, "t")}, max_records=50, max_wait_s=0.0, decode=_decode)
    first = await batcher.next(asyncio.Event())
    assert first.replayed
    assert batcher.decoded(first.records) == _decode(first.records)
    second = await batcher.next(asyncio.Event())
    assert batcher.decoded(second.records) == _decode(second.records)


async def test_after_a_busy_batch_the_next_gathers_for_the_busy_wait():
    """The projector's batches keep the shell's busy window (``up``: fewer, bigger inserts under load):
    after a batch of busy_records, the next one gathers for busy_wait_s, journaled batch or not."""
    consumer = FakeConsumer()
    consumer.append(0, 20)
    batcher = Batcher(consumer, {P0: (0, 9, "t")}, max_records=1_000, max_wait_s=0.02)
    batcher.busy_records, batcher.busy_wait_s = 5, 0.3
    stop = asyncio.Event()
    replayed = await batcher.next(stop)
    assert replayed.replayed and len(replayed.records) == 10
    first = await batcher.next(stop)  # the rest of the backlog, read at once
    assert len(first.records) == 10

    async with consumer.trickling():
        started = asyncio.get_running_loop().time()
        busy = await batcher.next(stop)
        elapsed = asyncio.get_running_loop().time() - started
    assert busy.records and 0.3 <= elapsed < 1.0, elapsed  # not max_wait_s: the last batch was busy


async def test_partitions_given_while_running_start_with_their_last_owners_journaled_batch():
    # This member had p2; a rebalance gives it p0 and p1, whose last owner journaled a batch over both and died
    # before committing it. That batch comes first, cut as journaled, decoded as its own records; p2's own
    # journal entry was committed (its reading is past it) and changes nothing.
    P2 = TopicPartition(TOPIC, 2)
    consumer = _Greedy(partitions=3)
    consumer.assigned = {P2}
    consumer.append(2, 5)
    dead = batch_token({P0: (0, 3), P1: (0, 3)})
    journal = {P0: (0, 3, dead), P1: (0, 3, dead), P2: (0, 4, "mine")}
    looked = []

    async def tail():
        looked.append(None)
        return journal

    batcher = Batcher(consumer, {}, max_records=50, max_wait_s=0.0, decode=_decode, journal=tail)
    first = await batcher.next(asyncio.Event())
    assert ranges_of(first.records) == {P2: (0, 4)} and not looked  # the start's journal read covers it
    consumer.assigned |= {P0, P1}
    consumer.append(0, 10)
    consumer.append(1, 10)
    consumer.append(2, 2)
    replayed = await batcher.next(asyncio.Event())
    assert replayed.replayed and ranges_of(replayed.records) == {P0: (0, 3), P1: (0, 3)}
    assert batch_token(ranges_of(replayed.records)) == dead
    assert batcher.decoded(replayed.records) == _decode(replayed.records)
    following = await batcher.next(asyncio.Event())
    assert not following.replayed
    assert ranges_of(following.records) == {P0: (4, 9), P1: (4, 9), P2: (5, 6)}
    assert batcher.decoded(following.records) == _decode(following.records)
    assert len(looked) == 1  # once per partition given, not per batch
    consumer.append(0, 3)
    await batcher.next(asyncio.Event())
    assert len(looked) == 1


async def test_a_partition_given_back_is_looked_at_again():
    consumer = FakeConsumer(partitions=2)
    consumer.append(0, 3)
    consumer.append(1, 3)
    looked = []

    async def tail():
        looked.append(None)
        return {}

    batcher = Batcher(consumer, {}, max_records=50, max_wait_s=0.0, journal=tail)
    await batcher.next(asyncio.Event())
    consumer.assigned = {P0}  # p1 taken away...
    consumer.append(0, 1)
    await batcher.next(asyncio.Event())
    consumer.assigned = {P0, P1}  # ...and given back
    consumer.append(1, 1)
    batch = await batcher.next(asyncio.Event())
    assert ranges_of(batch.records) == {P1: (3, 3)} and len(looked) == 1


async def test_a_journaled_batch_split_between_members_is_read_on_with_a_warning(caplog):
    P2 = TopicPartition(TOPIC, 2)
    consumer = FakeConsumer(partitions=3)
    consumer.assigned = {P2}
    consumer.append(2, 2)
    dead = batch_token({P0: (0, 3), P1: (0, 3)})

    async def tail():
        return {P0: (0, 3, dead), P1: (0, 3, dead)}

    batcher = Batcher(consumer, {}, max_records=50, max_wait_s=0.0, journal=tail)
    await batcher.next(asyncio.Event())
    consumer.assigned |= {P0}  # p1 went to another member
    consumer.append(0, 6)
    batch = await batcher.next(asyncio.Event())
    assert not batch.replayed and ranges_of(batch.records) == {P0: (0, 5)}
    assert "spans partitions the group gave to other members" in caplog.text


async def test_a_journaled_batch_split_between_members_is_made_whole_with_the_others_records():
    # The group gave p0 here and p1 to another member; the dead member's batch spans both. Its p1 part is read
    # outside the group, so the batch (and its token) is the dead member's whole.
    P2 = TopicPartition(TOPIC, 2)
    consumer = FakeConsumer(partitions=3)
    consumer.assigned = {P2}
    consumer.append(2, 2)
    consumer.append(1, 6)
    dead = batch_token({P0: (0, 3), P1: (0, 2)})
    asked = []

    async def tail():
        return {P0: (0, 3, dead), P1: (0, 2, dead)}

    async def read_range(topic, partition, first, last):
        asked.append((partition, first, last))
        return consumer.logs[TopicPartition(topic, partition)][first:last + 1]

    batcher = Batcher(consumer, {}, max_records=50, max_wait_s=0.0, journal=tail, read_range=read_range)
    await batcher.next(asyncio.Event())
    consumer.assigned |= {P0}
    consumer.append(0, 6)
    batch = await batcher.next(asyncio.Event())
    assert batch.replayed and ranges_of(batch.records) == {P0: (0, 3), P1: (0, 2)}
    assert batch_token(ranges_of(batch.records)) == dead and asked == [(1, 0, 2)]
    following = await batcher.next(asyncio.Event())
    assert ranges_of(following.records) == {P0: (4, 5)}


def test_a_scratch_table_of_runs_written_again_is_dropped_only_once_a_crash_left_it():
    from projector.service import _RUNS_SCRATCH, _SCRATCH_LEFT_S, _left_behind
    from schemas.events import uuid7

    now_ms = 1_800_000_000_000
    made = _RUNS_SCRATCH + uuid7(now_ns=now_ms * 1_000_000).replace("-", "")
    assert not _left_behind(made, now_ms + 5_000)  # another member's, being written
    assert _left_behind(made, now_ms + _SCRATCH_LEFT_S * 1000 + 1)
    assert _left_behind(_RUNS_SCRATCH + "left", now_ms)  # not of a name so made
    assert _left_behind(_RUNS_SCRATCH + "z" * 32, now_ms)


async def test_the_batch_cut_after_one_is_given_once_it_is_cut_or_not_at_all_once_the_write_ends():
    consumer = FakeConsumer()
    consumer.append(0, 10)
    batcher = Batcher(consumer, {}, max_records=5)
    first = await batcher.next(asyncio.Event())
    written = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(batcher.following(first, written))
    await asyncio.sleep(0)
    assert not waiting.done()
    second = await batcher.next(asyncio.Event())  # the shell's read-ahead
    assert await waiting is second
    never = asyncio.ensure_future(batcher.following(second, written))
    await asyncio.sleep(0)
    written.set_result(None)  # the write ended before a next batch was cut
    assert await never is None
