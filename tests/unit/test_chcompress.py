"""ClickHouse's compressed blocks (runtime/chcompress.py): what the SQL endpoint sends for ``compress=1`` and
reads for ``decompress=1``. The reader that is not ours is the JDBC driver (tests/e2e/test_sql_jdbc.py)."""

from __future__ import annotations

import os

import pytest

from runtime import chcompress


def test_the_checksum_is_clickhouse_s_cityhash128_low_half_first():
    # CityHash128 v1.0.2 of "abc": low 0x900ff195577748fe, high 0x13a9176355b20d7e (ClickHouse's own tests).
    assert chcompress._checksum(b"abc") == bytes.fromhex("fe48775795f10f90") + bytes.fromhex("7e0db2556317a913")


@pytest.mark.parametrize("size", [0, 1, 1000, chcompress.BLOCK_BYTES, chcompress.BLOCK_BYTES * 2 + 7])
def test_blocks_hold_at_most_a_mebibyte_and_read_back_whole(size):
    data = (os.urandom(64) * (size // 64 + 1))[:size]
    packed = chcompress.compress(data)
    assert chcompress.decompress(packed, limit=size) == data
    at, blocks = 0, 0
    while at < len(packed):
        method, stored, raw = chcompress.HEADER.unpack_from(packed, at + 16)
        assert method == chcompress.LZ4 and 0 < raw <= chcompress.BLOCK_BYTES
        at += 16 + stored
        blocks += 1
    assert blocks == -(-size // chcompress.BLOCK_BYTES)


def _block(method: int, payload: bytes, raw: int | None = None) -> bytes:
    block = chcompress.HEADER.pack(method, chcompress.HEADER.size + len(payload), len(payload) if raw is None else raw)
    return chcompress._checksum(block + payload) + block + payload


def test_it_reads_uncompressed_and_zstd_blocks_and_refuses_what_it_cannot_read():
    zstd_block = _block(chcompress.ZSTD, chcompress.zstd.compress(b" + 2", level=1), raw=4)  # clickhouse-go's ZSTD
    assert chcompress.decompress(_block(chcompress.NONE, b"SELECT 1") + chcompress.compress(b" + 1") + zstd_block,
                                 100) == b"SELECT 1 + 1 + 2"
    packed = bytearray(chcompress.compress(b"SELECT 1"))
    packed[-1] ^= 1
    cases = {
        40: bytes(packed),  # CHECKSUM_DOESNT_MATCH
        89: _block(0x91, b"multiple"),  # UNKNOWN_COMPRESSION_METHOD (ClickHouse's codec chains)
        271: chcompress.compress(b"SELECT 1")[:-2],  # CANNOT_DECOMPRESS: cut short
        229: chcompress.compress(b"x" * 101),  # QUERY_IS_TOO_LARGE: past the limit
    }
    for code, body in cases.items():
        with pytest.raises(chcompress.BadBlock) as caught:
            chcompress.decompress(body, limit=100)
        assert caught.value.code == code
    for wrong_size in (_block(chcompress.NONE, b"abc", raw=4), _block(chcompress.ZSTD, chcompress.zstd.compress(b"abcd"), raw=3),
                       _block(chcompress.ZSTD, b"not a zstd frame", raw=4)):
        with pytest.raises(chcompress.BadBlock) as caught:
            chcompress.decompress(wrong_size, limit=100)
        assert caught.value.code == 271
