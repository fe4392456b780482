"""The projector service: pings and transitions from the log into ClickHouse, exactly once in effect.

Each batch (up to ``BATCH_MAX`` records or ``BATCH_WAIT_S`` after its first)
goes through, in this order:

1. journal: the offsets it covers, per partition, into ``projector_batches``;
2. decode (poison records go to the dead-letter topic) and the pure fold, after
   loading from ``check_state`` the state of checks not in memory (a restart
   resumes from there; no history is replayed);
3. inserts into pings, runs, transitions, then check_state, each with an
   ``insert_deduplication_token`` derived from the batch's offsets;
4. commit of the offsets.

A crash anywhere before 4 means the batch is read again: the journal cuts it at
the same offsets, so the same rows form the same blocks with the same tokens
and ClickHouse drops them (the rollup views too); check_state carries the
offsets it has applied, so the fold skips what is already counted. Tables are
ReplacingMergeTrees on the event id as a second line of defence.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import time
from collections import defaultdict

from runtime import deadletter, metrics
from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.base import EventLog, Record, TopicPartition
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, decode, utcnow

from .fold import COLUMNS, CheckFold, fold, state_from_row

log = logging.getLogger(__name__)

GROUP = "pingstream-projector"
TOPICS = [TOPIC_PINGS, TOPIC_TRANSITIONS]
BATCH_MAX = 50_000
BATCH_WAIT_S = 0.2
LOG_EVERY_S = 10.0
_LOAD_CHUNK = 5_000
# Sent as strings, ClickHouse converts them on insert (Native format type conversion): clickhouse-connect
# encodes a string column in a fraction of the time it takes for a UUID or LowCardinality one.
_WIRE = {"UUID": "String", "Nullable(UUID)": "Nullable(String)", "LowCardinality(String)": "String"}


class Projector:
    """Fold state plus the ClickHouse side of a batch; the consumer loop is ``run``."""

    def __init__(self, clickhouse: ClickHouse, event_log: EventLog, consumer: str = GROUP) -> None:
        self.ch = clickhouse
        self.log = event_log
        self.consumer = consumer
        self.states: dict[str, CheckFold] = {}
        self.counts = defaultdict(int)
        self.timings = defaultdict(float)  # seconds spent in decode, load, fold, insert
        self.wire_types: dict[str, list[str]] = {}  # per table: the types its columns are sent as

    # --- state -----------------------------------------------------------------

    async def load_states(self, check_ids: set[str]) -> None:
        missing = [c for c in check_ids if c not in self.states]
        for i in range(0, len(missing), _LOAD_CHUNK):
            chunk = missing[i:i + _LOAD_CHUNK]

            def query(client, chunk=chunk):
                return list(client.query(
                    "SELECT * FROM check_state FINAL WHERE check_id IN {ids:Array(UUID)}", parameters={"ids": chunk}
                ).named_results())

            for row in await self.ch.run(query):
                state = state_from_row(row)
                self.states[state.check_id] = state

    def forget(self) -> None:
        """Partitions moved (rebalance): other projectors may have advanced those checks."""
        self.states.clear()

    # --- journal -----------------------------------------------------------------

    async def journal_tail(self) -> dict[TopicPartition, tuple[int, int, str]]:
        """The last batch journaled per partition: (first, last, token)."""

        def query(client):
            return client.query(
                "SELECT topic, partition, argMax(first_offset, first_offset), argMax(last_offset, first_offset), "
                "argMax(token, first_offset) FROM projector_batches WHERE consumer = {c:String} "
                "GROUP BY topic, partition",
                parameters={"c": self.consumer},
            ).result_rows

        return {TopicPartition(t, int(p)): (int(f), int(last), tok) for t, p, f, last, tok in await self.ch.run(query)}

    async def write_journal(self, ranges: dict[TopicPartition, tuple[int, int]], token: str) -> None:
        rows = [(self.consumer, tp.topic, tp.partition, first, last, token) for tp, (first, last) in ranges.items()]
        await self.ch.run(lambda c: c.insert(
            "projector_batches", rows, column_names=["consumer", "topic", "partition", "first_offset", "last_offset", "token"],
        ))

    # --- one batch ---------------------------------------------------------------

    async def process(self, records: list[Record], token: str) -> None:
        t0 = time.perf_counter()
        events, poison = [], []
        for r in records:
            try:
                event = decode(r.value)
            except Exception as exc:
                poison.append((r, exc))
                continue
            if event is not None:
                events.append((event, r.offset, r))
        t1 = time.perf_counter()
        await self.load_states({e.check_id for e, _, _ in events if hasattr(e, "check_id")})
        t2 = time.perf_counter()
        rows = fold(self.states, [(e, o) for e, o, _ in events], on_error=lambda i, exc: poison.append((events[i][2], exc)))
        t3 = time.perf_counter()
        try:
            now = utcnow()
            for table, data in (
                ("pings", rows.pings),
                ("runs", rows.runs),
                ("transitions", rows.transitions),
                ("check_state", rows.check_state_rows(now)),  # last: its offsets say the rest is in
            ):
                if data:
                    await self.insert(table, data, f"{token}:{table}")
            for record, exc in poison:
                await deadletter.send(self.log, "projector", record, exc)
        except BaseException:
            # The fold already counted this batch in memory; the retry must fold it again from what
            # ClickHouse holds (check_state is written last, so it never runs ahead of the other tables).
            for check_id in rows.touched:
                self.states.pop(check_id, None)
            raise
        for state in rows.touched.values():
            if state.last_duration_s is not None:
                metrics.set_last_duration(state.check_id, state.last_duration_s)
        t4 = time.perf_counter()
        self.timings["decode"] += t1 - t0
        self.timings["load"] += t2 - t1
        self.timings["fold"] += t3 - t2
        self.timings["insert"] += t4 - t3
        self.counts["records"] += len(records)
        self.counts["pings"] += len(rows.pings)
        self.counts["runs"] += len(rows.runs)
        self.counts["transitions"] += len(rows.transitions)
        self.counts["poison"] += len(poison)
        self.counts["batches"] += 1

    async def insert(self, table: str, data: list[tuple], token: str) -> None:
        # The views feeding the rollups dedupe the block too (by default ClickHouse still pushes a block
        # the source table dropped as a duplicate into its views: a replayed batch counted runs twice).
        settings = {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
        started = time.perf_counter()

        def insert(client):
            types = self.wire_types.get(table)
            if types is None:
                declared = dict(client.query(
                    "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                    parameters={"t": table},
                ).result_rows)
                types = self.wire_types[table] = [_WIRE.get(declared[c], declared[c]) for c in COLUMNS[table]]
            client.insert(table, list(zip(*data)), column_names=COLUMNS[table], column_type_names=types,
                          column_oriented=True, settings=settings)

        await self.ch.run(insert)
        metrics.INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
        metrics.INSERT_ROWS.labels(table).inc(len(data))


def batch_token(ranges: dict[TopicPartition, tuple[int, int]]) -> str:
    text = ";".join(f"{tp.topic}/{tp.partition}:{a}-{b}" for tp, (a, b) in sorted(ranges.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def ranges_of(records: list[Record]) -> dict[TopicPartition, tuple[int, int]]:
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        first = ranges.get(tp, (r.offset, r.offset))[0]
        ranges[tp] = (first, r.offset)
    return ranges


class Batcher:
    """Reads batches bounded by count and time; after a restart, first re-cuts the journaled batch.

    ``replay`` is the journal's last batch per partition: ``tp -> (first, last, token)``.
    The batch that was journaled but not committed starts exactly at the group's
    committed offsets; journal entries for partitions that start elsewhere were
    committed already and are dropped.
    """

    def __init__(self, consumer, replay: dict[TopicPartition, tuple[int, int, str]]) -> None:
        self.consumer = consumer
        self.replay = dict(replay)
        self.held: list[Record] = []

    async def next(self, stop: asyncio.Event) -> tuple[list[Record], bool]:
        """(records, replayed): ``replayed`` when the batch is the journaled one, cut as before."""
        records, self.held = self.held, []
        if self.replay:
            return await self._replay(records, stop)
        deadline = None
        while len(records) < BATCH_MAX and not stop.is_set():
            wait_ms = 200 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            records += await self.consumer.getmany(max_records=BATCH_MAX - len(records), timeout_ms=wait_ms)
            if records and deadline is None:
                deadline = time.monotonic() + BATCH_WAIT_S
            if deadline is None or time.monotonic() >= deadline:
                break  # idle (let the caller look at stop), or the batch's time is up
        return self._split(records), False

    def _split(self, records: list[Record]) -> list[Record]:
        # A prefix of the read order is a prefix of every partition: offsets stay contiguous.
        if len(records) > BATCH_MAX:
            records, self.held = records[:BATCH_MAX], records[BATCH_MAX:] + self.held
        return records

    async def _replay(self, records: list[Record], stop: asyncio.Event) -> tuple[list[Record], bool]:
        while not stop.is_set():
            cut = self._cut(records)
            if cut is not None:
                return cut
            if len(records) >= 4 * BATCH_MAX:
                break
            got = await self.consumer.getmany(max_records=BATCH_MAX, timeout_ms=200)
            if not got:  # drained: journaled partitions we have not seen were committed
                seen = {(r.topic, r.partition) for r in records}
                self.replay = {tp: v for tp, v in self.replay.items() if tp in seen}
            records += got
        if stop.is_set():
            self.held = records
            return [], False
        if self.replay:
            log.warning("projector: the journaled batch could not be cut again; reading on without it")
            self.replay = {}
        return self._split(records), False

    def _cut(self, records: list[Record]) -> tuple[list[Record], bool] | None:
        """The journaled batch and True once it has been read whole; None to read on."""
        firsts: dict[TopicPartition, int] = {}
        lasts: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            firsts.setdefault(tp, r.offset)
            lasts[tp] = r.offset
        assigned = self.consumer.assignment()  # may still be empty before a group consumer's first fetch
        stale = {tok for tp, (first, _, tok) in self.replay.items()
                 if (assigned and tp not in assigned) or (tp in firsts and firsts[tp] != first)}
        self.replay = {tp: v for tp, v in self.replay.items() if v[2] not in stale}
        if not self.replay:
            return self._split(records), False
        if any(tp not in firsts for tp in self.replay):
            return None
        tokens = {tok for _, _, tok in self.replay.values()}
        if len(tokens) > 1:  # cannot happen with one projector per partition; do not guess
            self.replay = {}
            return self._split(records), False
        ends = {tp: last for tp, (_, last, _) in self.replay.items()}
        if any(lasts[tp] < end for tp, end in ends.items()):
            return None
        batch, held = [], []
        for r in records:
            end = ends.get(TopicPartition(r.topic, r.partition))
            (batch if end is not None and r.offset <= end else held).append(r)
        self.held = held + self.held
        self.replay = {}
        return batch, True


def _tune_gc() -> None:
    """The fold allocates millions of short-lived objects and keeps few: with the default threshold
    (700) the collector spent ~20% of the fold walking the long-lived check states."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 20))


