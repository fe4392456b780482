"""The projector service: pings and transitions from the log into ClickHouse, exactly once in effect.

Batches (up to ``BATCH_MAX`` records; what came within ``BATCH_WAIT_S`` of the first, or
sooner, once ``BUSY_RECORDS`` came and the handler waits; see ``replay``) come from the
consumer shell (``runtime.consumer``); each goes through, in this order:

1. journal: the offsets it covers, per partition, into the embedded log's file (``EventLog.write_journal``),
   or on Kafka into ClickHouse's ``projector_batches``;
2. decode (a ping as the fold reads it, ``wire.PingFacts``; poison records go to
   the dead-letter topic) and the pure fold, after loading from ``check_state``
   the state of checks not in memory (a restart resumes from there; no history
   is replayed);
3. inserts into pings (made by ClickHouse from the ping records and the fold's
   values, see ``wire``; through ``pings_ending_runs``, whose views also make the
   runs rows, when some end a run), transitions, ping_keys, checks (the
   registry's records, see ``catalog``), then check_state, each with an
   ``insert_deduplication_token`` derived from the batch's offsets;
4. commit of the offsets (by the shell, once ``handle`` returned).

The shell reads the next batch from the log while this one is inserted
(``read_ahead``), and the batcher decodes its records as soon as they are read
(decoding is pure); it is folded only when its turn comes. (Folding it ahead, during the
insert before it, lost acknowledged pings across a broker restart in
tests/e2e/test_broker_restart.py: it was taken out.)

A crash anywhere before 4 means the batch is read again: the journal cuts it at
the same offsets, so the same rows form the same blocks with the same tokens
and ClickHouse drops them (the rollup views too); check_state carries the
offsets it has applied, so the fold skips what is already counted. Tables are
ReplacingMergeTrees on the event id as a second line of defence.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import operator
import time
from collections import defaultdict
from typing import Awaitable, Callable, NamedTuple

from runtime import deadletter, metrics
from runtime.clickhouse import SMALL_INSERT_ROWS, ClickHouse, arrow_type, id_chunks
from runtime.config import Config
from runtime.consumer import Batch, ConsumerShell, retry
from runtime.eventlog.base import EventLog, Record, TopicPartition
from checks import idempotency
from checks.idempotency import RecentIds
from schemas.ddl import ROLLUP_OF_RUNS, ROLLUPS, RUNS_OF_PINGS
from schemas.events import TOPIC_CHECKS, TOPIC_PINGS, TOPIC_TRANSITIONS, utcnow, uuid7
from schemas.events import decode as decode_event  # the contract's full decoder (wire.decode is the fold's)

from . import catalog

from . import deliveries, wire
from .fold import COLUMNS, CheckFold, Rows, fold, folds_any, state_from_row
from .replay import Batcher, batch_token

log = logging.getLogger(__name__)

GROUP = "pingstream-projector"
TOPICS = [TOPIC_PINGS, TOPIC_TRANSITIONS, TOPIC_CHECKS]
LOG_EVERY_S = 10.0
# On the embedded log (`up`, the edges on the same cores): once records come at BUSY_RECORDS per
# replay.BATCH_WAIT_S or faster (2,500 a second; runtime.consumer.Batches), or the handler is busy half the time
# or more (Batches.BUSY_SHARE), a batch gathers for BUSY_WAIT_S whatever it holds, instead of going as soon as it
# holds Batches.ready_records and the insert before it is done. A batch's fixed cost (the pings insert's analysis
# and each table's part, their merges, the journal, the commit) is then paid two or three times a second under
# load, not ten.
BUSY_RECORDS = 1000
BUSY_WAIT_S = 0.4
# On Kafka (the distributed mode) too, with a window of KAFKA_BUSY_WAIT_S read every KAFKA_BUSY_READ_MS: aiokafka
# fetches a partition again only once its fetched records are taken, so a window read once at its end left the
# pings on the broker behind a fetch of the empty partitions waiting out its fetch_max_wait_ms. At 10,000
# pings/s (bench/e2e.py) the projector took 0.28-0.37 cores against 0.44-0.48 with a batch per insert. (Shorter
# than the idle window: at that rate ping -> queryable's p99 is near its bound of 1 s.)
KAFKA_BUSY_WAIT_S = 0.3
KAFKA_BUSY_READ_MS = 20
TABLE_COLUMNS = {**COLUMNS, "checks": catalog.COLUMNS}
# Inserts but the pings' are Arrow tables (``ClickHouse.insert_arrow``: read in place by embedded chdb, an
# ArrowStream for a server), each column converted by Arrow in C (a fraction of the time clickhouse-connect's
# Native encoder takes value by value); up to SMALL_INSERT_ROWS rows, a literal VALUES clause (half the fixed
# cost). A table with a column type ``arrow_type`` does not map goes through that encoder, its UUID and
# LowCardinality columns sent as strings (ClickHouse converts them on insert).
_value_of = operator.itemgetter(4)  # a Record's value (by index: a NamedTuple's attributes cost more)
_offset_of = operator.itemgetter(2)  # a Record's offset
_event_of = operator.itemgetter(0)
_check_id = operator.attrgetter("check_id")
_REGISTRY_TYPES = frozenset(catalog.REGISTRY_TYPES)
_FROM_RECORDS = {"pings": wire.PINGS_SELECT}
# Where the pings rows of a batch that ends runs go: a Null table whose views write them into ``pings`` and their
# runs into ``runs`` (schemas/ddl.py).
PINGS_ENDING_RUNS = "pings_ending_runs"
# The keyed pings a restarted projector reads back (``Projector._load_keys``): per check, those of the window
# before its newest, the newest ``most`` of them, oldest first (as they were applied).
_KEYS_SQL = (
    "SELECT c, e, at, n FROM (SELECT c, e, at, n FROM ("
    "SELECT toString(check_id) AS c, toString(event_id) AS e, toFloat64(received_at) AS at, n, "
    "max(toFloat64(received_at)) OVER (PARTITION BY check_id) AS newest "
    "FROM ping_keys WHERE check_id IN {ids:Array(UUID)}"
    ") WHERE at >= newest - {window:Float64} ORDER BY c, at DESC, n DESC LIMIT {most:UInt32} BY c"
    ") ORDER BY c, at, n"
)
_WIRE = {"UUID": "String", "Nullable(UUID)": "Nullable(String)", "LowCardinality(String)": "String"}


class Columns(NamedTuple):
    """A table's rows as columns, ``n`` rows long: ``make()`` returns a list per column, in its COLUMNS order
    (called where the insert runs, off the event loop)."""

    make: Callable[[], list[list]]
    n: int


class Prepared(NamedTuple):
    """A batch folded, ready to write."""

    rows: Rows
    state_rows: list[tuple]  # check_state rows as the fold left them, before any later batch's fold
    poison: list[tuple[Record, Exception]]
    registry: list[tuple[object, int, int]]  # registry records (event, offset, timestamp_ms) for ``checks``
    n_records: int
    sources: list[Record]  # the record each folded event came from (``rows.ping_index`` points into it)
    generation: int = 0  # the projector's ``generation`` when it was folded


class Projector:
    """Fold state plus the ClickHouse side of a batch; ``run`` puts it in the consumer shell."""

    def __init__(self, clickhouse: ClickHouse, event_log: EventLog, consumer: str = GROUP) -> None:
        self.ch = clickhouse
        self.log = event_log
        self.consumer = consumer
        self.states: dict[str, CheckFold] = {}
        self.generation = 0  # one more at each ``forget``: a fold made before it stands on states gone since
        self.counts = defaultdict(int)
        self.timings = defaultdict(float)  # seconds spent in decode, load, fold, insert
        self.wire_types: dict[str, list] = {}  # per table: the Arrow (or Native) types its columns are sent as

    # --- state -----------------------------------------------------------------

    async def load_states(self, check_ids: set[str]) -> bool:
        """The states of ``check_ids`` not in memory, from check_state. False when they were forgotten meanwhile
        (``forget``; a batch folded ahead: ``run``): then none of what was read is kept."""
        generation = self.generation
        loaded: dict[str, CheckFold] = {}
        for chunk in id_chunks(c for c in check_ids if c not in self.states):

            def query(client, chunk=chunk):
                return list(client.query(
                    "SELECT * FROM check_state FINAL WHERE check_id IN {ids:Array(UUID)}", parameters={"ids": chunk}
                ).named_results())

            for row in await self.ch.run(query):
                state = state_from_row(row)
                loaded[state.check_id] = state
        if loaded:
            await self._load_keys(loaded)
        if generation != self.generation:
            return False
        for check_id, state in loaded.items():
            self.states.setdefault(check_id, state)
        return True

    async def _load_keys(self, states: dict[str, CheckFold]) -> None:
        """The keyed pings (Idempotency-Key) each state has counted and may still see retried: rows of
        ``ping_keys`` whose ``n`` is within the state's ``n_pings`` (rows of a batch whose check_state write did
        not happen are not: that batch is folded again), of the window before the check's newest key (the table
        keeps a week; an hour more for edges' clocks), the newest ``MAX_KEYS_PER_CHECK`` of them. Streamed
        and packed block by block on the ClickHouse thread: a fleet that keys every ping has millions."""
        counted = {check_id: state.n_pings for check_id, state in states.items()}

        def query(client) -> dict[str, RecentIds]:
            remembered: dict[str, RecentIds] = {}
            for ids in id_chunks(counted):
                parameters = {"ids": ids, "window": idempotency.WINDOW_S + 3600.0,
                              "most": idempotency.MAX_KEYS_PER_CHECK}
                with client.query_row_block_stream(_KEYS_SQL, parameters=parameters) as blocks:
                    for block in blocks:
                        for check_id, event_id, at, n in block:
                            if n <= counted[check_id]:
                                recent = remembered.get(check_id)
                                if recent is None:
                                    recent = remembered[check_id] = RecentIds()
                                recent.add(event_id, at)
            return remembered

        for check_id, recent in (await self.ch.run(query)).items():
            states[check_id].recent = recent

    def forget(self) -> None:
        """Partitions moved (rebalance), or a write failed: the states are read again from ClickHouse
        (other projectors may have advanced those checks; check_state holds what was written)."""
        self.states.clear()
        self.generation += 1

    async def known_checks(self, check_ids: set[str]) -> dict[str, tuple]:
        """The latest ``checks`` rows of these checks (a deletion repeats its check's last one)."""
        if not check_ids:
            return {}

        def query(client):
            return [row for ids in id_chunks(check_ids) for row in client.query(
                f"SELECT {', '.join(catalog.COLUMNS)} FROM checks FINAL WHERE id IN {{ids:Array(UUID)}}",
                parameters={"ids": ids},
            ).result_rows]

        return {str(row[0]): (str(row[0]), str(row[1]), *row[2:]) for row in await self.ch.run(query)}

    # --- journal -----------------------------------------------------------------

    async def journal_tail(self) -> dict[TopicPartition, tuple[int, int, str]]:
        """The last batch journaled per partition: (first, last, token). Kept by the log where it can
        (the embedded one: a row per partition in its file), in ClickHouse otherwise (Kafka)."""
        # ClickHouse's: Kafka's, or that of an embedded log with nothing journaled yet, whose projector journaled
        # there before (its last batch may be uncommitted: it is cut again as it was).
        def query(client):
            return client.query(
                "SELECT topic, partition, argMax(first_offset, first_offset), argMax(last_offset, first_offset), "
                "argMax(token, first_offset) FROM projector_batches WHERE consumer = {c:String} "
                "GROUP BY topic, partition",
                parameters={"c": self.consumer},
            ).result_rows

        rows = await self.log.read_journal(self.consumer) or await self.ch.run(query)
        return {TopicPartition(t, int(p)): (int(f), int(last), tok) for t, p, f, last, tok in rows}

    async def write_journal(self, ranges: dict[TopicPartition, tuple[int, int]], token: str) -> None:
        entries = [(tp.topic, tp.partition, first, last, token) for tp, (first, last) in ranges.items()]
        if await self.log.write_journal(self.consumer, entries):
            return
        await self.ch.insert_values(
            "projector_batches", ["consumer", "topic", "partition", "first_offset", "last_offset", "token"],
            [(self.consumer, *entry) for entry in entries])

    # --- one batch ---------------------------------------------------------------

    async def replay(self, records: list[Record], token: str, decoded: tuple | None = None,
                     after: str = "a restart", owned: set[TopicPartition] | None = None) -> None:
        """A batch written once already, in part or whole: the journaled batch read again after a restart, or one
        whose write failed (``after``). Processed as before (the same blocks under the same tokens), then checked
        (``check_replayed``): a write that failed after ClickHouse recorded a block's token leaves the token
        without the part too.

        ``owned``: the partitions this member has (None: all of them). A batch made whole from partitions other
        members have (projector/replay.py) is written whole, but the check_state rows and the rollups of their
        checks are theirs to write and check: each of them replays the batch too, and folds their checks again
        only if their check_state is still as it was before the batch."""
        decoded = decoded if decoded is not None else self.decode(records)
        theirs = set() if owned is None else _checks_elsewhere(decoded, owned)
        await self.rewrite(await self.prepare(records, decoded), token, after, theirs)

    async def rewrite(self, prepared: Prepared, token: str, after: str = "a restart",
                      theirs: set[str] = frozenset()) -> None:
        """``replay``'s writing of a folded batch: its tables, each checked, then check_state, checked. check_state
        comes after the check of the others, as it comes last in any write: a crash while checking leaves the
        batch to be folded and checked again at the next replay (its offsets in check_state would fold nothing).
        ``theirs``: checks whose check_state and rollups other members write (``replay``)."""
        repaired: dict[str, int] = {}
        if theirs:
            prepared = prepared._replace(state_rows=[row for row in prepared.state_rows if row[0] not in theirs])

        async def check(written: dict[str, object]) -> None:
            repaired.update(await self.check_replayed(prepared, written, token, theirs))

        await self.write(prepared, token, check)
        records = prepared.n_records
        if repaired:
            log.warning("wrote again the batch of %d records after %s; ClickHouse had dropped some of it (the rows "
                        "of a part that did not take its place): written again, by table: %s", records, after,
                        ", ".join(f"{table} {n}" for table, n in repaired.items()))
        else:
            log.info("wrote again the batch of %d records after %s", records, after)

    async def process(self, records: list[Record], token: str, decoded: tuple | None = None) -> dict[str, object]:
        """Fold ``records`` on the states and write what they make; ``decoded``: ``decode(records)``, if
        it was done already. Returns what was written, by table (``write``)."""
        return await self.write(await self.prepare(records, decoded), token)

    async def prepare(self, records: list[Record], decoded: tuple | None = None,
                      ahead_of: int | None = None) -> Prepared | None:
        """Decode (unless done already), load the missing states, fold. ``ahead_of``: the ``generation`` of the
        batch being written meanwhile (this one is folded ahead: ``run``); None, with nothing folded, when the states
        were forgotten since (that write failed)."""
        t0 = time.perf_counter()
        events, sources, poison, registry = decoded if decoded is not None else self.decode(records)
        poison = list(poison)  # the fold adds to it: a retry of the batch starts again from what decoding found
        t1 = time.perf_counter()
        try:
            check_ids = set(map(_check_id, map(_event_of, events)))
        except AttributeError:  # an event without a check (a Tick)
            check_ids = {getattr(e, "check_id", None) for e, _ in events}
            check_ids.discard(None)
        while not await self.load_states(check_ids):
            if ahead_of is not None:
                return None
        if ahead_of is not None and self.generation != ahead_of:
            return None
        t2 = time.perf_counter()
        rows = fold(self.states, events, on_error=lambda i, exc: poison.append((sources[i], exc)))
        state_rows = rows.check_state_rows(utcnow())
        t3 = time.perf_counter()
        self.timings["decode"] += t1 - t0
        self.timings["load"] += t2 - t1
        self.timings["fold"] += t3 - t2
        return Prepared(rows, state_rows, poison, registry, len(records), sources, self.generation)

    @staticmethod
    def decode(records: list[Record]) -> tuple[list, list, list, list]:
        """``(events, sources, poison, registry)``: (event, offset) pairs for the fold and the record each
        came from, poison records with their error, registry records (event, offset, timestamp_ms).

        A batch of known events only (the usual case) is decoded at once and paired with its offsets in C;
        one with a poison record, a type this version does not know, or registry records record by record."""
        try:
            decoded = wire.decode_all(list(map(_value_of, records)))
        except Exception:  # noqa: BLE001 - poison or an unknown type: sorted out one record at a time below
            decoded = None
        if decoded is not None and not _REGISTRY_TYPES.intersection(map(type, decoded)):
            return list(zip(decoded, map(_offset_of, records))), records, [], []
        events, sources, poison, registry = [], [], [], []
        for r in records:
            try:
                event = wire.decode(r.value)
            except Exception as exc:
                poison.append((r, exc))
                continue
            if catalog.is_registry_event(event):
                registry.append((event, r.offset, r.timestamp_ms))
            elif event is not None:
                events.append((event, r.offset))
                sources.append(r)
        return events, sources, poison, registry

    async def write(self, prepared: Prepared, token: str,
                    check: Callable[[dict[str, object]], Awaitable[None]] | None = None) -> dict[str, object]:
        """Insert what a folded batch makes; returns it by table (rows, or ``Columns`` for the pings). ``check``
        (a replayed batch's: ``rewrite``) is given what was written, by table, once before check_state and
        then check_state's rows."""
        started = time.perf_counter()
        rows = prepared.rows
        try:
            # A deletion repeats its check's last row, as the batches before this one wrote it.
            known = await self.known_checks(catalog.deleted_ids(prepared.registry))
            checks = catalog.check_rows(prepared.registry, known)
            pings = None
            if rows.ping_index:
                pings = ping_data(rows, prepared.sources)
            # The tables but check_state at once (their inserts overlap: see ClickHouse.insert_columns), each
            # to its end whatever the others do, so no insert of this batch still runs when it is retried.
            tables = [(table, data) for table, data in (
                ("pings", pings), ("transitions", rows.transitions),
                ("ping_keys", rows.ping_keys), ("checks", checks),
            ) if data]
            # Pings that end runs go through PINGS_ENDING_RUNS, whose views write them and their runs (schemas/ddl.py).
            into = {"pings": PINGS_ENDING_RUNS} if rows.n_runs else {}
            done = await asyncio.gather(*(self.insert(table, data, f"{token}:{table}", into.get(table))
                                          for table, data in tables), return_exceptions=True)
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
            if check is not None:
                await check(dict(tables))
            if prepared.state_rows:  # last: its offsets say the rest is in
                await self.insert("check_state", prepared.state_rows, f"{token}:check_state")
                if check is not None:
                    await check({"check_state": prepared.state_rows})
            for record, exc in prepared.poison:
                await deadletter.send(self.log, "projector", record, exc)
        except BaseException:
            # The fold already counted this batch in memory; the retry
            # must fold it again from what ClickHouse holds (check_state is written last, so it never runs
            # ahead of the other tables).
            self.forget()
            raise
        self.timings["insert"] += time.perf_counter() - started
        self.counts["records"] += prepared.n_records
        self.counts["pings"] += len(rows.ping_events)
        self.counts["runs"] += rows.n_runs
        self.counts["transitions"] += len(rows.transitions)
        self.counts["poison"] += len(prepared.poison)
        self.counts["batches"] += 1
        return {**dict(tables), "check_state": prepared.state_rows}

    # --- a replayed batch, checked ---------------------------------------------------

    async def check_replayed(self, prepared: Prepared, written: dict[str, object], token: str,
                             theirs: set[str] = frozenset()) -> dict[str, int]:
        """Once a batch written before (``replay``) was written again, the tables of ``written`` (``write`` gives
        check_state apart, after the others): what ClickHouse dropped of it is written again; returns the rows so
        written, by table.

        The batch's blocks carry the tokens they had before the crash, so ClickHouse drops those it holds. It
        also drops one it does not hold: MergeTree records a block's token in its deduplication log before the
        block's part takes its place (``MergeTreeSink::commitPart``), so a process killed between the two leaves
        the token and not the part, and the block sent again is dropped as a duplicate of a part that does not
        exist (the likely way a whole batch of acknowledged pings, 253, went missing once in tests/e2e/test_kill.py;
        a mutation that deletes the rows and leaves the token gives the same state: tests/integration). So each table is
        asked for the batch's rows (by event id; check_state and checks by version), and what is missing is
        written again under a token of its own: rows of tables that merge by key (a duplicate is merged away);
        the runs around their rollup views (a scratch table attached: ``_write_runs_again``); the rollups only
        where they count fewer runs than the runs table holds, by the batch's runs of those buckets, under tokens
        derived from the batch's (``token``), the same for every member that checks the batch
        (``_write_rollup_again``); and only the buckets of checks whose partitions this member has (not
        ``theirs``). A rollup bucket is looked at while other inserts may be half done (their runs part in, their
        rollup parts not yet): the member that has a check's partition writes its next batches only once this one
        is done, and the other members' inserts of this batch are looked past (``_steady_short``)."""
        rows = prepared.rows
        again = f"again:{uuid7()}"  # its own each time: a crash while writing again leaves this token behind too
        repaired: dict[str, int] = {}

        def count(table: str, n: int) -> None:
            if n:
                repaired[table] = n

        events = rows.ping_events if "pings" in written else []
        present = await self._present("pings", [e.event_id for e in events])
        keep = [k for k, e in enumerate(events) if e.event_id not in present]
        if keep:
            lost = Rows(ping_events=[events[k] for k in keep], ping_index=[rows.ping_index[k] for k in keep],
                        ping_n=[rows.ping_n[k] for k in keep], ping_durations=[rows.ping_durations[k] for k in keep],
                        ping_starts=[rows.ping_starts[k] for k in keep])
            # Into pings itself, not through the views of pings_ending_runs: the runs are looked at next.
            await self.insert("pings", ping_data(lost, prepared.sources), f"{again}:pings")
            count("pings", len(keep))
        ends = [e for e, start in zip(events, rows.ping_starts) if start is not None]
        run_ids = [e.event_id for e in ends]
        present = await self._present("runs", run_ids)
        count("runs", await self.ch.run(_write_runs_again, [i for i in run_ids if i not in present]))
        ours = [e.event_id for e in ends if e.check_id not in theirs]  # the runs of checks in this member's partitions
        for rollup in ROLLUPS:
            count(rollup, await _write_rollup_again(self.ch, rollup, ours, f"{token}:again:{rollup}"))
        for table, key in (("transitions", 0), ("ping_keys", 0)):
            data = written.get(table) or []
            present = await self._present(table, [row[key] for row in data])
            lost = [row for row in data if row[key] not in present]
            if lost:
                await self.insert(table, lost, f"{again}:{table}")
                count(table, len(lost))
        for table, key, version in (("checks", "id", catalog.COLUMNS.index("version")),
                                    ("check_state", "check_id", COLUMNS["check_state"].index("version"))):
            data = written.get(table) or []
            versions = await self._versions(table, key, [row[0] for row in data])
            lost = [row for row in data if versions.get(str(row[0]), -1) < row[version]]
            if lost:
                await self.insert(table, lost, f"{again}:{table}")
                count(table, len(lost))
        return repaired

    async def _present(self, table: str, event_ids: list[str]) -> set[str]:
        """Which of ``event_ids`` ``table`` holds."""
        if not event_ids:
            return set()

        def query(client) -> set[str]:
            return {row[0] for ids in id_chunks(event_ids) for row in client.query(
                f"SELECT DISTINCT toString(event_id) FROM {table} WHERE event_id IN {{ids:Array(UUID)}}",
                parameters={"ids": ids}).result_rows}

        return await self.ch.run(query)

    async def _versions(self, table: str, key: str, ids: list[str]) -> dict[str, int]:
        """The highest version ``table`` holds of each of ``ids``."""
        if not ids:
            return {}

        def query(client) -> dict[str, int]:
            return {str(k): int(v) for chunk in id_chunks(ids) for k, v in client.query(
                f"SELECT {key}, max(version) FROM {table} WHERE {key} IN {{ids:Array(UUID)}} GROUP BY {key}",
                parameters={"ids": chunk}).result_rows}

        return await self.ch.run(query)

    def describe(self, _elapsed_s: float = 0.0) -> str:
        """The projector's part of the shell's progress line."""
        c, t = self.counts, self.timings
        return (
            f"{c['pings']} pings, {c['runs']} runs, {c['transitions']} transitions, {c['poison']} poison; "
            f"time in decode {t['decode']:.1f}s, load {t['load']:.1f}s, fold {t['fold']:.1f}s, "
            f"insert {t['insert']:.1f}s; {len(self.states)} checks in memory"
        )

    async def insert(self, table: str, data: list[tuple] | Columns, token: str, into: str | None = None) -> None:
        """Insert ``data``, rows of ``table`` (``TABLE_COLUMNS``), into ``into`` (by default ``table`` itself; a
        table with the same columns otherwise, as ``PINGS_ENDING_RUNS``), in one block under ``token``."""
        # The views feeding the rollups dedupe the block too (by default ClickHouse still pushes a block
        # the source table dropped as a duplicate into its views: a replayed batch counted runs twice).
        settings = {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
        if table != "checks":
            # No replacing merge of the block on insert (half the insert's CPU): a batch folds each record once,
            # so its event ids (pings, runs, transitions, ping_keys) and its checks (check_state: one row per
            # check) are distinct; a ping logged twice is merged later, and reads use FINAL. (A batch may hold
            # several registry records of a check: ``checks`` keeps the merge.)
            settings["optimize_on_insert"] = 0
        started = time.perf_counter()

        names = TABLE_COLUMNS[table]
        if table in _FROM_RECORDS and isinstance(data, Columns):  # made by ClickHouse from the records (wire.py)
            await self.ch.insert_select(into or table, names, _FROM_RECORDS[table], wire.PINGS_SOURCE, data.make,
                                        settings)
            self._insert_observed(table, data, started)
            return
        if table != "checks" and not isinstance(data, Columns) and len(data) <= SMALL_INSERT_ROWS:
            # A few rows (check_state's under light load, the transitions of a batch): a literal VALUES clause
            # costs half what an Arrow table's INSERT ... SELECT does. (``checks`` rows hold arrays and maps.)
            await self.ch.insert_values(into or table, names, data, settings)
            self._insert_observed(table, data, started)
            return

        plan = self.wire_types.get(table)
        if plan is None:
            def declared_types(client) -> dict:
                return dict(client.query(
                    "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                    parameters={"t": table},
                ).result_rows)

            declared = await self.ch.run(declared_types)
            arrow = [arrow_type(declared[c]) for c in names]
            plan = self.wire_types[table] = (
                arrow if None not in arrow else [_WIRE.get(declared[c], declared[c]) for c in names])

        def columns() -> list:
            return data.make() if isinstance(data, Columns) else list(zip(*data))

        if isinstance(plan[0], str):  # a type Arrow is not mapped for here: clickhouse-connect's Native encoder
            await self.ch.run(lambda client: client.insert(
                into or table, columns(), column_names=names, column_type_names=plan, column_oriented=True,
                settings=settings))
        else:
            await self.ch.insert_columns(into or table, names, plan, columns, settings)
        self._insert_observed(table, data, started)

    @staticmethod
    def _insert_observed(table: str, data: list[tuple] | Columns, started: float) -> None:
        metrics.INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
        metrics.INSERT_ROWS.labels(table).inc(data.n if isinstance(data, Columns) else len(data))


_RUNS_SCRATCH = "runs_again_"  # the names of _write_runs_again's scratch tables begin so, then a UUIDv7's hex
_SCRATCH_LEFT_S = 3600  # a scratch table made this long ago was left by a crash (one in use lives seconds)


def _left_behind(name: str, now_ms: int) -> bool:
    """Whether a scratch table of ``_write_runs_again`` is one a crash left (and not one another member of the
    group is writing): older than ``_SCRATCH_LEFT_S`` by the time in its name, or of a name not so made."""
    suffix = name[len(_RUNS_SCRATCH):]
    try:
        made_ms = int(suffix[:12], 16) if len(suffix) == 32 else None
    except ValueError:
        made_ms = None
    return made_ms is None or now_ms - made_ms > _SCRATCH_LEFT_S * 1000


def _write_runs_again(client, event_ids: list[str]) -> int:
    """The runs rows of these pings (written already), made as the runs view makes them, into ``runs`` without
    going through its rollup views: into a scratch table of the same kind, whose partitions are then attached
    (``ATTACH PARTITION ... FROM`` copies parts; no view sees them). Returns how many."""
    if not event_ids:
        return 0
    for (left,) in client.query(  # a scratch table a crash left behind (its runs are attached or written again)
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String})",
            parameters={"p": _RUNS_SCRATCH}).result_rows:
        if _left_behind(left, time.time_ns() // 1_000_000):
            client.command(f"DROP TABLE IF EXISTS {left} SYNC")
    scratch = f"{_RUNS_SCRATCH}{uuid7().replace('-', '')}"
    client.command(f"CREATE TABLE {scratch} AS runs")
    try:
        for ids in id_chunks(event_ids):
            client.command(f"INSERT INTO {scratch} " + RUNS_OF_PINGS.replace(
                "{source}", "(SELECT * FROM pings FINAL WHERE event_id IN {ids:Array(UUID)})"), parameters={"ids": ids})
        attach_parts(client, scratch, "runs")
    finally:
        client.command(f"DROP TABLE IF EXISTS {scratch} SYNC")
    return len(event_ids)


def attach_parts(client, source: str, table: str) -> None:
    """Every part of ``source`` copied into ``table`` (of the same structure), partition by partition: ``table``'s
    materialized views do not see them."""
    for (partition,) in client.query(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() "
            "AND table = {t:String} AND active", parameters={"t": source}).result_rows:
        client.command(f"ALTER TABLE {table} ATTACH PARTITION ID '{partition}' FROM {source}")


_BATCH_RUNS = "(SELECT * FROM runs FINAL WHERE event_id IN {ids:Array(UUID)})"  # a chunk of the batch's runs
# Writing a rollup again is tried this many times, each under the next token (``_write_rollup_again``).
ROLLUP_ATTEMPTS = 4


async def _write_rollup_again(ch: ClickHouse, rollup: str, run_ids: list[str], token: str) -> int:
    """The runs of ``run_ids`` into ``rollup`` where it counts fewer runs than ``runs`` holds, in the buckets they
    fall in, by as many as the batch has there (where it counts more, or fewer by another number, it is logged:
    which runs it lacks is not known). Returns how many runs were missing and are counted now.

    Several members of a group may check the same replayed batch at once (a dead member's partitions split
    between survivors: projector/replay.py), and a rollup is not merged by key: a bucket written again twice
    counts its runs twice. So each member writes a bucket under the same token, derived from the batch's
    (``token``), and ClickHouse keeps one. A token may also stand without its part (a crash while writing again:
    ``check_replayed``), which drops every later block under it: so a bucket still short once its block was sent
    is sent again under the next token (``:1``, ``:2``...), which members reach only in that order and only
    after finding the bucket short, so no token lands twice. A bucket is short when two looks
    (``_steady_short``) find it so."""
    if not run_ids:
        return 0
    short = await _steady_short(ch, rollup, run_ids)
    missing = sum(n for *_, n in short)
    for attempt in range(ROLLUP_ATTEMPTS):
        if not short:
            break
        if attempt:
            log.warning("%s: %d buckets still short after they were written again; again under a new token",
                        rollup, len(short))
        await ch.run(_top_up, rollup, short, f"{token}:{attempt}")
        short = await _steady_short(ch, rollup, run_ids)
    if short:
        log.error("%s: %d buckets still short of the batch's runs after %d writes; left as they are",
                  rollup, len(short), ROLLUP_ATTEMPTS)
    return missing - sum(n for *_, n in short)


# How far apart the two looks at a rollup are that must both find a bucket short (``_steady_short``): many times
# the moment between an insert's runs part and its rollup parts (milliseconds).
STEADY_S = 1.0


async def _steady_short(ch: ClickHouse, rollup: str, run_ids: list[str]) -> list[tuple]:
    """The buckets ``_rollup_short`` finds short of the batch's runs at two looks ``STEADY_S`` apart, by them both
    times. A look made while an insert is half done (its runs part in, its rollup parts not yet: they are parts of
    different tables, made one after the other) counts that insert's runs in the runs table only: a bucket it makes
    short by exactly the batch's runs there, once, is not written again. (The other members that replay the same
    batch write it while this one looks: their rollup blocks land then, unless their tokens stood already.)"""
    short = await ch.run(_rollup_short, rollup, run_ids)
    if not short:
        return short
    await asyncio.sleep(STEADY_S)
    first = set(map(_bucket_seen, short))
    return [bucket for bucket in await ch.run(_rollup_short, rollup, run_ids) if _bucket_seen(bucket) in first]


def _bucket_seen(bucket: tuple) -> tuple:
    """A bucket ``_rollup_short`` found short, as two looks compare it: its chunk, check, time and the runs missing."""
    k, check_id, at, _, n = bucket
    return k, check_id, at, n


def _rollup_short(client, rollup: str, run_ids: list[str]) -> list[tuple[int, str, object, list[str], int]]:
    """The buckets of ``rollup`` that count the batch's runs there (``run_ids``) fewer than ``runs`` holds, by
    exactly that many: (chunk of ``run_ids``, check_id, bucket, the chunk's ids, how many runs)."""
    bucket = ROLLUPS[rollup]
    short = []
    for k, ids in enumerate(id_chunks(run_ids)):
        rows = client.query(
            f"SELECT toString(b.check_id), b.bucket, b.n, t.n, r.n FROM "
            f"(SELECT check_id, {bucket}(finished_at) AS bucket, count() AS n FROM {_BATCH_RUNS} "
            f"GROUP BY check_id, bucket) b "
            f"LEFT JOIN (SELECT check_id, {bucket}(finished_at) AS bucket, count() AS n FROM runs FINAL "
            f"WHERE (check_id, {bucket}(finished_at)) IN (SELECT check_id, {bucket}(finished_at) FROM {_BATCH_RUNS}) "
            f"GROUP BY check_id, bucket) t ON b.check_id = t.check_id AND b.bucket = t.bucket "
            f"LEFT JOIN (SELECT check_id, bucket, countMerge(runs) AS n FROM {rollup} "
            f"WHERE (check_id, bucket) IN (SELECT check_id, {bucket}(finished_at) FROM {_BATCH_RUNS}) "
            f"GROUP BY check_id, bucket) r ON b.check_id = r.check_id AND b.bucket = r.bucket",
            parameters={"ids": ids}, settings={"join_use_nulls": 0}).result_rows
        for check_id, at, batch_n, truth, rolled in rows:
            if rolled == truth:
                continue
            if truth - rolled == batch_n:
                short.append((k, check_id, at, ids, batch_n))
            else:
                log.error("%s counts %d runs of check %s at %s, the runs table %d (the replayed batch: %d); "
                          "left as it is", rollup, rolled, check_id, at, truth, batch_n)
    return short


def _top_up(client, rollup: str, short: list[tuple], token: str) -> None:
    """The batch's runs of each bucket of ``short`` (``_rollup_short``) into ``rollup``, each under ``token`` and
    the bucket's place: the same blocks from whoever sends them."""
    bucket = ROLLUPS[rollup]
    in_bucket = (f"(SELECT * FROM {_BATCH_RUNS} "
                 f"WHERE check_id = {{c:UUID}} AND {bucket}(finished_at) = {{at:DateTime('UTC')}})")
    select = ROLLUP_OF_RUNS.replace("{bucket}", bucket).replace("{source}", in_bucket)
    for k, check_id, at, ids, _ in short:
        client.command(f"INSERT INTO {rollup} SETTINGS insert_deduplication_token = {{token:String}} {select}",
                       parameters={"ids": ids, "c": check_id, "at": at, "token": f"{token}:{k}:{check_id}:{at}"})


def ping_data(rows: Rows, sources: list[Record]) -> list[tuple] | Columns:
    """What the pings insert of ``rows`` sends: a few rows as tuples (VALUES: see SMALL_INSERT_ROWS), more as
    the records and what the fold adds to them (``ping_source``)."""
    pings = small_ping_rows(rows, sources)
    if pings is None:
        pings = Columns(ping_source(rows.ping_index, sources, rows), len(rows.ping_index))
    return pings


def small_ping_rows(rows: Rows, sources: list[Record]) -> list[tuple] | None:
    """The pings rows of a batch of at most SMALL_INSERT_ROWS pings, made in Python from the fully decoded
    records (``Rows.pings``): a few rows cost less as a VALUES clause than ClickHouse's SELECT of the records
    costs to analyse. None for a larger batch, or one with a record the contract's decoder refuses (a body
    that is not base64: ``wire.PINGS_SELECT`` stores it empty)."""
    index = rows.ping_index
    if len(index) > SMALL_INSERT_ROWS:
        return None
    try:
        events = [decode_event(sources[i][4]) for i in index]
    except ValueError:  # msgspec's DecodeError and ValidationError
        return None
    return Rows(ping_events=events, ping_n=rows.ping_n, ping_durations=rows.ping_durations,
                ping_starts=rows.ping_starts).pings


def ping_source(index: list[int], sources: list[Record], rows: Rows) -> Callable[[], list[list]]:
    """What the pings insert sends (``wire.PINGS_SOURCE``): each ping row's record, by its index among the
    folded events, and what the fold adds to it."""

    def make() -> list[list]:
        if len(index) == len(sources):  # every folded event made a row: the records in order
            records = list(map(_value_of, sources))
        else:
            records = [sources[i][4] for i in index]
        return [records, rows.ping_n, rows.ping_durations, rows.ping_starts]

    return make


def _checks_elsewhere(decoded: tuple, owned: set[TopicPartition]) -> set[str]:
    """The checks of a decoded batch (``Projector.decode``) none of whose records is in a partition of ``owned``."""
    events, sources = decoded[0], decoded[1]
    here: set[str] = set()
    seen: set[str] = set()
    for (event, _), record in zip(events, sources):
        check_id = getattr(event, "check_id", None)
        if check_id is None:
            continue
        seen.add(check_id)
        if TopicPartition(record.topic, record.partition) in owned:
            here.add(check_id)
    return seen - here


def _folded_ahead(projector: Projector, ahead: list[tuple[Batch, Prepared]], batch: Batch) -> Prepared | None:
    """``batch`` as ``_fold_ahead`` folded it while the one before it was written, if it did and that fold still
    stands (no ``forget`` since)."""
    if not ahead:
        return None
    folded, prepared = ahead.pop()
    if prepared.generation != projector.generation:
        return None  # the states it stood on are gone (a failed write, a rebalance): folded again from ClickHouse
    if folded is not batch:  # not the batch handled next: the states are ahead of what is written
        log.warning("a batch folded ahead was not the next one handled; the states are read again")
        projector.forget()
        return None
    return prepared


async def _fold_ahead(projector: Projector, batches: Batcher, batch: Batch, writing: asyncio.Future,
                      generation: int, ahead: list[tuple[Batch, Prepared]]) -> None:
    """While ``batch`` is written (``writing``), fold the batch read after it, on the states ``batch`` left
    (``generation``): the event loop folds while the engine inserts, instead of after. A write that fails forgets
    the states, which drops this fold (``Projector.prepare``, ``_folded_ahead``). Only a batch cut as it comes: a
    replayed one, or one that writes nothing, is handled as before."""
    upcoming = await batches.following(batch, writing)
    if upcoming is None or upcoming.replayed or not upcoming.records or writing.done():
        return
    decoded = batches.decoded(upcoming.records, keep=True)
    if decoded is None or writes_nothing(decoded):
        return
    try:
        prepared = await projector.prepare(upcoming.records, decoded, ahead_of=generation)
    except Exception as exc:  # noqa: BLE001 - folded again when its turn comes, and its error met then
        log.debug("folding a batch ahead failed (%s); it is folded in its turn", exc)
        projector.forget()  # whatever of it the states took: read again from what is written
        return
    if prepared is not None:
        ahead.append((upcoming, prepared))
        projector.counts["folded ahead"] += 1


def writes_nothing(decoded: tuple) -> bool:
    """Whether a batch, as ``Projector.decode`` made it, has nothing to write: no poison record, no registry
    record, no event the fold applies."""
    events, _, poison, registry = decoded
    return not poison and not registry and not folds_any(events)


def _timed(projector: Projector, decode: Callable) -> Callable:
    """``decode``, its time counted in the projector's ``decode`` timing."""

    def timed(records: list[Record]):
        started = time.perf_counter()
        try:
            return decode(records)
        finally:
            projector.timings["decode"] += time.perf_counter() - started

    return timed


GC_YOUNG = 200_000  # container objects allocated (net) between two collections of the youngest generation


def _tune_gc() -> None:
    """The fold allocates many short-lived objects and keeps few: with the default threshold the
    collector spends a large share of the fold walking the long-lived check states over and over.

    A batch's objects (its records, their events, the fold's pairs and rows) live until its insert is done,
    a batch or two later: a collection of the youngest generation walks those alive then, and finds nothing
    to free (none is in a cycle). At 50,000 a drain of 200,000 pings collected 10 times, 9-12 ms each (the
    young objects alive), 0.6 us an event on the event loop's thread; at ``GC_YOUNG`` once, 35 ms, most of
    them freed by their counts before it came. Garbage in a cycle (an exception's traceback) waits at most
    about one batch's allocations."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_YOUNG), max(gen1, 20), max(gen2, 20))


async def _warn_if_not_copartitioned(event_log: EventLog) -> None:
    """A check's pings and transitions are in partitions of the same number only when both topics have as many
    (the producers place a record by its key, modulo the topic's partitions): projectors of one group are given the
    same numbers of each topic (runtime/eventlog/kafka_consumer.py), and with topics of different counts they
    would fold one check apart."""
    counts = [len(await event_log.partitions(topic)) for topic in (TOPIC_PINGS, TOPIC_TRANSITIONS)]
    if counts[0] != counts[1]:
        log.error("the topics %s and %s have %d and %d partitions: a check's records of the two are in partitions of "
                  "different numbers, which the projectors of a group of several fold apart; give both as many",
                  TOPIC_PINGS, TOPIC_TRANSITIONS, *counts)


async def run(config: Config, event_log: EventLog, clickhouse: ClickHouse, stop: asyncio.Event) -> None:
    _tune_gc()
    projector = Projector(clickhouse, event_log)

    ahead: list[tuple[Batch, Prepared]] = []  # the batch read ahead, folded while the one before it was written

    async def handle(batch: Batch) -> dict[TopicPartition, int] | None:
        if not batch.records:
            return None
        ranges = batch.ranges
        committed = batch.next_offsets  # what the shell commits
        decoded = batches.decoded(batch.records)  # decoded when it was read (pure: nothing of the state)
        prepared = _folded_ahead(projector, ahead, batch)
        if decoded is not None and writes_nothing(decoded):
            # The edges' clock ticks alone (an idle system: a batch a second): no row to write, so no journal entry
            # either (an insert into ClickHouse, a part a second); committed, as the next journaled batch must start
            # at the committed offsets.
            projector.counts["records"] += len(batch.records)
            return committed
        token = batch_token(ranges)
        # Retried until they work: nothing is committed meanwhile, so the log keeps every record.
        if not batch.replayed:
            await retry("projector journal", lambda: projector.write_journal(ranges, token), stop=stop, logger=log)
        tries = []
        folded = asyncio.Event()  # this batch's fold is done, on its first try: the next one may be folded

        async def write() -> None:  # a batch written before, by a process that died or by a failed try: checked
            nonlocal prepared
            tries.append(None)
            if batch.replayed or len(tries) > 1:
                # The check_state and rollups of checks whose partitions another member has are its to write and
                # check: it writes their next batches, whose inserts a check here could meet half done (replay).
                owned = batches.consumer.assignment() or None  # none known yet (before a first fetch): all
                await projector.replay(batch.records, token, decoded,
                                       "a restart or a move of its partitions" if batch.replayed else "a failure",
                                       owned)
            else:
                if prepared is None:
                    prepared = await projector.prepare(batch.records, decoded)
                folded.set()
                await projector.write(prepared, token)

        writing = asyncio.ensure_future(retry("projector insert", write, stop=stop, logger=log))
        fold_done = asyncio.ensure_future(folded.wait())
        try:
            await asyncio.wait({writing, fold_done}, return_when=asyncio.FIRST_COMPLETED)
            if not batch.replayed and len(tries) == 1 and prepared is not None and not writing.done():
                await _fold_ahead(projector, batches, batch, writing, prepared.generation, ahead)
            await writing
        except BaseException:
            writing.cancel()  # stopping (or ours failing): the write ends with it, as when it was awaited alone
            await asyncio.gather(writing, return_exceptions=True)
            raise
        finally:
            fold_done.cancel()
        if batch.replayed:
            owned = batches.consumer.assignment()
            if owned and not owned.issuperset(committed):
                # A journaled batch made again whole (replay.Batcher.read_range): the partitions other members have
                # are theirs to commit, and the states of their checks theirs to keep.
                committed = {tp: offset for tp, offset in committed.items() if tp in owned}
                projector.forget()
        return committed

    reported: list[set] = []

    async def assigned(partitions: set) -> None:
        # Partitions moved (a rebalance, a refused commit): other projectors may have advanced those checks.
        # The first assignment only gives this process its partitions: what it folded from them stands.
        if reported:
            projector.forget()
        reported.append(partitions)
        log.info("projector assignment: %d partitions", len(partitions))

    async with event_log.consumer(TOPICS, group=GROUP) as consumer:
        await _warn_if_not_copartitioned(event_log)
        batches = Batcher(consumer, await projector.journal_tail(), decode=_timed(projector, Projector.decode),
                          journal=projector.journal_tail, read_range=getattr(event_log, "read_range", None))
        # Under load, fewer and bigger inserts leave the cores to the edges; on Kafka a shorter window, read as it
        # goes (see KAFKA_BUSY_WAIT_S).
        # Not busy, a batch holding BUSY_RECORDS goes before its window's end (as soon as the handler waits): records
        # that come that fast make the shell busy anyway. (With the default, 500, a batch went every quarter of a
        # second at 2,000 records/s, more often than busy windows of 0.4 s.)
        batches.busy_records = batches.ready_records = BUSY_RECORDS
        if config.kafka is None:
            batches.busy_wait_s = BUSY_WAIT_S
        else:
            batches.busy_wait_s, batches.busy_read_ms = KAFKA_BUSY_WAIT_S, KAFKA_BUSY_READ_MS
        shell = ConsumerShell(
            "projector", consumer, handle,
            batches=batches,
            group=GROUP, logger=log, on_assignment=assigned,
            read_ahead=True,  # the next batch is read while this one is inserted
            log_every_s=LOG_EVERY_S, progress=projector.describe,
        )
        log.info("projector started on %s", ", ".join(TOPICS))
        # The notifier's delivery outcomes have a loop (and consumer group) of their own.
        await asyncio.gather(shell.run(stop), deliveries.run(event_log, clickhouse, stop))
