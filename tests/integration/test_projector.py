"""The projector on a real SQLite log and real chdb: rows, API reads, idempotence, restart, replay."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from runtime import deadletter
from runtime.config import Config
from runtime.eventlog.base import TopicPartition, partition_for
from runtime.eventlog.sqlite import SqliteEventLog
from reads import checks as queries
from projector import service as projector_service
from projector.replay import Batcher, batch_token
from runtime.consumer import ranges_of
from projector.service import Columns, Projector, ping_source
from runtime.consumer import Batch, retry
from checks import idempotency
from schemas.ddl import ROLLUP_OF_RUNS
from schemas.events import (
    TOPIC_CHECKS,
    TOPIC_DEAD_LETTER,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    CheckConfig,
    CheckUpserted,
    PingEvent,
    PingFacts,
    Tick,
    Transition,
    encode,
    utcnow,
    uuid7,
)

CHECK = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
RID = "7e0b0c8e-0000-4000-8000-00000000000a"


@pytest.fixture
async def log(tmp_path):
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=2)
    await log.start()
    yield log
    await log.close()


async def ping(log, kind: str, at=None, rid=None, body=b"", exit_status=None) -> PingEvent:
    event = PingEvent(event_id=uuid7(), check_id=CHECK, project_id=PROJECT, kind=kind, received_at=at or utcnow(),
                      rid=rid, body=body, body_size=len(body), exit_status=exit_status)
    await log.produce(TOPIC_PINGS, encode(event), key=CHECK.encode())
    return event


class Running:
    def __init__(self, log, clickhouse, tmp_path) -> None:
        self.stop = asyncio.Event()
        config = Config.from_env({}, data_dir=tmp_path)
        self.task = asyncio.create_task(projector_service.run(config, log, clickhouse, self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


async def wait_until(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def log_partition(check_id: str) -> int:
    return partition_for(check_id.encode(), 2)


async def count(ch, sql: str) -> int:
    return int((await ch.query(sql))[0][0])


async def _pings_read(log) -> list:
    """Every record of the pings topic, as one batch."""
    consumer = log.consumer([TOPIC_PINGS], group=None)
    await consumer.start()
    records = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    return records


async def _runs(log, n: int, every_s: int = 10) -> None:
    """``n`` runs of CHECK, ``every_s`` apart and ended minutes ago: a start, then a success 3 s later."""
    t0 = utcnow() - timedelta(seconds=every_s * n + 300)
    for i in range(n):
        await ping(log, "start", t0 + timedelta(seconds=every_s * i), rid=RID)
        await ping(log, "success", t0 + timedelta(seconds=every_s * i + 3), rid=RID)


async def _until_folded(clickhouse, n_pings: int, timeout_s: float = 10.0) -> bool:
    """Whether CHECK's check_state counts ``n_pings`` within ``timeout_s``."""
    async def all_in():
        return await count(clickhouse, f"SELECT count() FROM check_state FINAL WHERE n_pings = {n_pings}") == 1

    return await wait_until(all_in, timeout_s)


def _fail_once(projector: Projector, table: str) -> list[str]:
    """Make the projector's first insert into ``table`` fail as a lost ClickHouse would; the list
    returned holds the table once that happened."""
    real_insert, failed = projector.insert, []

    async def insert(name, data, token, *into):
        if name == table and not failed:
            failed.append(name)
            raise ConnectionError("ClickHouse went away")
        await real_insert(name, data, token, *into)

    projector.insert = insert
    return failed


