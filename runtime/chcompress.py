"""ClickHouse's own compressed blocks, as its HTTP interface sends an answer asked for with ``compress=1``
and reads a request body sent with ``decompress=1`` (the Java client and JDBC driver, so DBeaver, ask for it
by default).

A block is 16 bytes of checksum, then a 9-byte header (the method: 0x82 for LZ4, 0x90 for ZSTD, 0x02 for none; the block's
size with this header, and the data's size uncompressed, both UInt32 little-endian), then the data. The
checksum is CityHash128, version 1.0.2 as ClickHouse keeps it, of the header and the data, written as its
low then its high 64 bits, little-endian. Answers are cut in blocks of at most 1 MiB of data, as
ClickHouse's ``max_compress_block_size``, and sent in LZ4, as ClickHouse's HTTP interface sends them; a body is
read in LZ4, ZSTD (a zstd frame) or uncompressed blocks.
"""

from __future__ import annotations

import struct

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

try:
    from compression import zstd  # Python 3.14
except ImportError:
    from backports import zstd

LZ4 = 0x82
ZSTD = 0x90
NONE = 0x02
HEADER = struct.Struct("<BII")
BLOCK_BYTES = 1 << 20


class BadBlock(ValueError):
    """A compressed request body that cannot be read: ``code`` and ``name`` are ClickHouse's."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name = code, name


def _checksum(block: bytes | memoryview) -> bytes:
    h = CityHash128(bytes(block))  # the package gives low << 64 | high
    return (h >> 64).to_bytes(8, "little") + (h & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def compress(data: bytes) -> bytes:
    """``data`` as LZ4 blocks (none for no data)."""
    out = []
    for start in range(0, len(data), BLOCK_BYTES):
        chunk = data[start:start + BLOCK_BYTES]
        packed = lz4.block.compress(chunk, store_size=False)
        block = HEADER.pack(LZ4, HEADER.size + len(packed), len(chunk)) + packed
        out += (_checksum(block), block)
    return b"".join(out)


def decompress(data: bytes, limit: int) -> bytes:
    """The data of LZ4, ZSTD or uncompressed blocks; ``BadBlock`` for a truncated block, a wrong checksum, another
    method, data that does not decompress to its stated size, or more than ``limit`` bytes in all."""
    view, out, at, total = memoryview(data), [], 0, 0
    while at < len(view):
        if len(view) - at < 16 + HEADER.size:
            raise BadBlock(271, "CANNOT_DECOMPRESS", "a compressed block is cut short")
        method, size, raw = HEADER.unpack_from(view, at + 16)
        block = view[at + 16:at + 16 + size]
        if size < HEADER.size or len(block) != size:
            raise BadBlock(271, "CANNOT_DECOMPRESS", "a compressed block is cut short")
        total += raw
        if total > limit:
            raise BadBlock(229, "QUERY_IS_TOO_LARGE", f"the body decompresses to more than {limit} bytes")
        if _checksum(block) != view[at:at + 16]:
            raise BadBlock(40, "CHECKSUM_DOESNT_MATCH", "Checksum doesn't match: corrupted data")
        payload = block[HEADER.size:]
        if method == LZ4:
            try:
                payload = lz4.block.decompress(payload, uncompressed_size=raw)
            except lz4.block.LZ4BlockError as exc:
                raise BadBlock(271, "CANNOT_DECOMPRESS", f"LZ4 block: {exc}") from None
        elif method == ZSTD:
            try:
                payload = zstd.ZstdDecompressor().decompress(payload, max_length=raw + 1)
            except zstd.ZstdError as exc:
                raise BadBlock(271, "CANNOT_DECOMPRESS", f"ZSTD block: {exc}") from None
        elif method != NONE:
            raise BadBlock(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method: {method:#x} (LZ4, ZSTD and none are read)")
        if len(payload) != raw:
            raise BadBlock(271, "CANNOT_DECOMPRESS", "a block's data is not of its stated size")
        out.append(bytes(payload))
        at += 16 + size
    return b"".join(out)
