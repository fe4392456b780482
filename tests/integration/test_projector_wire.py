"""The pings rows made by ClickHouse from the records (projector/wire.py), and the runs rows made from them
(the views of pings_ending_runs), on real chdb: every column as the events have it, the same as the rows built
in Python from fully decoded events and sent as Arrow columns (the reference), on tricky pings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from projector import service, wire
from projector.fold import COLUMNS, fold
from projector.service import Columns, Projector, ping_source
from runtime.clickhouse import arrow_type
from runtime.eventlog.base import Record
from schemas.events import TOPIC_PINGS, PingEvent, decode, encode, uuid7

PROJECT = "019ab7ef-0000-7000-8000-000000000001"


def _records(values: list[bytes]) -> list[Record]:
    return [Record(TOPIC_PINGS, 0, i, None, v, 0) for i, v in enumerate(values)]


def _tricky() -> list[PingEvent]:
    a, b, c = (str(uuid7()) for _ in range(3))
    rid = str(uuid7())
    whole = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # .000000: RFC 3339 without a fraction
    other_zone = timezone(timedelta(hours=5, minutes=30))

    def ping(check, kind, at, **kw):
        return PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind=kind, received_at=at, **kw)

    return [
        ping(a, "start", whole, rid=rid, method="POST", scheme="https", remote_addr="2001:db8::1",
             user_agent='curl/8 "quoted" \\ back\tslash \u00e9\u20ac\U0001f600', body="h\u00e9llo \u2603\n".encode()),
        ping(a, "success", whole + timedelta(seconds=2, microseconds=1), rid=rid, exit_status=0,
             body=bytes(range(256)), body_size=256, remote_addr="::ffff:10.0.0.1"),
        ping(a, "fail", whole + timedelta(hours=1), exit_status=255, body=b"\x00", body_size=1, source="checkin"),
        ping(b, "start", whole.astimezone(other_zone), user_agent="", remote_addr=""),
        ping(b, "log", whole + timedelta(microseconds=999_999), body=b"\xff\xfe not utf-8", body_size=13),
        ping(b, "ign", whole + timedelta(seconds=3)),
        ping(b, "success", whole + timedelta(seconds=4, microseconds=500_000), exit_status=None),
        ping(c, "fail", whole + timedelta(days=40), exit_status=7, method="HEAD", user_agent="\x01\x1f control"),
        ping(c, "start", whole + timedelta(days=40, seconds=1), rid=None),
        ping(c, "success", whole + timedelta(days=40, hours=71, microseconds=3), rid=None),
    ]


async def _reference(clickhouse, table: str, rows: list[tuple]) -> None:
    """``rows`` into ``<table>_reference``, a copy of ``table``, as Arrow columns of the declared types."""
    await clickhouse.run(lambda c: c.command(f"CREATE TABLE {table}_reference AS {table}"))
    declared = dict(await clickhouse.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        {"t": table}))
    names = COLUMNS[table]
    await clickhouse.insert_columns(f"{table}_reference", names, [arrow_type(declared[c]) for c in names],
                                    lambda: [list(col) for col in zip(*rows)])


async def _same(clickhouse, table: str, order: str) -> list[tuple]:
    columns = ", ".join(COLUMNS[table])
    got = await clickhouse.query(f"SELECT {columns} FROM {table} ORDER BY {order}")
    want = await clickhouse.query(f"SELECT {columns} FROM {table}_reference ORDER BY {order}")
    assert got == want
    return got


@pytest.fixture(params=["select", "values"])
def path(request, monkeypatch) -> str:
    """How the projector sends a batch's pings and runs: the records, whose rows ClickHouse makes
    (``wire.PINGS_SELECT``), or, for a batch of a few pings, rows made in Python as a VALUES clause."""
    if request.param == "select":
        monkeypatch.setattr(service, "SMALL_INSERT_ROWS", 0)
    return request.param


async def test_it_stores_every_column_as_the_python_reference_does(clickhouse, path, monkeypatch):
    events = _tricky()
    records = _records([encode(e) for e in events])
    selected = []
    insert_select = clickhouse.insert_select

    async def spied(table, *args, **kwargs):
        selected.append(table)
        return await insert_select(table, *args, **kwargs)

    monkeypatch.setattr(clickhouse, "insert_select", spied)
    await Projector(clickhouse, None).process(records, "token-1")
    # The runs rows are made from the pings rows, by the views of the table a batch that ends runs goes into.
    assert sorted(selected) == ([] if path == "values" else [service.PINGS_ENDING_RUNS])

    reference = fold({}, [(decode(r.value), r.offset) for r in records])  # the full events, in Python
    await _reference(clickhouse, "pings", reference.pings)
    await _reference(clickhouse, "runs", reference.runs)

    pings = await _same(clickhouse, "pings", "event_id")
    assert len(pings) == len(events)
    runs = await _same(clickhouse, "runs", "event_id")
    assert len(runs) == 3  # a's start-success (rid), b's start-success (no rid), c's start-success (no rid)
    got = await clickhouse.query("SELECT toString(event_id), hex(body), body_size, remote_addr, user_agent, "
                                 "toUnixTimestamp64Micro(received_at), exit_status, kind, source FROM pings")
    assert sorted(got) == sorted(  # and as the events have them
        (e.event_id, e.body.hex().upper(), e.body_size, e.remote_addr, e.user_agent,
         round(e.received_at.timestamp() * 1_000_000), e.exit_status, e.kind, e.source) for e in events)


async def test_a_ping_record_without_its_optional_fields_takes_the_contracts_defaults(clickhouse, path):
    check = str(uuid7())
    bare = {"type": "ping", "event_id": uuid7(), "check_id": check, "project_id": PROJECT, "kind": "success",
            "received_at": "2026-03-01T12:00:00.5+00:00"}
    value = msgspec.json.encode(bare)
    await Projector(clickhouse, None).process(_records([value]), "token-1")
    [row] = await clickhouse.query(
        "SELECT method, scheme, remote_addr, user_agent, body, body_size, source, exit_status, rid, "
        "toUnixTimestamp64Micro(received_at) FROM pings")
    full = decode(value)
    assert row == (full.method, full.scheme, full.remote_addr, full.user_agent, full.body.decode(), full.body_size,
                   full.source, None, None, 1772366400_500000)


async def test_a_body_that_is_not_base64_is_stored_empty_rather_than_stopping_the_projector(clickhouse, path):
    check = str(uuid7())
    value = encode(PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind="success",
                             received_at=datetime(2026, 3, 1, tzinfo=timezone.utc)))
    broken = value.replace(b'"body":""', b'"body":"not base64!"')
    assert broken != value
    await Projector(clickhouse, None).process(_records([broken]), "token-1")
    assert await clickhouse.query("SELECT body, n FROM pings") == [("", 1)]


async def test_a_pings_block_inserted_twice_under_its_token_is_stored_once(clickhouse):
    events = _tricky()
    records = _records([encode(e) for e in events])
    projector = Projector(clickhouse, None)
    prepared = await projector.prepare(records)
    rows = prepared.rows
    source = ping_source(rows.ping_index, prepared.sources, rows)
    for _ in range(2):  # a crash after this insert and before check_state: the replay sends it again
        await projector.insert("pings", Columns(source, len(rows.ping_index)), "token:pings", service.PINGS_ENDING_RUNS)
    assert await clickhouse.query("SELECT count() FROM pings") == [(len(events),)]
    assert await clickhouse.query("SELECT count() FROM runs") == [(3,)]  # made by the view, once


async def test_a_batch_that_ends_no_run_goes_into_pings_itself(clickhouse, path, monkeypatch):
    """No view's pipeline for it (``up``'s small batches of pings without starts); one that ends runs goes
    through ``pings_ending_runs``, and both land in ``pings`` alike."""
    targets = []
    for name in ("insert_select", "insert_values"):
        real = getattr(clickhouse, name)

        async def spied(table, *args, real=real, **kwargs):
            targets.append(table)
            return await real(table, *args, **kwargs)

        monkeypatch.setattr(clickhouse, name, spied)
    check = str(uuid7())
    at = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    plain = [PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind=kind,
                       received_at=at + timedelta(seconds=i)) for i, kind in enumerate(["success", "log", "start"])]
    ending = [PingEvent(event_id=uuid7(), check_id=check, project_id=PROJECT, kind="success",
                        received_at=at + timedelta(seconds=9))]
    projector = Projector(clickhouse, None)
    await projector.process(_records([encode(e) for e in plain]), "token-1")
    assert [t for t in targets if t.startswith("pings")] == ["pings"]
    records = [r._replace(offset=r.offset + len(plain)) for r in _records([encode(e) for e in ending])]
    await projector.process(records, "token-2")
    assert [t for t in targets if t.startswith("pings")] == ["pings", service.PINGS_ENDING_RUNS]
    assert await clickhouse.query("SELECT count(), countIf(start_event_id IS NOT NULL) FROM pings") == [(4, 1)]
    assert await clickhouse.query("SELECT toString(start_event_id), duration_s FROM runs") == [(plain[2].event_id, 7.0)]
    assert await clickhouse.query("SELECT countMerge(runs) FROM durations_daily") == [(1,)]


def test_the_light_decoder_reads_what_the_fold_needs_as_the_contract_does():
    for event in _tricky():
        value = encode(event)
        facts = wire.decode(value)
        assert type(facts) is wire.PingFacts
        assert {f: getattr(facts, f) for f in facts.__struct_fields__} == \
            {f: getattr(event, f) for f in facts.__struct_fields__}
    assert wire.decode(b'{"type": "from_the_future", "event_id": "x"}') is None