async def test_pings_runs_state_and_api_reads(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    t0 = utcnow()
    await ping(log, "start", t0, rid=RID)
    done = await ping(log, "success", t0 + timedelta(seconds=12.5), rid=RID, body=b"\xff\x00binary")
    await log.produce(TOPIC_TRANSITIONS, encode(Transition(
        event_id=uuid7(), check_id=CHECK, project_id=PROJECT, from_status="new", to_status="up", at=t0,
        reason="success", cause_event_id=done.event_id)), key=CHECK.encode())

    async def state():
        st = (await queries.check_states(clickhouse, [CHECK])).get(CHECK)
        return st if st and st["n_pings"] == 2 and st["status"] == "up" else None

    st = await wait_until(state)
    await projector.halt()
    assert st["last_duration_s"] == 12.5 and st["last_ping"] == done.received_at and not st["started"]
    rows = await queries.pings(clickhouse, CHECK, 10)
    assert [(r["n"], r["kind"], r["duration_s"]) for r in rows] == [(2, "success", 12.5), (1, "start", None)]
    assert rows[0]["rid"] == RID
    assert await queries.ping_body(clickhouse, CHECK, 2) == b"\xff\x00binary"
    assert await queries.ping_body(clickhouse, CHECK, 3) is None
    assert [f["to_status"] for f in await queries.flips(clickhouse, CHECK)] == ["up"]
    assert await count(clickhouse, "SELECT count() FROM runs FINAL") == 1
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 1


async def test_reinserting_a_batch_adds_nothing(log, clickhouse):
    """Same token: ClickHouse drops the block (and the rollup views do not see it); other token: FINAL dedupes."""
    t0 = utcnow()
    events = [await ping(log, "start", t0), await ping(log, "success", t0 + timedelta(seconds=3))]
    records = await _pings_read(log)
    assert len(records) == len(events)
    token = batch_token(ranges_of(records))
    for _ in range(3):
        await Projector(clickhouse, log).process(records, token)  # a fresh projector: nothing in memory
    assert await count(clickhouse, "SELECT count() FROM pings") == 2
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_daily") == 1
    fresh = Projector(clickhouse, log)
    fresh.states.clear()
    await fresh.process(records, "another-token")  # state says these offsets are applied: no rows at all
    assert await count(clickhouse, "SELECT count() FROM pings") == 2


async def test_a_restart_resumes_from_clickhouse_state(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    t0 = utcnow()
    await ping(log, "start", t0, rid=RID)
    await wait_until(lambda: count(clickhouse, "SELECT count() FROM pings FINAL"))
    await projector.halt()
    projector = Running(log, clickhouse, tmp_path)
    await ping(log, "fail", t0 + timedelta(seconds=7), rid=RID, exit_status=2)

    async def two():
        return await count(clickhouse, "SELECT count() FROM pings FINAL") == 2

    assert await wait_until(two)
    await projector.halt()
    [(n, duration)] = await clickhouse.query("SELECT n, duration_s FROM pings FINAL WHERE kind = 'fail'")
    assert (n, duration) == (2, 7.0)


async def _committed(log, group: str) -> dict[TopicPartition, int]:
    consumer = log.consumer(projector_service.TOPICS, group=group)
    await consumer.start()
    positions = await consumer.positions()
    await consumer.close()
    return positions


async def test_a_batch_of_clock_ticks_alone_is_committed_without_a_journal_entry(log, clickhouse, tmp_path):
    """The edges tick every partition about once a second: an idle system's batches hold nothing the projector
    writes. They are committed, and journal nothing (an insert into ClickHouse each); a batch that writes
    starts after them, where the journal must start (the replay re-cuts a journaled batch from the committed
    offsets)."""
    projector = Running(log, clickhouse, tmp_path)
    pings_partitions = [TopicPartition(TOPIC_PINGS, p) for p in range(2)]
    for second in range(3):
        for tp in pings_partitions:
            await log.produce(TOPIC_PINGS, encode(Tick(event_id=uuid7(), at=utcnow(), partition=tp.partition)),
                              partition=tp.partition)
        await asyncio.sleep(0.5 if second < 2 else 0)

    async def ticks_committed():
        committed = await _committed(log, projector_service.GROUP)
        return all(committed.get(tp) == 3 for tp in pings_partitions)

    assert await wait_until(ticks_committed)
    assert await Projector(clickhouse, log).journal_tail() == {}
    event = await ping(log, "success")
    assert await wait_until(lambda: count(clickhouse, "SELECT count() FROM pings FINAL"))
    await projector.halt()
    tp = TopicPartition(TOPIC_PINGS, log_partition(event.check_id))
    [(journaled, (first, last, _token))] = (await Projector(clickhouse, log).journal_tail()).items()
    assert journaled == tp and (first, last) == (3, 3)
    assert (await _committed(log, projector_service.GROUP))[tp] == 4


async def test_the_embedded_log_keeps_the_journal_and_a_clickhouse_journal_before_it_is_replayed(log, clickhouse):
    """On the embedded log the journal is a row per partition in the log's file (a commit there, not an insert
    into chdb and a part), the last batch's. A projector that journaled into ClickHouse before (an earlier
    version) left its last batch there: with nothing in the log's journal, that one is read."""
    t0 = utcnow()
    for i in range(3):
        await ping(log, "start", t0 + timedelta(seconds=i))
    records = await _pings_read(log)
    tp = TopicPartition(TOPIC_PINGS, log_partition(CHECK))
    legacy = {tp: (0, 1)}
    await clickhouse.insert_values("projector_batches", ["consumer", "topic", "partition", "first_offset",
                                                         "last_offset", "token"],
                                   [(projector_service.GROUP, tp.topic, tp.partition, 0, 1, batch_token(legacy))])
    projector = Projector(clickhouse, log)
    assert await projector.journal_tail() == {tp: (0, 1, batch_token(legacy))}
    ranges = ranges_of(records[:2])
    await projector.write_journal(ranges, batch_token(ranges))
    ranges = ranges_of(records[2:])
    await projector.write_journal(ranges, "the last")
    assert await Projector(clickhouse, log).journal_tail() == {tp: (2, 2, "the last")}
    assert await log.read_journal(projector_service.GROUP) == [(tp.topic, tp.partition, 2, 2, "the last")]
    assert await count(clickhouse, "SELECT count() FROM projector_batches") == 1  # the earlier version's only


async def test_a_crash_between_insert_and_commit_replays_the_same_blocks(log, clickhouse, tmp_path):
    t0 = utcnow()
    for i in range(5):
        await ping(log, "start", t0 + timedelta(seconds=10 * i))
        await ping(log, "success", t0 + timedelta(seconds=10 * i + 4))
    consumer = log.consumer(projector_service.TOPICS, group=projector_service.GROUP)
    await consumer.start()
    records = await consumer.getmany(timeout_ms=500)
    records = records[:6]  # the crashed batch held some of what is there now
    await consumer.close()
    crashed = Projector(clickhouse, log)
    ranges = ranges_of(records)
    await crashed.write_journal(ranges, batch_token(ranges))
    await crashed.process(records, batch_token(ranges))  # ...and died before committing
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 3

    consumer = log.consumer(projector_service.TOPICS, group=projector_service.GROUP)
    await consumer.start()
    batcher = Batcher(consumer, await Projector(clickhouse, log).journal_tail())
    cut = await batcher.next(asyncio.Event())
    batch, replayed = cut.records, cut.replayed
    await consumer.close()
    assert replayed and [r.offset for r in batch] == [r.offset for r in records]

    projector = Running(log, clickhouse, tmp_path)

    async def all_in():
        return await count(clickhouse, "SELECT count() FROM pings FINAL") == 10

    assert await wait_until(all_in)
    await projector.halt()
    assert await count(clickhouse, "SELECT count() FROM pings") == 10  # no duplicate block, even before merges
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 5
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_daily") == 5


async def test_poison_goes_to_the_dead_letter_topic(log, clickhouse, tmp_path):
    partition, offset = await log.produce(TOPIC_PINGS, b"{not json", key=CHECK.encode())
    await ping(log, "success")
    projector = Running(log, clickhouse, tmp_path)
    assert await wait_until(lambda: count(clickhouse, "SELECT count() FROM pings FINAL"))
    await projector.halt()
    consumer = log.consumer([TOPIC_DEAD_LETTER], group=None)
    await consumer.start()
    [record] = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    letter = deadletter.decode(record.value)
    assert (letter.service, letter.partition, letter.offset, letter.value) == ("projector", partition, offset, b"{not json")


async def test_a_failed_insert_is_retried_without_losing_rows(log, clickhouse):
    """ClickHouse failing half-way through a batch: the retry folds again from the stored state."""
    t0 = utcnow()
    await ping(log, "start", t0, rid=RID)
    await ping(log, "success", t0 + timedelta(seconds=3), rid=RID)
    records = await _pings_read(log)
    projector = Projector(clickhouse, log)
    failed = _fail_once(projector, "check_state")  # the last insert: the pings (and the runs) are in
    token = batch_token(ranges_of(records))
    await retry("insert", lambda: projector.process(records, token), stop=asyncio.Event())
    assert failed
    assert await count(clickhouse, "SELECT count() FROM pings") == 2
    assert await count(clickhouse, "SELECT count() FROM runs FINAL") == 1
    assert (await queries.check_states(clickhouse, [CHECK]))[CHECK]["n_pings"] == 2


async def test_an_event_the_fold_refuses_is_dead_lettered_once_when_the_batch_is_retried(log, clickhouse,
                                                                                        monkeypatch):
    """An event whose fold raises goes to the dead-letter topic with the batch's other poison; the batch's
    write fails and is retried (folded again): still one dead letter, not one per attempt."""
    from projector import fold as fold_module

    real_apply = fold_module._APPLY[PingFacts]

    def apply(state, event, offset, rows):
        if event.kind == "log":
            raise ValueError("refused")
        return real_apply(state, event, offset, rows)

    monkeypatch.setitem(fold_module._APPLY, PingFacts, apply)
    await ping(log, "success")
    refused = await ping(log, "log")
    records = await _pings_read(log)
    projector = Projector(clickhouse, log)
    failed = _fail_once(projector, "pings")
    decoded = Projector.decode(records)  # as the shell hands it over: decoded once, for every attempt
    token = batch_token(ranges_of(records))
    await retry("insert", lambda: projector.process(records, token, decoded), stop=asyncio.Event())
    assert failed
    assert await count(clickhouse, "SELECT count() FROM pings FINAL") == 1
    consumer = log.consumer([TOPIC_DEAD_LETTER], group=None)
    await consumer.start()
    letters = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    assert [deadletter.decode(r.value).value for r in letters] == [encode(refused)]


async def _batches(log, n: int) -> list[list]:
    """``n`` runs of one check, one batch each, as the shell reads them."""
    t0 = utcnow()
    for i in range(n):
        await ping(log, "start", t0 + timedelta(seconds=10 * i), rid=RID)
        await ping(log, "success", t0 + timedelta(seconds=10 * i + 3), rid=RID)
    records = await _pings_read(log)
    assert len(records) == 2 * n
    return [records[i:i + 2] for i in range(0, 2 * n, 2)]


async def _written(clickhouse) -> tuple[int, int, int, list]:
    """Pings, runs, the check's n_pings, the runs' durations."""
    return (
        await count(clickhouse, "SELECT count() FROM pings FINAL"),
        await count(clickhouse, "SELECT count() FROM runs FINAL"),
        (await queries.check_states(clickhouse, [CHECK]))[CHECK]["n_pings"],
        [r[0] for r in await clickhouse.query("SELECT duration_s FROM runs FINAL ORDER BY finished_at")],
    )


async def test_batches_after_a_failed_write_are_each_written_once_whole(log, clickhouse):
    """A's write fails half-way (after its pings); the retry folds A again from what ClickHouse holds, and
    B and C, read meanwhile, follow: A, B and C are each written once, whole."""
    a, b, c = await _batches(log, 3)
    projector = Projector(clickhouse, log)
    failed = _fail_once(projector, "check_state")
    with pytest.raises(ConnectionError):
        await projector.process(a, batch_token(ranges_of(a)))
    await projector.process(a, batch_token(ranges_of(a)))  # the retry
    assert (await queries.check_states(clickhouse, [CHECK]))[CHECK]["n_pings"] == 2
    await projector.process(b, batch_token(ranges_of(b)))
    await projector.process(c, batch_token(ranges_of(c)))
    assert failed
    assert await _written(clickhouse) == (6, 3, 6, [3.0, 3.0, 3.0])


async def test_a_journaled_batch_over_two_partitions_is_cut_again_behind_a_backlog(log, clickhouse):
    """The log hands out one partition's backlog first: the replay reads on until it has the whole batch."""
    checks = {}
    for i in range(64):  # a check on each partition
        key = f"0f1e2d3c-4b5a-4968-8776-{i:012d}"
        checks.setdefault(log_partition(key), key)
    assert len(checks) == 2
    t0 = utcnow()
    for i in range(20):
        for check in checks.values():
            event = PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind="success",
                              received_at=t0 + timedelta(seconds=i))
            await log.produce(TOPIC_PINGS, encode(event), key=check.encode())
    crashed = Projector(clickhouse, log)
    journaled = {TopicPartition(TOPIC_PINGS, p): (0, 3) for p in checks}
    await crashed.write_journal(journaled, batch_token(journaled))  # ...and died before committing

    consumer = log.consumer(projector_service.TOPICS, group=projector_service.GROUP)
    await consumer.start()
    batcher = Batcher(consumer, await Projector(clickhouse, log).journal_tail(), max_records=8)
    cut = await batcher.next(asyncio.Event())
    batch, replayed = cut.records, cut.replayed
    rest = [r for r in batcher.held]
    cut = await batcher.next(asyncio.Event())
    following, again = cut.records, cut.replayed
    await consumer.close()
    assert replayed and ranges_of(batch) == journaled
    assert not again and following
    assert all(r.offset > 3 for r in rest + following)


# The tables a batch with runs writes, and what a part lost to a crash takes from them (see the test below).
_LOST = ("pings", "runs", "durations_hourly", "durations_daily", "transitions", "check_state", "ping_keys")


async def test_a_replayed_batch_writes_again_what_clickhouse_dropped_for_a_part_a_crash_lost(log, clickhouse,
                                                                                              tmp_path):
    """A process killed between MergeTree's recording of a block's token and the rename of its part leaves the
    token and not the part: the replay's block is then dropped as a duplicate (Projector.check_replayed). Here a
    mutation takes the batch's rows out of every table the batch wrote and leaves the tokens recorded, as such
    a crash does; the replay finds the rows missing and writes them once, the rollups included."""
    t0 = utcnow() - timedelta(minutes=5)
    for i in range(4):
        await ping(log, "start", t0 + timedelta(seconds=10 * i), rid=RID)
        await ping(log, "success", t0 + timedelta(seconds=10 * i + 3), rid=RID)
    await log.produce(TOPIC_TRANSITIONS, encode(_transition("new", "up", t0, "new", "up")), key=CHECK.encode())
    keyed = PingEvent(event_id=idempotency.ping_event_id(CHECK, "job-42"), check_id=CHECK, project_id=PROJECT,
                      kind="log", received_at=t0 + timedelta(seconds=50))
    await log.produce(TOPIC_PINGS, encode(keyed), key=CHECK.encode())
    config = CheckConfig(id=CHECK, project_id=PROJECT, name="held", created=t0)
    await log.produce(TOPIC_CHECKS, encode(CheckUpserted(event_id=uuid7(), check=config)), key=CHECK.encode())
    consumer = log.consumer(projector_service.TOPICS, group=projector_service.GROUP)
    await consumer.start()
    records = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    crashed = Projector(clickhouse, log)
    ranges = ranges_of(records)
    await crashed.write_journal(ranges, batch_token(ranges))
    await crashed.process(records, batch_token(ranges))
    for table in _LOST:
        await clickhouse.run(lambda c, t=table: c.command(
            f"ALTER TABLE {t} DELETE WHERE check_id = '{CHECK}' SETTINGS mutations_sync = 2"))
    await clickhouse.run(lambda c: c.command(
        f"ALTER TABLE checks DELETE WHERE id = '{CHECK}' SETTINGS mutations_sync = 2"))
    again = Projector(clickhouse, log)  # what ClickHouse does with the batch sent again as it was: nothing
    await again.process(records, batch_token(ranges))
    assert await count(clickhouse, "SELECT count() FROM pings") == 0
    assert await count(clickhouse, "SELECT count() FROM runs") == 0

    await clickhouse.run(lambda c: c.command("CREATE TABLE runs_again_left AS runs"))  # as a crash would leave it
    projector = Running(log, clickhouse, tmp_path)  # a restart: the journaled batch is replayed, then checked

    async def all_in():
        return await count(clickhouse, "SELECT count() FROM check_state FINAL WHERE n_pings = 9") == 1

    assert await wait_until(all_in)
    await projector.halt()
    assert await count(clickhouse, "SELECT count() FROM pings") == 9
    assert await count(clickhouse, "SELECT count() FROM runs") == 4
    assert await count(clickhouse, "SELECT count() FROM transitions") == 1
    assert await count(clickhouse, "SELECT count() FROM ping_keys") == 1
    assert await count(clickhouse, "SELECT count() FROM checks WHERE name = 'held'") == 1
    assert await count(clickhouse, "SELECT count() FROM system.tables WHERE database = currentDatabase() "
                                   "AND startsWith(name, 'runs_again_')") == 0  # the scratch tables, left or not
    for rollup in ("durations_hourly", "durations_daily"):
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 4
        assert await count(clickhouse, f"SELECT toUInt64(quantilesTDigestMerge(0.5, 0.95, 0.99)(duration)[1]) "
                                       f"FROM {rollup}") == 3

    restarted = Running(log, clickhouse, tmp_path)  # nothing journaled is left to replay: nothing changes
    await asyncio.sleep(1.0)
    await restarted.halt()
    assert await count(clickhouse, "SELECT count() FROM pings") == 9
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 4


async def test_a_write_that_failed_after_clickhouse_kept_its_token_is_checked_when_tried_again(
        log, clickhouse, tmp_path, monkeypatch):
    """An insert that fails once ClickHouse recorded its block's token (and not its part) leaves the same state as
    a crash there: the retry's block is dropped. A batch tried again is checked as a replayed one."""
    real, failed = Projector.insert, []

    async def insert(self, table, data, token, into=None):
        await real(self, table, data, token, into)
        if table == "pings" and not failed:
            failed.append(token)
            await self.ch.run(lambda c: c.command(
                f"ALTER TABLE pings DELETE WHERE check_id = '{CHECK}' SETTINGS mutations_sync = 2"))
            raise ConnectionError("ClickHouse went away after recording the block's token")

    monkeypatch.setattr(Projector, "insert", insert)
    await _runs(log, 3)
    projector = Running(log, clickhouse, tmp_path)
    assert await _until_folded(clickhouse, 6)
    await projector.halt()
    assert failed
    assert await count(clickhouse, "SELECT count() FROM pings FINAL") == 6
    assert await count(clickhouse, "SELECT count() FROM runs FINAL") == 3
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 3


async def _batch_of_runs(log, n: int) -> tuple[list, str]:
    """``n`` runs of CHECK (``_runs``), read as one batch; and the batch's token."""
    await _runs(log, n)
    records = await _pings_read(log)
    return records, batch_token(ranges_of(records))


async def _lose(clickhouse, tables) -> None:
    """CHECK's rows out of ``tables``, the tokens of their blocks left: what a crash between MergeTree's recording
    of a token and its part's rename leaves."""
    for table in tables:
        await clickhouse.run(lambda c, t=table: c.command(
            f"ALTER TABLE {t} DELETE WHERE check_id = '{CHECK}' SETTINGS mutations_sync = 2"))


async def test_members_writing_a_rollup_again_at_once_count_its_runs_once(log, clickhouse, monkeypatch):
    """Two members of a group that split a dead member's partitions each replay and check its batch, at once. Both
    find a rollup bucket short of the batch's runs before either writes it again (here: each member's first look
    is given what was there before either wrote); both write it under the same token, so it counts the runs once
    (under tokens of their own, 8 runs for 4). A token standing without its part (a crash while writing again)
    is passed by the next token."""
    monkeypatch.setattr(projector_service, "STEADY_S", 0.05)
    records, token = await _batch_of_runs(log, 4)
    await Projector(clickhouse, log).process(records, token)
    run_ids = [row[0] for row in await clickhouse.query("SELECT toString(event_id) FROM runs")]
    assert len(run_ids) == 4

    async def rolled() -> list[int]:
        return [await count(clickhouse, f"SELECT countMerge(runs) FROM {t}") for t in projector_service.ROLLUPS]

    lost = (*projector_service.ROLLUPS, "check_state")  # check_state: the dead member did not write it
    await _lose(clickhouse, lost)
    real_short, looks = projector_service._rollup_short, []

    def short_as_first_seen(client, rollup, ids):
        looks.append(rollup)
        if looks.count(rollup) == 1:  # the first member's look, before it writes (and its second, to be sure)
            first_seen[rollup] = real_short(client, rollup, ids)
        if looks.count(rollup) in (4, 5):  # the second member's two, made at the same moments
            return first_seen[rollup]
        return real_short(client, rollup, ids)

    first_seen: dict[str, list] = {}
    monkeypatch.setattr(projector_service, "_rollup_short", short_as_first_seen)
    members = [Projector(clickhouse, log) for _ in range(2)]
    prepared = [await member.prepare(records) for member in members]  # both fold it before either writes
    for member, batch in zip(members, prepared):
        await member.rewrite(batch, token)
    assert all(sum(n for *_, n in seen) == 4 for seen in first_seen.values()) and len(first_seen) == 2
    assert await rolled() == [4, 4]
    monkeypatch.setattr(projector_service, "_rollup_short", real_short)

    await _lose(clickhouse, lost)  # the tokens of the first write stand without their parts
    assert await rolled() == [0, 0]
    await Projector(clickhouse, log).replay(records, token)
    assert await rolled() == [4, 4]


async def test_a_crash_while_a_replayed_batch_is_checked_leaves_it_to_be_checked_again(log, clickhouse,
                                                                                      monkeypatch):
    """check_state comes after the check of the other tables: a replay that dies while writing a rollup again
    leaves the batch unfolded, so the next replay folds it and writes the rollup (check_state written first, the
    next replay folded nothing and the rollups stayed at 0)."""
    monkeypatch.setattr(projector_service, "STEADY_S", 0.05)
    records, token = await _batch_of_runs(log, 3)
    crashed = Projector(clickhouse, log)
    assert not _fail_once(crashed, "check_state")
    with pytest.raises(ConnectionError):  # the first member died before its check_state
        await crashed.process(records, token)
    await _lose(clickhouse, projector_service.ROLLUPS)  # its rollups' parts lost, their tokens left
    real_top_up = projector_service._top_up

    def top_up_and_die(client, rollup, short, tok):
        raise ConnectionError("the process died while writing a rollup again")

    monkeypatch.setattr(projector_service, "_top_up", top_up_and_die)
    with pytest.raises(ConnectionError):
        await Projector(clickhouse, log).replay(records, token)
    assert await count(clickhouse, f"SELECT count() FROM check_state WHERE check_id = '{CHECK}'") == 0
    monkeypatch.setattr(projector_service, "_top_up", real_top_up)
    await Projector(clickhouse, log).replay(records, token)
    for rollup in projector_service.ROLLUPS:
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 3
    assert await count(clickhouse, "SELECT count() FROM check_state FINAL WHERE n_pings = 6") == 1


async def _half_done_insert(clickhouse) -> str:
    """CHECK's runs once more under new ids, in the runs table alone (a scratch table's parts attached, as
    ``_write_runs_again`` does): another batch of as many runs in the same buckets whose insert is half done, its runs
    part in and its rollup parts not yet. Returns the scratch table, from which ``_insert_done`` ends it."""
    scratch = f"runs_half_{uuid7().replace('-', '')}"

    def make(c) -> None:
        c.command(f"CREATE TABLE {scratch} AS runs")
        c.command(f"INSERT INTO {scratch} SELECT generateUUIDv4(), generateUUIDv4(), check_id, project_id, rid, "
                  f"started_at, finished_at, duration_s, outcome, exit_status FROM runs FINAL "
                  f"WHERE check_id = '{CHECK}'")
        projector_service.attach_parts(c, scratch, "runs")

    await clickhouse.run(make)
    return scratch


async def _insert_done(clickhouse, scratch: str) -> None:
    """The rollup parts of ``_half_done_insert``'s runs, as its views would have written them."""
    def land(c) -> None:
        for rollup, bucket in projector_service.ROLLUPS.items():
            select = ROLLUP_OF_RUNS.replace("{bucket}", bucket).replace("{source}", scratch)
            c.command(f"INSERT INTO {rollup} {select}")
        c.command(f"DROP TABLE {scratch} SYNC")

    await clickhouse.run(land)


async def test_a_rollup_looked_at_while_another_insert_is_half_done_is_not_written_again(log, clickhouse):
    """A member checks a replayed batch while another insert of the same check's runs is half done: its runs part in
    the runs table, its rollup parts not yet (parts of different tables, written one after the other). A look then
    finds the bucket short of exactly the batch's runs. Written again on that one look, it counted the batch twice
    once the other insert was done (12 runs for 8); a bucket is written again only when a second look, a moment
    later, finds it short as well."""
    records, token = await _batch_of_runs(log, 4)
    await Projector(clickhouse, log).process(records, token)
    await _lose(clickhouse, ("check_state",))  # the batch is folded again, and checked, when replayed
    scratch = await _half_done_insert(clickhouse)
    assert await count(clickhouse, "SELECT count() FROM runs FINAL") == 8
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 4

    async def done_soon() -> None:
        await asyncio.sleep(projector_service.STEADY_S / 3)
        await _insert_done(clickhouse, scratch)

    other = asyncio.ensure_future(done_soon())
    await Projector(clickhouse, log).replay(records, token)
    await other
    for rollup in projector_service.ROLLUPS:
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 8, rollup
    assert await count(clickhouse, "SELECT count() FROM check_state FINAL WHERE n_pings = 8") == 1


async def test_only_the_member_given_a_checks_partition_writes_its_rollups_again(log, clickhouse, monkeypatch):
    """Members given parts of a dead member's batch each replay it whole; a check's check_state and rollups are
    written and checked by the member that has its partition (the one that writes its next batches, so no insert
    of its is half done then). A member without it leaves the check's state as it was before the batch, so the one
    with it folds the batch again and checks it, even after the other's replay."""
    monkeypatch.setattr(projector_service, "STEADY_S", 0.05)
    records, token = await _batch_of_runs(log, 3)
    crashed = Projector(clickhouse, log)
    assert not _fail_once(crashed, "check_state")
    with pytest.raises(ConnectionError):  # the dead member wrote all but its check_state
        await crashed.process(records, token)
    await _lose(clickhouse, projector_service.ROLLUPS)  # and its rollups' parts were lost, their tokens left
    here = TopicPartition(TOPIC_PINGS, log_partition(CHECK))
    others = {TopicPartition(topic, p) for topic in (TOPIC_PINGS, TOPIC_TRANSITIONS) for p in range(2)} - {here}
    await Projector(clickhouse, log).replay(records, token, owned=others)
    for rollup in projector_service.ROLLUPS:
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 0, rollup  # not its to write
    assert await count(clickhouse, f"SELECT count() FROM check_state WHERE check_id = '{CHECK}'") == 0
    await Projector(clickhouse, log).replay(records, token, owned={here})
    for rollup in projector_service.ROLLUPS:
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 3, rollup
    assert await count(clickhouse, "SELECT count() FROM check_state FINAL WHERE n_pings = 6") == 1


def _folding_ahead(monkeypatch, batch_max: int, fail_at: int | None = None) -> tuple[list, list]:
    """The service's projector with batches of ``batch_max`` records and inserts slow enough (50 ms) that the next
    batch is read and folded while one is written; with ``fail_at``, the pings insert of that batch fails once
    after its fold and the next one's. Returns (the projectors made, the batches whose insert failed)."""
    made, failed = [], []

    class Small(projector_service.Batcher):
        def __init__(self, consumer, replay, **kwargs) -> None:
            super().__init__(consumer, replay, max_records=batch_max, **kwargs)

    class Slow(Projector):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        async def insert(self, table, data, token, into=None):
            await asyncio.sleep(0.05)
            if table == "pings" and self.counts["batches"] + 1 == fail_at and not failed:
                failed.append(self.counts["folded ahead"])
                raise ConnectionError("ClickHouse went away")
            await super().insert(table, data, token, into)

    monkeypatch.setattr(projector_service, "Batcher", Small)
    monkeypatch.setattr(projector_service, "Projector", Slow)
    return made, failed


@pytest.mark.parametrize("fail_at", [None, 3])
async def test_batches_folded_while_the_one_before_is_written_write_each_run_once(log, clickhouse, tmp_path,
                                                                                 monkeypatch, fail_at):
    """The event loop folds the batch read ahead while the engine inserts the one before it. Its fold stands on the
    states that batch left; a write that fails forgets them, and the batch folded ahead is folded again from
    ClickHouse in its turn: every ping, run and rollup once either way."""
    made, failed = _folding_ahead(monkeypatch, batch_max=20, fail_at=fail_at)
    await _runs(log, 60, every_s=20)
    projector = Running(log, clickhouse, tmp_path)
    assert await _until_folded(clickhouse, 120, 30)
    await projector.halt()
    [folding] = made
    assert folding.counts["folded ahead"] >= 3, dict(folding.counts)
    if fail_at is not None:
        assert failed and failed[0] >= fail_at, failed  # the batch after the failing one had been folded ahead
    assert await count(clickhouse, "SELECT count() FROM pings FINAL") == 120
    assert await count(clickhouse, "SELECT count() FROM runs FINAL") == 60
    assert await count(clickhouse, "SELECT uniqExact(n) FROM pings FINAL") == 120
    for rollup in projector_service.ROLLUPS:
        assert await count(clickhouse, f"SELECT countMerge(runs) FROM {rollup}") == 60
    assert await count(clickhouse, "SELECT toUInt64(round(max(duration_s))) FROM runs FINAL") == 3


async def test_a_fold_ahead_met_by_a_failed_write_folds_nothing(log):
    """The write of the batch before fails (``forget``) while the batch folded ahead reads its states: that fold
    gives up and leaves the states as the failure left them (empty); a fold in its turn reads them again."""
    await ping(log, "start", rid=RID)
    await ping(log, "success", rid=RID)
    records = await _pings_read(log)

    class Forgetting:  # ClickHouse, answering the states' read once the write before has failed
        def __init__(self) -> None:
            self.reads = 0

        async def run(self, fn, *args):
            self.reads += 1
            if self.reads == 1:
                projector.forget()
            return []

    projector = Projector(clickhouse=Forgetting(), event_log=log)
    generation = projector.generation
    assert await projector.prepare(records, ahead_of=generation) is None
    assert projector.states == {} and projector.generation == generation + 1
    prepared = await projector.prepare(records)  # in its turn: read again, folded
    assert prepared.generation == generation + 1 and projector.states[CHECK].n_pings == 2
    assert len(prepared.rows.ping_events) == 2


def test_a_batch_folded_ahead_is_used_only_by_its_own_turn_while_its_states_stand(caplog):
    batch, other = Batch([object()], replayed=False), Batch([object()], replayed=False)
    projector = Projector(clickhouse=None, event_log=None)
    prepared = projector_service.Prepared(None, [], [], [], 1, [], projector.generation)
    assert projector_service._folded_ahead(projector, [(batch, prepared)], batch) is prepared
    projector.states["x"] = object()
    assert projector_service._folded_ahead(projector, [(batch, prepared)], other) is None
    assert projector.states == {} and "folded ahead was not the next one" in caplog.text  # forgotten: read again
    assert projector_service._folded_ahead(projector, [(batch, prepared)], batch) is None  # stood on those states
    assert projector_service._folded_ahead(projector, [], batch) is None


async def test_a_pings_block_inserted_twice_is_counted_once_in_the_runs_and_the_rollups(log, clickhouse):
    t0 = utcnow()
    await ping(log, "start", t0)
    await ping(log, "success", t0 + timedelta(seconds=3))
    records = await _pings_read(log)
    projector = Projector(clickhouse, log)
    prepared = await projector.prepare(records)
    rows = prepared.rows
    pings = Columns(ping_source(rows.ping_index, prepared.sources, rows), len(rows.ping_index))  # as ``write`` has them
    for _ in range(2):  # a crash after this insert and before check_state: the replay sends it again
        await projector.insert("pings", pings, "token:pings", projector_service.PINGS_ENDING_RUNS)
    assert await count(clickhouse, "SELECT count() FROM pings") == 2
    assert await count(clickhouse, "SELECT count() FROM runs") == 1
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_hourly") == 1
    assert await count(clickhouse, "SELECT countMerge(runs) FROM durations_daily") == 1


def _transition(frm: str, to: str, at, from_base: str = "", to_base: str = "", cause: str = "", **extra) -> Transition:
    return Transition(event_id=uuid7(), check_id=CHECK, project_id=PROJECT, from_status=frm, to_status=to, at=at,
                      reason="test", cause_event_id=cause, from_base=from_base, to_base=to_base, **extra)


async def test_it_reads_flips_as_changes_of_the_stored_status(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    t0 = utcnow() - timedelta(minutes=5)
    steps = [
        _transition("new", "started", t0, "new", "new", cause="a"),  # a start: no flip
        _transition("started", "up", t0 + timedelta(seconds=1), "new", "up", cause="b"),
        _transition("up", "paused", t0 + timedelta(seconds=2), "up", "paused", cause="c"),
        _transition("paused", "new", t0 + timedelta(seconds=3), "paused", "new", cause="d"),
        _transition("new", "down", t0 + timedelta(seconds=4)),  # written by an older monitor: up/down only
        _transition("down", "up", t0 + timedelta(seconds=5), "down", "up", cause="e", rule="recovery_threshold",
                    held="snooze"),
    ]
    for t in steps:
        await log.produce(TOPIC_TRANSITIONS, encode(t), key=CHECK.encode())

    async def flips():
        rows = await queries.flips(clickhouse, CHECK)
        return rows if len(rows) == 5 else None

    rows = await wait_until(flips)
    await projector.halt()
    assert [(r["from_status"], r["to_status"]) for r in rows] == [  # newest first, as Healthchecks lists them
        ("down", "up"), ("new", "down"), ("paused", "new"), ("up", "paused"), ("new", "up")]
    # pingstream's rule and held are projected with it ('' where none was set)
    assert [(r["rule"], r["held"]) for r in rows] == [("recovery_threshold", "snooze")] + [("", "")] * 4


async def test_a_missed_deadline_stores_the_check_down_unless_a_later_ping_was_read(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    t0 = utcnow() - timedelta(minutes=5)
    await ping(log, "success", t0)
    await log.produce(TOPIC_TRANSITIONS, encode(_transition("grace", "down", t0 + timedelta(seconds=90), "up", "down")),
                      key=CHECK.encode())

    async def down():
        st = (await queries.check_states(clickhouse, [CHECK])).get(CHECK)
        return st if st and st["status"] == "down" else None

    assert await wait_until(down)
    await ping(log, "success", t0 + timedelta(seconds=100))
    await log.produce(TOPIC_TRANSITIONS, encode(_transition("grace", "down", t0 + timedelta(seconds=95), "up", "down")),
                      key=CHECK.encode())  # older than the ping before it

    async def up_again():
        st = (await queries.check_states(clickhouse, [CHECK])).get(CHECK)
        return st if st and st["n_pings"] == 2 else None

    st = await wait_until(up_again)
    await asyncio.sleep(0.5)
    st = (await queries.check_states(clickhouse, [CHECK]))[CHECK]
    await projector.halt()
    assert st["status"] == "up"


async def test_the_migration_adds_the_state_columns_to_an_existing_database(clickhouse):
    from schemas import ddl

    old = f"{clickhouse.database}_old"
    added = [s for s in ddl.STATEMENTS
             if any(f"EXISTS {c} " in s for c in ("from_base", "to_base", "status_at", "held", "rule"))]
    assert len(added) == 5

    def check(client):
        for statement in ddl.STATEMENTS:
            if statement not in added:
                client.command(statement.format(db=old))
        ddl.migrate(client, old)
        ddl.migrate(client, old)  # idempotent
        try:
            cols = {(r[0], r[1]) for r in client.query(
                f"SELECT table, name FROM system.columns WHERE database = '{old}'").result_rows}
        finally:
            client.command(f"DROP DATABASE IF EXISTS {old}")
        return cols

    cols = await clickhouse.run(check)
    assert {("transitions", "from_base"), ("transitions", "to_base"), ("check_state", "status_at"),
            ("transitions", "held"), ("transitions", "rule")} <= cols


async def test_the_tables_written_each_batch_merge_with_a_wider_selector(clickhouse):
    """ddl.MERGE_SETTINGS on every table the projector writes once a batch, on every start."""
    from schemas import ddl

    def settings(client) -> dict[str, str]:
        return dict(client.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() "
            "AND name IN {names:Array(String)}", parameters={"names": list(ddl.BATCH_TABLES)}).result_rows)

    tables = await clickhouse.run(settings)
    assert set(tables) == set(ddl.BATCH_TABLES)
    for name, create in tables.items():
        assert "merge_selector_base = 10" in create, (name, create)

    def migrate_again(client) -> list[str]:
        """Another start: the tables that have the setting are left alone, one set otherwise is mended."""
        client.command(f"ALTER TABLE {clickhouse.database}.runs MODIFY SETTING merge_selector_base = 5")
        sent, command = [], client.command
        client.command = lambda sql, *a, **kw: (sent.append(sql), command(sql, *a, **kw))[1]
        try:
            ddl.migrate(client, clickhouse.database)
        finally:
            client.command = command
        return [sql for sql in sent if "MODIFY SETTING merge_selector_base" in sql]

    assert await clickhouse.run(migrate_again) == [
        f"ALTER TABLE {clickhouse.database}.runs MODIFY SETTING merge_selector_base = 10"]
    assert "merge_selector_base = 10" in (await clickhouse.run(settings))["runs"]


async def test_the_projector_says_so_when_a_checks_pings_and_transitions_cannot_share_a_member(tmp_path, caplog):
    """Projectors of a group are given the same partition numbers of each topic (Kafka's range assignment): a check's
    pings and transitions go to one member only when both topics have as many partitions."""
    path = tmp_path / "log.sqlite3"
    for topic, partitions in ((TOPIC_PINGS, 2), (TOPIC_TRANSITIONS, 3)):  # made by logs of different defaults
        made = SqliteEventLog(path, default_partitions=partitions)
        await made.start()
        await made.partitions(topic)
        await made.close()
    mixed = SqliteEventLog(path, default_partitions=2)
    await mixed.start()
    try:
        await projector_service._warn_if_not_copartitioned(mixed)
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
            f"the topics {TOPIC_PINGS} and {TOPIC_TRANSITIONS} have 2 and 3 partitions: a check's records of the two "
            "are in partitions of different numbers, which the projectors of a group of several fold apart; give "
            "both as many"]
    finally:
        await mixed.close()
    caplog.clear()
    even = SqliteEventLog(tmp_path / "even.sqlite3", default_partitions=4)
    await even.start()
    try:
        await projector_service._warn_if_not_copartitioned(even)
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
    finally:
        await even.close()
