"""A few rows inserted as a literal VALUES clause (``ClickHouse.insert_values``) are stored exactly as the Arrow
path stores them, under the same deduplication token rules."""

from __future__ import annotations

import math
import uuid
from http import HTTPStatus
from datetime import datetime, timedelta, timezone

import pytest

from runtime.clickhouse import arrow_type, sql_literal

COLUMNS = [
    ("id", "UUID"), ("name", "String"), ("raw", "String"), ("kind", "LowCardinality(String)"),
    ("maybe", "Nullable(String)"), ("at", "DateTime64(6, 'UTC')"), ("at_riga", "DateTime64(6, 'Europe/Riga')"),
    ("ratio", "Float64"), ("maybe_ratio", "Nullable(Float64)"), ("big", "UInt64"), ("signed", "Int64"),
    ("flag", "UInt8"), ("maybe_id", "Nullable(UUID)"),
]
NAMES = [name for name, _ in COLUMNS]
RIGA = timezone(timedelta(hours=2))


def _rows() -> list[tuple]:
    at = datetime(2026, 12, 1, 10, 48, 43, 123456, tzinfo=timezone.utc)
    return [
        (str(uuid.UUID(int=1)), "it's a \\ back\nslash\t\0 and ünïcödé ✓", b"\x00\xff'\\bytes\n", "up", None,
         at, at.astimezone(RIGA), 1.5, None, 2**64 - 1, -(2**63), 1, None),
        (str(uuid.UUID(int=2)), "", b"", "down", "x", at.replace(microsecond=0), at.replace(microsecond=1),
         0.1 + 0.2, 1e-300, 0, 0, 0, str(uuid.UUID(int=3))),
        (str(uuid.UUID(int=4)), "'", b"'", "", "'; DROP TABLE t; --", at + timedelta(days=400), at,
         float("inf"), float("-inf"), 1, -1, 1, None),
    ]


async def _table(clickhouse, name: str) -> None:
    columns = ", ".join(f"`{n}` {t}" for n, t in COLUMNS)
    await clickhouse.run(lambda c: c.command(
        f"CREATE TABLE {name} ({columns}) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"))


async def _stored(clickhouse, table: str) -> list[tuple]:
    return await clickhouse.query(
        "SELECT toString(id), name, hex(raw), kind, maybe, toUnixTimestamp64Micro(at), toUnixTimestamp64Micro(at_riga), "
        f"ratio, maybe_ratio, big, signed, flag, toString(maybe_id) FROM {table} ORDER BY id")


async def test_values_store_what_arrow_stores(clickhouse):
    await _table(clickhouse, "by_arrow")
    await _table(clickhouse, "by_values")
    rows = _rows()
    types = [arrow_type(t) for _, t in COLUMNS]
    await clickhouse.insert_columns("by_arrow", NAMES, types, lambda: [list(c) for c in zip(*rows)])
    await clickhouse.insert_values("by_values", NAMES, rows)
    by_values = await _stored(clickhouse, "by_values")
    assert by_values == await _stored(clickhouse, "by_arrow")
    assert by_values[0][1] == rows[0][1] and by_values[0][2] == rows[0][2].hex().upper()
    at = rows[0][5]
    assert by_values[0][5] == by_values[0][6] == int(at.timestamp()) * 1_000_000 + at.microsecond
    assert by_values[2][7] == math.inf and by_values[2][8] == -math.inf


async def test_a_repeated_token_is_dropped_as_one_block(clickhouse):
    await _table(clickhouse, "t")
    rows = _rows()
    for token in ("batch-1", "batch-1", "batch-2"):
        await clickhouse.insert_values("t", NAMES, rows, {"insert_deduplication_token": token})
    [(count, parts)] = await clickhouse.query("SELECT count(), uniqExact(_part) FROM t")
    assert (count, parts) == (2 * len(rows), 2)


async def test_an_insert_the_table_refuses_raises_and_stores_nothing(clickhouse):
    await _table(clickhouse, "t")
    with pytest.raises(Exception, match="insert into t"):
        await clickhouse.insert_values("t", ["id", "big"], [(str(uuid.UUID(int=1)), 1), ("not a uuid", 2)])
    assert await clickhouse.query("SELECT count() FROM t") == [(0,)]


