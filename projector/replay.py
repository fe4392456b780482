"""The projector's batch policy: batches as the shell's, but after a restart the journaled batch first.

ClickHouse drops a block it has seen under the same ``insert_deduplication_token``.
The token comes from the batch's offsets (``batch_token``), so a batch that was
journaled and inserted but not committed before a crash must be cut again at
exactly the same offsets; ``Batcher`` does that, then reads on as ``Batches``.
The same holds for partitions a running projector is given by its group (Kafka): their
last owner may have died in the middle of a batch (``Batcher._given``). A journaled batch
whose partitions the group split between several members is made whole by each of them,
its part in the others' partitions read outside the group (``read_range``); each commits
its own partitions only. Without ``read_range`` it is read on without (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from itertools import chain
from typing import Awaitable, Callable

from runtime.consumer import Batch, Batches, first_offsets, last_offsets
from runtime.eventlog.base import Record, TopicPartition

log = logging.getLogger(__name__)

BATCH_MAX = 50_000
# The window (runtime.consumer.Batches): a batch gathers this long after its first record (under load, not busy: it
# goes when the handler waits). A batch costs its inserts' fixed costs (about 30-65 ms of CPU for a few records on
# a slow machine: ClickHouse's parts, their files and merges), so at a few pings a second a window of 0.1 s made
# about four batches a second, a ping and the transition it caused in two; 0.4 s keeps ping -> queryable under
# half a second and took the engine 0.5-0.8x the CPU at 2-50 pings/s (bench/results/engine.md, 2026-12-03).
BATCH_WAIT_S = 0.4
_REPLAY_READ_MAX = 4  # batches' worth of records read at most while looking for the journaled batch


def batch_token(ranges: dict[TopicPartition, tuple[int, int]]) -> str:
    text = ";".join(f"{tp.topic}/{tp.partition}:{a}-{b}" for tp, (a, b) in sorted(ranges.items()))
    return hashlib.sha1(text.encode()).hexdigest()


class Batcher(Batches):
    """Reads batches bounded by count and time; after a restart, first re-cuts the journaled batch.

    ``replay`` is the journal's last batch per partition: ``tp -> (first, last, token)``.
    The batch that was journaled but not committed starts exactly at the group's
    committed offsets; journal entries for partitions that start elsewhere were
    committed already and are dropped.
    """

    def __init__(
        self,
        consumer,
        replay: dict[TopicPartition, tuple[int, int, str]],
        max_records: int = BATCH_MAX,
        max_wait_s: float = BATCH_WAIT_S,
        decode: Callable[[list[Record]], object] | None = None,
        journal: Callable[[], Awaitable[dict[TopicPartition, tuple[int, int, str]]]] | None = None,
        read_range: Callable[[str, int, int, int], Awaitable[list[Record]]] | None = None,
    ) -> None:
        super().__init__(consumer, max_records, max_wait_s, poll_ms=200)
        self.replay = dict(replay)
        # ``journal()``: the journal's last batch per partition, read again for the partitions this consumer is
        # given while it runs (a rebalance: the member that had them may have died in the middle of a batch).
        # ``looked``: the partitions whose journal was looked at since they were given (None: before the first
        # batch, whose partitions the journal read at the start covers).
        self.journal = journal
        self.looked: set[TopicPartition] | None = None
        # ``read_range(topic, partition, first, last)``: a journaled batch's records in a partition the group gave
        # to another member, read outside the group, so that the batch is made again whole here (its tokens
        # span all its partitions); the member that has the partition does the same, and ClickHouse keeps one.
        self.read_range = read_range
        # ``decode(records)`` (pure: record by record, no state) is run on each read's records as soon as they
        # come, so with the shell's read-ahead a batch is decoded while the one before it is inserted (the
        # engine runs without the GIL). It returns a tuple of lists, and the decoding of a batch is the
        # decodings of its reads, list by list, end to end.
        self.decode = decode
        self._reads: list[tuple[list[Record], tuple]] = []  # decoded reads not yet in a batch, in read order
        self._decoded: list[tuple[list[Record], object]] = []  # (a batch's records, what decode made of them)
        self.latest: Batch | None = None  # the last batch cut (``following``)
        self._was_cut = asyncio.Event()

    def decoded(self, records: list[Record], keep: bool = False) -> object | None:
        """What ``decode`` made of this very batch (the same list), if it ran; None otherwise. Given once, unless
        ``keep``."""
        for i, (held, result) in enumerate(self._decoded):
            if held is records:
                if not keep:
                    del self._decoded[i]
                return result
        return None

    async def following(self, batch: Batch, until: asyncio.Future) -> Batch | None:
        """The batch cut after ``batch`` (the shell's read-ahead), once it is; None if ``until`` is done first."""
        while self.latest is batch:
            cut = asyncio.ensure_future(self._was_cut.wait())
            try:
                await asyncio.wait({cut, until}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cut.cancel()  # nothing when it is done
            if not cut.done():
                return None
            self._was_cut.clear()
        return self.latest

    async def _read(self, max_records: int, timeout_ms: int) -> list[Record]:
        got = await super()._read(max_records, timeout_ms)
        if got and self.decode is not None:
            self._reads.append((got, self.decode(got)))
        return got

    async def next(self, stop: asyncio.Event) -> Batch:
        """The next batch; ``replayed`` when it is the journaled one, cut as before."""
        batch = await self._next(stop)
        if self.journal is not None and batch.records:
            batch = await self._given(batch, stop)
        if self.decode is not None and batch.records:
            # At most the batch being handled and the one read ahead: a batch that was never asked for
            # (the shell stopped) does not pin its records.
            self._decoded = self._decoded[-1:] + [(batch.records, self._decode_batch(batch.records))]
        self.latest = batch
        self._was_cut.set()
        return batch

    async def _given(self, batch: Batch, stop: asyncio.Event) -> Batch:
        """``batch``, or, when it holds records of partitions given to this consumer since it last looked (a
        rebalance moved them here), the journaled batch of their last owner, first.

        A member that died in the middle of a batch journaled it and wrote part of it, and committed nothing: the
        member given its partitions reads those records again from the committed offsets, and must cut them as
        the journal says, so that its blocks carry the dead member's tokens and ClickHouse drops what was written
        (a batch cut otherwise counts its runs in the rollups twice). A partition given back to this consumer is
        looked at again: the journal names its last batch, which is cut and written again under the same tokens
        if it was not committed (a commit refused by the rebalance), as after a restart."""
        partitions = set(batch.ranges)
        if self.looked is None:  # the journal read at the start covers the first batch's partitions
            self.looked = partitions
            return batch
        assigned = self.consumer.assignment()
        if assigned:
            self.looked &= assigned  # a partition taken away is looked at again once given back
        given = partitions - self.looked
        self.looked |= partitions
        if not given or batch.replayed:
            return batch
        tail = await self.journal()
        firsts = {tp: first for tp, (first, _) in batch.ranges.items()}
        # A batch not committed starts at the committed offset, where this read began: other entries were committed.
        tokens = {entry[2] for tp, entry in tail.items() if tp in given and firsts.get(tp) == entry[0]}
        # The whole batch of each such token: its block and token span all its partitions.
        journaled = {tp: entry for tp, entry in tail.items() if entry[2] in tokens}
        if not journaled:
            return batch
        self.looked |= set(journaled)
        log.info("projector: partitions given to this member (%s): their last journaled batch first",
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(given & set(journaled))))
        self.held = batch.records + self.held  # read again through the journal's cut
        self.replay.update(journaled)
        return await self._next(stop)

    def _decode_batch(self, records: list[Record]) -> tuple:
        """``decode(records)`` from the decoded reads the batch is made of; reads of records the batch
        does not start with (read outside ``_read``, as the replay does) are decoded again, whole."""
        parts, at, n = [], 0, len(records)
        while self._reads and at < n:
            read, result = self._reads[0]
            if read[0] is not records[at]:
                break
            if at + len(read) <= n:
                # The read whole, record for record (a batch cut again from the journal, as ``_given`` makes one,
                # takes some records of a read and not others).
                if read != records[at:at + len(read)]:
                    break
                parts.append(result)
                at += len(read)
                self._reads.pop(0)
            else:  # the batch ends within this read (it was full): the rest starts the next batch
                k = n - at
                if read[:k] != records[at:]:
                    break
                parts.append(self.decode(read[:k]))
                self._reads[0] = (read[k:], self.decode(read[k:]))
                at = n
        if at != n:
            self._reads.clear()
            return self.decode(records)
        if len(parts) == 1:
            return parts[0]
        return tuple(list(chain.from_iterable(part[i] for part in parts)) for i in range(len(parts[0])))

    async def _next(self, stop: asyncio.Event) -> Batch:
        if not self.replay:
            return await super().next(stop)
        self.read_at = 0.0
        records, self.held = self.held, []
        while not stop.is_set():
            records += await self._read_elsewhere(records)
            cut = self._cut_replayed(records)
            if cut is not None:
                return cut
            if len(records) >= _REPLAY_READ_MAX * self.max_records:
                break
            got = await self.consumer.getmany(max_records=self.max_records, timeout_ms=self.poll_ms)
            if not got:  # drained: journaled partitions we have not seen were committed
                seen = {(r.topic, r.partition) for r in records}
                self.replay = {tp: v for tp, v in self.replay.items() if tp in seen}
            else:
                await self._drop_unreachable(records + got)
            records += got
        if stop.is_set():
            self.held = records
            return Batch([])
        if self.replay:
            log.warning("projector: the journaled batch could not be cut again; reading on without it")
            self.replay = {}
        return Batch(self.split(records))

    async def _read_elsewhere(self, records: list[Record]) -> list[Record]:
        """The records of a journaled batch not committed (its first records here are where it began) in its
        partitions the group gave to other members, read outside the group (``read_range``); none without it."""
        assigned = self.consumer.assignment()
        if self.read_range is None or not assigned:
            return []
        firsts = first_offsets(records)
        open_here = {tok for tp, (first, _, tok) in self.replay.items() if tp in assigned and firsts.get(tp) == first}
        wanted = [(tp, first, last) for tp, (first, last, tok) in self.replay.items()
                  if tok in open_here and tp not in assigned and tp not in firsts]
        out: list[Record] = []
        for tp, first, last in wanted:
            try:
                got = await self.read_range(tp.topic, tp.partition, first, last)
            except Exception as exc:  # noqa: BLE001 - then it is read on without, as _cut_replayed warns
                log.warning("projector: %s/%d of a journaled batch could not be read: %r", tp.topic, tp.partition, exc)
                continue
            if got and got[0].offset == first and got[-1].offset == last:
                out += got
            else:  # not there whole (a compacted topic): read on without it, as _cut_replayed warns
                log.warning("projector: %s/%d of a journaled batch is not in the log whole", tp.topic, tp.partition)
        if wanted:
            log.info("projector: a journaled batch spans partitions of other members: %d records of %d of them read "
                     "outside the group, to make it again whole", len(out), len(wanted))
        return out

    async def _drop_unreachable(self, records: list[Record]) -> None:
        """Forget a journaled batch's part in a partition that has not shown up and never will: this
        consumer starts past the batch's first record there (it was committed), or has read all there
        is. Under load the other partitions never let a read come back empty, so without this the
        batch would be waited for until stopped (a journaled transitions partition gets no new records
        for minutes)."""
        seen = {(r.topic, r.partition) for r in records}
        unseen = [tp for tp in self.replay if tp not in seen]
        if not unseen:
            return
        try:
            positions, ends = await self.consumer.positions(), await self.consumer.end_offsets()
        except Exception as exc:  # noqa: BLE001 - asked again on the next read
            log.debug("projector: positions not known yet: %r", exc)
            return
        for tp in unseen:  # as a read that came back empty: those partitions' parts were committed
            first = self.replay[tp][0]
            position, end = positions.get(tp), ends.get(tp)
            if position is not None and end is not None and (position > first or position >= end):
                del self.replay[tp]

    def _cut_replayed(self, records: list[Record]) -> Batch | None:
        """The journaled batch once it has been read whole; None to read on."""
        firsts, lasts = first_offsets(records), last_offsets(records)
        assigned = self.consumer.assignment()  # may still be empty before a group consumer's first fetch
        # Tokens with a partition of another member's (unless its records were read here: ``_read_elsewhere``).
        elsewhere = {tok for tp, (_, _, tok) in self.replay.items()
                     if assigned and tp not in assigned and tp not in firsts}
        committed = {tok for tp, (first, _, tok) in self.replay.items() if tp in firsts and firsts[tp] != first}
        stale = elsewhere | committed
        split = {tok for tp, (first, _, tok) in self.replay.items()
                 if tok in elsewhere - committed and firsts.get(tp) == first}
        if split:  # its blocks cannot be made again here: cut otherwise, its runs may count twice in the rollups
            log.warning("projector: a journaled batch not committed spans partitions the group gave to other members "
                        "too; reading on without it (%d token(s))", len(split))
        self.replay = {tp: v for tp, v in self.replay.items() if v[2] not in stale}
        if not self.replay:
            return Batch(self.split(records))
        if any(tp not in firsts for tp in self.replay):
            return None
        tokens = {tok for _, _, tok in self.replay.values()}
        if len(tokens) > 1:  # cannot happen with one projector per partition; do not guess
            self.replay = {}
            return Batch(self.split(records))
        ends = {tp: last for tp, (_, last, _) in self.replay.items()}
        if any(lasts[tp] < end for tp, end in ends.items()):
            return None
        batch, held = [], []
        for r in records:
            end = ends.get(TopicPartition(r.topic, r.partition))
            (batch if end is not None and r.offset <= end else held).append(r)
        self.held = held + self.held
        self.replay = {}
        return Batch(batch, replayed=True)
