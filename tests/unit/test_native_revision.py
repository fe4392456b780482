"""Native blocks laid out for a client's protocol revision (runtime/native.py). The readers that are not ours
are clickhouse-go (tests/e2e/test_sql_go.py, revision 54460-ish) and clickhouse-connect (revision 54405, the
tests that read the SQL endpoint)."""

from __future__ import annotations

import pytest

from runtime import native

TYPES = """SELECT number AS n, toString(number) AS s, repeat('é', number % 200) AS long,
    toUUID('00000000-0000-0000-0000-000000000001') AS u, [number, number + 1] AS arr,
    if(number % 2 = 0, NULL, number) AS nul, toLowCardinality(toString(number % 3)) AS lc,
    toLowCardinality(if(number % 2 = 0, NULL, toString(number))) AS lcn, tuple(number, 'x') AS t,
    map('a', number) AS m, toDateTime64('2026-12-02 10:00:00', 6, 'UTC') AS dt, toDecimal64(number, 3) AS d,
    CAST('a' AS Enum8('a' = 1, 'b' = 2)) AS e, toFixedString('ab', 2) AS fs, [[1, 2], [3]] AS nested,
    NULL AS nothing, toIPv6('::1') AS ip6, CAST((1, 'a') AS Tuple(a UInt8, b String)) AS named,
    toDate('2026-12-02') AS day, 1.5::Float32 AS f
    FROM numbers({rows})"""


async def _native(clickhouse, sql: str) -> bytes:
    """The engine's Native answer (revision 0), on the suite's engine: chdb takes one data path a process."""
    return bytes(await clickhouse.run(lambda client: client.raw_query(sql, fmt="Native")))


def _blocks(data: bytes) -> int:
    return native.for_revision(data, 1).count(native.BLOCK_INFO)


@pytest.mark.parametrize("rows", [0, 1, 5, 200_000])
async def test_each_block_gets_its_info_and_each_column_its_serialization_byte(clickhouse, rows):
    data = await _native(clickhouse, TYPES.format(rows=rows))
    columns = 20
    blocks = _blocks(data)  # the engine writes no block for no rows
    assert (blocks == 0) == (rows == 0)
    assert native.for_revision(data, 0) == data
    assert len(native.for_revision(data, 54405)) == len(data) + 8 * blocks  # BlockInfo only
    assert len(native.for_revision(data, 54460)) == len(data) + (8 + columns) * blocks
    assert rows < 100_000 or blocks > 1


async def test_the_type_names_parse_and_others_are_named_as_unsupported(clickhouse):
    assert native.parse_type("Map(String, Array(Nullable(UInt8)))") == (
        "Map", [("String", []), ("Array", [("Nullable", [("UInt8", [])])])])
    assert native.parse_type("Tuple(a UInt8, `b c` String)") == ("Tuple", [("UInt8", []), ("String", [])])
    assert native.parse_type("SimpleAggregateFunction(sum, UInt64)") == ("SimpleAggregateFunction", [("UInt64", [])])
    assert native.parse_type("Enum8('a)' = 1, 'b\\\\'' = 2)") == ("Enum8", ["'a)' = 1, 'b\\\\'' = 2"])
    data = await _native(clickhouse, "SELECT 1::Variant(String, UInt64) AS v")
    with pytest.raises(native.Unsupported, match="Variant"):
        native.for_revision(data, 54460)
    with pytest.raises(ValueError, match="cut short"):
        native.for_revision((await _native(clickhouse, "SELECT 'abc' AS s"))[:-1], 54460)


async def test_blocks_are_cut_one_per_data_packet_and_name_their_columns(clickhouse):
    # What the native protocol sends (runtime/nativeserver.py): a block per Data packet, and a header of the columns.
    data = await _native(clickhouse, TYPES.format(rows=200_000))
    blocks, _ = native.blocks_for_revision(data, 54460)
    assert len(blocks) > 1 and b"".join(blocks) == native.for_revision(data, 54460)
    assert all(block.startswith(native.BLOCK_INFO) for block in blocks)
    for revision in (54405, 54460):
        _, columns = native.blocks_for_revision(data, revision)
        assert len(columns) == 20 and columns[0] == ("n", "UInt64") and columns[6] == ("lc", "LowCardinality(String)")


def test_a_native_client_s_quoted_parameter_is_the_text_it_quotes():
    from runtime.sqlserver import unquote_field

    assert unquote_field("'it\\'s\\tme\\\\'") == "it's\tme\\"
    assert unquote_field("'\\0\\n'") == "\0\n"
    assert unquote_field("42") == "42" and unquote_field("'") == "'"
