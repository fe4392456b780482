"""The projector's hot path (issue #17 item 2) on real chdb and a real SQLite log: Arrow tables inserted in
place, one block per batch under its deduplication token, a batch decoded at once or record by record,
and decoded when it is read."""

from __future__ import annotations

from datetime import timedelta

import asyncio

import pyarrow as pa
import pytest

from projector import service, wire
from projector.replay import Batcher
from projector.service import Projector
from runtime.eventlog.base import Record
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import (
    TOPIC_PINGS,
    CheckConfig,
    CheckUpserted,
    PingEvent,
    Tick,
    decode,
    encode,
    utcnow,
    uuid7,
)

PROJECT = "019ab7ef-0000-7000-8000-000000000001"


def _ping(check: str, kind: str, at, **kw) -> PingEvent:
    return PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind=kind, received_at=at, **kw)


def _records(values: list[bytes]) -> list[Record]:
    return [Record(TOPIC_PINGS, 0, i, None, v, 0) for i, v in enumerate(values)]


async def test_a_block_larger_than_a_read_block_is_deduplicated_as_one(clickhouse):
    """chdb reads a Python table in blocks of 65,409 rows: the insert still forms one block (and one part), so
    a batch inserted again under the same token is dropped whole, as the replay after a crash needs."""
    n = 150_000
    check, at = str(uuid7()), utcnow()
    table = pa.table({
        "event_id": pa.array([uuid7() for _ in range(n)], pa.string()),
        "check_id": pa.array([check] * n, pa.string()),
        "received_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
        "n": pa.array(range(n), pa.uint64()),
    })

    async def insert(token: str) -> None:
        await clickhouse.run(lambda c: clickhouse.insert_arrow(
            c, "ping_keys", table, {"insert_deduplication_token": token, "optimize_on_insert": 0}))

    await insert("batch-1")
    await insert("batch-1")
    [(rows, parts)] = await clickhouse.query("SELECT count(), uniqExact(_part) FROM ping_keys")
    assert (rows, parts) == (n, 1)
    await insert("batch-2")
    [(rows,)] = await clickhouse.query("SELECT count() FROM ping_keys")
    assert rows == 2 * n


async def test_an_insert_the_table_refuses_raises_and_stores_nothing(clickhouse):
    table = pa.table({"consumer": pa.array([b"c"]), "topic": pa.array([b"t"]), "partition": pa.array([0], pa.uint32()),
                      "first_offset": pa.array([0], pa.int64()), "last_offset": pa.array([0], pa.int64()),
                      "token": pa.array([b"x"]), "no_such_column": pa.array([1])})
    with pytest.raises(Exception, match="projector_batches"):
        await clickhouse.run(lambda c: clickhouse.insert_arrow(c, "projector_batches", table, {}))
    [(rows,)] = await clickhouse.query("SELECT count() FROM projector_batches")
    assert rows == 0


async def test_every_ping_column_is_stored_as_the_event_has_it(clickhouse):
    """The pings rows go as columns taken from the events in bulk: each value arrives as it was sent."""
    check, rid = str(uuid7()), str(uuid7())
    t0 = utcnow().replace(microsecond=123456)
    events = [
        _ping(check, "start", t0, rid=rid, method="POST", scheme="https", remote_addr="10.1.2.3",
              user_agent="cron/1", body=b"\x00\xffbinary", body_size=8),
        _ping(check, "fail", t0 + timedelta(seconds=1.5), rid=rid, exit_status=3, source="checkin"),
    ]
    await Projector(clickhouse, None).process(_records([encode(e) for e in events]), "token-1")
    got = await clickhouse.query(
        "SELECT toString(event_id), toString(check_id), toString(project_id), n, kind, exit_status, toString(rid), "
        "toUnixTimestamp64Micro(received_at), method, scheme, remote_addr, user_agent, hex(body), body_size, source, "
        "duration_s FROM pings FINAL WHERE check_id = {c:UUID} ORDER BY n", {"c": check})
    assert got == [
        (e.event_id, check, PROJECT, n, e.kind, e.exit_status, rid, int(e.received_at.timestamp()) * 1_000_000
         + e.received_at.microsecond, e.method, e.scheme, e.remote_addr, e.user_agent, e.body.hex().upper(),
         e.body_size, e.source, duration)
        for n, (e, duration) in enumerate(zip(events, [None, 1.5]), start=1)
    ]