async def run(config: Config, event_log: EventLog, clickhouse: ClickHouse, stop: asyncio.Event) -> None:
    _tune_gc()
    projector = Projector(clickhouse, event_log)
    consumer = event_log.consumer(TOPICS, group=GROUP)
    await consumer.start()
    batcher = Batcher(consumer, await projector.journal_tail())
    assignment = consumer.assignment()
    positions: dict[TopicPartition, int] = {}
    last_log, logged = time.monotonic(), dict(projector.counts)
    log.info("projector started on %s", ", ".join(TOPICS))
    # The next batch is read while this one is inserted (reading the log is a fifth of the work).
    upcoming: asyncio.Future | None = asyncio.ensure_future(batcher.next(stop))
    try:
        while not stop.is_set():
            records, replayed = await upcoming
            upcoming = asyncio.ensure_future(batcher.next(stop))
            if consumer.assignment() != assignment:
                assignment = consumer.assignment()
                projector.forget()
                log.info("projector assignment: %d partitions", len(assignment))
            if records:
                ranges = ranges_of(records)
                token = batch_token(ranges)
                try:
                    if not replayed:
                        await _retry(stop, "journal", lambda: projector.write_journal(ranges, token))
                    await _retry(stop, "insert", lambda: projector.process(records, token))
                except _Stopped as exc:
                    log.warning("stopping with a batch not committed (it will be read again): %s", exc)
                    break
                offsets = {tp: last + 1 for tp, (_, last) in ranges.items()}
                try:
                    await consumer.commit(offsets)
                except Exception as exc:  # partitions moved to another projector meanwhile (rebalance)
                    log.warning("commit refused (%s: %s): the batch will be read again by the new owner",
                                exc.__class__.__name__, exc)
                    projector.forget()
                    continue
                positions.update(offsets)
                metrics.BATCH_RECORDS.labels("projector").observe(len(records))
                if replayed:
                    log.info("replayed the journaled batch of %d records after a restart", len(records))
            now = time.monotonic()
            if now - last_log >= LOG_EVERY_S:
                await metrics.record_lag(GROUP, consumer, positions)
                _log_rates(projector, logged, now - last_log)
                logged, last_log = dict(projector.counts), now
        _log_rates(projector, logged, max(time.monotonic() - last_log, 1e-9))
    finally:
        if upcoming is not None:
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
        await consumer.close()


class _Stopped(Exception):
    pass


async def _retry(stop: asyncio.Event, what: str, attempt) -> None:
    """Retry ``attempt`` with capped exponential backoff until it works; ClickHouse may be away for a while.
    Nothing is committed meanwhile, so the log keeps every record and lag grows."""
    backoff = 0.5
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            if stop.is_set():
                raise _Stopped(f"{what} failed while stopping: {exc}") from exc
            log.error("projector %s failed (%s: %s); retrying in %.1fs", what, exc.__class__.__name__,
                      str(exc)[:300], backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


def _log_rates(projector: Projector, before: dict, elapsed_s: float) -> None:
    c, t = projector.counts, projector.timings
    n = c["records"] - before.get("records", 0)
    log.info(
        "projector: %.0f records/s (%d in %d batches), %d pings, %d runs, %d transitions, %d poison; "
        "time in decode %.1fs, load %.1fs, fold %.1fs, insert %.1fs; %d checks in memory",
        n / elapsed_s, c["records"], c["batches"], c["pings"], c["runs"], c["transitions"], c["poison"],
        t["decode"], t["load"], t["fold"], t["insert"], len(projector.states),
    )