def test_literals():
    assert sql_literal(None) == "NULL"
    assert sql_literal(True) == "1"
    assert sql_literal("a'b\\c\nd") == "'a\\'b\\\\c\\nd'"
    assert sql_literal(b"a'\xff") == "'a\\x27\\xff'"
    assert sql_literal(datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))) == "'2026-01-01 02:00:00+02:00'"
    assert sql_literal(datetime(2026, 1, 1, 2, 0, 0, 7)) == "'2026-01-01 02:00:00.000007'"
    assert sql_literal(uuid.UUID(int=5)) == f"'{uuid.UUID(int=5)}'"
    assert sql_literal([1, "x", (2.5, None)]) == "[1,'x',(2.5,NULL)]"
    assert sql_literal(float("nan")) == "nan"
    assert sql_literal(bytearray(b"\n")) == "'\\x0a'"
    assert sql_literal(HTTPStatus.OK) == "200"
    with pytest.raises(TypeError):
        sql_literal(object())


async def test_bulk_inserts_are_counted_and_memory_is_released_between_them(clickhouse):
    import pyarrow as pa

    await _table(clickhouse, "t")
    rows = _rows()
    types = [arrow_type(t) for _, t in COLUMNS]
    before = clickhouse.bulk_inserts
    await clickhouse.insert_values("t", NAMES, rows)  # a few rows: not a bulk insert
    await clickhouse.insert_columns("t", NAMES, types, lambda: [list(c) for c in zip(*rows)])
    assert clickhouse.bulk_inserts == before + 1
    pa.jemalloc_memory_pool()  # this pyarrow has jemalloc, so runtime.clickhouse made it Arrow's default pool:
    assert pa.default_memory_pool().backend_name == "jemalloc"  # its freed pages can be purged
    await clickhouse.run(clickhouse.release_memory)  # embedded: chdb's jemalloc purged; the C heap trimmed
    await clickhouse.insert_columns("t", NAMES, types, lambda: [list(c) for c in zip(*rows)])
    assert await clickhouse.query("SELECT count() FROM t") == [(3 * len(rows),)]


async def test_uuid_ids_are_sent_as_the_arrays_text_and_anything_else_escaped_as_before(clickhouse):
    """An array of UUIDs' text is written in one join (no escaping needed: hex digits and dashes); an array with any
    other string, or of other values, is left to clickhouse-connect's escaping: a quote cannot end the literal."""
    from runtime.clickhouse import ArrayText, uuid_array

    ids = [str(uuid.UUID(int=i)) for i in range(3)] + ["0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0"]
    bound = uuid_array(ids)
    assert isinstance(bound, ArrayText) and list(bound) == ids and len(bound) == 4
    assert str(bound) == "['" + "','".join(ids) + "']"
    sneaky = ids[:1] + ["00000000-0000-0000-0000-000000000000') OR 1 = 1 --"]
    assert uuid_array(sneaky) is sneaky and uuid_array([]) == []
    assert uuid_array([uuid.UUID(int=1)]) == [uuid.UUID(int=1)]
    query = "SELECT toString(id) FROM (SELECT arrayJoin({ids:Array(UUID)}) AS id) ORDER BY id"
    assert [r[0] for r in await clickhouse.query(query, {"ids": bound})] == [i.lower() for i in ids]


async def test_ids_are_bound_a_chunk_at_a_time_and_the_rows_of_every_chunk_come_back(clickhouse, monkeypatch):
    # ClickHouse caps one parameter's value (http_max_field_value_size, 128 KiB): 10,000 check ids, the
    # most one project has, would pass it; rows_by_ids binds IDS_PER_QUERY of them per query.
    from runtime import clickhouse as module

    assert module.id_chunks(range(5)) == [[0, 1, 2, 3, 4]] and module.id_chunks([]) == []
    assert len(str([str(uuid.uuid4()) for _ in range(module.IDS_PER_QUERY)]).encode()) < 128 * 1024
    monkeypatch.setattr(module, "IDS_PER_QUERY", 3)
    ids = [str(uuid.UUID(int=i)) for i in range(10)]
    rows = await clickhouse.rows_by_ids(
        "SELECT toString(id) AS id, {tag:String} AS tag FROM (SELECT arrayJoin({ids:Array(UUID)}) AS id)",
        ids + ids[:2], {"tag": "t"})
    assert sorted(r["id"] for r in rows) == sorted(ids + ids[:2]) and {r["tag"] for r in rows} == {"t"}
    assert await clickhouse.rows_by_ids("SELECT 1 AS one WHERE 0 IN {ids:Array(UInt8)}", []) == []