def test_a_batch_of_known_events_is_decoded_at_once():
    check = str(uuid7())
    values = [encode(_ping(check, "success", utcnow())) for _ in range(3)]
    records = _records(values)
    events, sources, poison, registry = Projector.decode(records)
    assert sources is records and poison == [] and registry == []
    assert [(e, o) for e, o in events] == [(wire.decode(v), i) for i, v in enumerate(values)]
    full = decode(values[0])  # a ping as the fold reads it: the contract's values of those fields
    assert type(events[0][0]) is wire.PingFacts
    assert all(getattr(events[0][0], f) == getattr(full, f) for f in wire.PingFacts.__struct_fields__)


def test_poison_unknown_types_and_registry_records_are_sorted_out_one_by_one():
    check = str(uuid7())
    ok = encode(_ping(check, "success", utcnow()))
    upsert = CheckUpserted(event_id=uuid7(), check=CheckConfig(id=check, project_id=PROJECT, created=utcnow()))
    tick = Tick(event_id=uuid7(), at=utcnow(), partition=0)
    values = [ok, b"{not json", b'{"type": "from_the_future", "event_id": "x"}', encode(upsert), encode(tick), ok]
    records = _records(values)
    events, sources, poison, registry = Projector.decode(records)
    assert [o for _, o in events] == [0, 4, 5] and [r.offset for r in sources] == [0, 4, 5]
    assert [r.offset for r, _ in poison] == [1]
    assert [(type(e), o) for e, o, _ in registry] == [(CheckUpserted, 3)]


async def test_a_batch_is_decoded_when_it_is_read(tmp_path):
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    await log.start()
    try:
        check = str(uuid7())
        for _ in range(5):
            await log.produce(TOPIC_PINGS, encode(_ping(check, "success", utcnow())), key=check.encode())
        seen = []

        def decode_batch(records):
            seen.append(len(records))
            return Projector.decode(records)

        async with log.consumer([TOPIC_PINGS], group="g") as consumer:
            batches = Batcher(consumer, {}, max_records=3, max_wait_s=0.0, decode=decode_batch)
            stop = asyncio.Event()
            first = await batches.next(stop)
            second = await batches.next(stop)  # read ahead: the first one's result is still held
            assert seen == [3, 2]
            assert batches.decoded(list(first.records)) is None  # another list, even if equal: not its result
            got = batches.decoded(first.records)
            assert [o for _, o in got[0]] == [0, 1, 2]
            assert batches.decoded(first.records) is None  # taken once
            assert [o for _, o in batches.decoded(second.records)[0]] == [3, 4]
    finally:
        await log.close()


async def test_a_failing_table_fails_the_batch_after_the_other_inserts_ended(clickhouse, monkeypatch):
    """A batch's tables are inserted at once; one that fails fails the batch only once the others ended, so
    its retry never runs beside its first attempt; check_state (the offsets) is not written. Here the runs
    table, written by a view of the table the pings of a batch that ends runs go into: that insert fails after
    the pings are stored, and its retry writes the runs row although ClickHouse drops the pings block as a
    duplicate (each view's block has a token of its own)."""
    check = str(uuid7())
    t0 = utcnow()
    events = [_ping(check, "start", t0, rid=check), _ping(check, "success", t0 + timedelta(seconds=2), rid=check)]
    await clickhouse.run(lambda c: c.command("ALTER TABLE runs ADD CONSTRAINT refuse_all CHECK duration_s < 0"))
    projector = Projector(clickhouse, None)
    ended = []
    def watched(real):
        async def insert(table, *a, **kw):
            try:
                await real(table, *a, **kw)
            finally:
                ended.append(table)
        return insert

    monkeypatch.setattr(clickhouse, "insert_columns", watched(clickhouse.insert_columns))
    monkeypatch.setattr(clickhouse, "insert_select", watched(clickhouse.insert_select))
    monkeypatch.setattr(clickhouse, "insert_values", watched(clickhouse.insert_values))
    records = _records([encode(e) for e in events])
    with pytest.raises(Exception, match="runs"):
        await projector.process(records, "token-1")
    assert sorted(ended) == [service.PINGS_ENDING_RUNS]  # the batch ends a run: its pings go through the views
    assert await clickhouse.query("SELECT count() FROM pings") == [(2,)]
    assert await clickhouse.query("SELECT count() FROM check_state") == [(0,)]

    await clickhouse.run(lambda c: c.command("ALTER TABLE runs DROP CONSTRAINT refuse_all"))
    await projector.process(records, "token-1")  # the retry: the pings block is dropped as a duplicate
    assert await clickhouse.query("SELECT count() FROM pings") == [(2,)]
    assert await clickhouse.query("SELECT count(), sum(duration_s) FROM runs") == [(1, 2.0)]
    assert await clickhouse.query("SELECT n_pings FROM check_state FINAL") == [(2,)]
