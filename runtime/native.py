"""ClickHouse's Native format as a client of a given protocol revision reads it over HTTP.

A client that sends ``client_protocol_version`` (clickhouse-go, so Grafana's ClickHouse data source, sends
its TCP protocol's) reads Native blocks laid out for that revision: each block opens with its BlockInfo
(revision above 0), and each column's type is followed by a byte saying whether its serialization is custom
(revision 54454 and above). The embedded engine writes the revision-0 layout, so ``for_revision`` walks
its blocks, column by column, and adds those bytes: the columns' data are the same in both.

Walking a column's data means knowing its type's layout, for the types queries give (numbers, dates,
UUIDs, IPs, enums, decimals, strings, and Nullable, Array, Tuple, Map, LowCardinality of them). Another
type raises ``Unsupported``, which names it.
"""

from __future__ import annotations

import re

CUSTOM_SERIALIZATION = 54454  # DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION
# BlockInfo: field 1, is_overflows = false; field 2, bucket_num = -1; field 0, the end.
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    **dict.fromkeys(("UInt8", "Int8", "Bool", "Enum8"), 1),
    **dict.fromkeys(("UInt16", "Int16", "Date", "Enum16", "BFloat16"), 2),
    **dict.fromkeys(("UInt32", "Int32", "Float32", "Date32", "DateTime", "IPv4", "Decimal32", "Time"), 4),
    **dict.fromkeys(("UInt64", "Int64", "Float64", "DateTime64", "Decimal64", "Time64"), 8),
    **dict.fromkeys(("UInt128", "Int128", "UUID", "IPv6", "Decimal128"), 16),
    **dict.fromkeys(("UInt256", "Int256", "Decimal256"), 32),
}
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
_ELEMENT_NAME = re.compile(r"\s*(?:`[^`]*`|[A-Za-z_][A-Za-z0-9_]*)\s+(?=[A-Z])")


class Unsupported(ValueError):
    """A column of a type whose Native layout this module does not walk."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def skip(self, n: int) -> None:
        self.at += n
        if self.at > len(self.data):
            raise ValueError("a Native block is cut short")

    def uint64(self) -> int:
        self.skip(8)
        return int.from_bytes(self.data[self.at - 8:self.at], "little")

    def string(self) -> str:
        n = self.varint()
        self.skip(n)
        return self.data[self.at - n:self.at].decode()


def parse_type(text: str) -> tuple[str, list]:
    """``"Array(Nullable(String))"`` as ``("Array", [("Nullable", [("String", [])])])``; the arguments of the
    types that are not walked into (sizes, time zones, enum values) are kept as strings."""
    node, end = _parse(text, 0)
    if text[end:].strip():
        raise Unsupported(f"type {text!r}")
    return node


def _parse(text: str, at: int) -> tuple[tuple[str, list], int]:
    match = _NAME.match(text, at)
    if not match:
        raise Unsupported(f"type {text!r}")
    name, at = match.group(1), match.end()
    if at >= len(text) or text[at] != "(":
        return (name, []), at
    if name not in ("Nullable", "Array", "Tuple", "Map", "LowCardinality", "SimpleAggregateFunction"):
        depth, start = 0, at  # arguments kept as text: FixedString(16), DateTime64(6, 'UTC'), Enum8('a' = 1)
        while True:
            char = text[at]
            if char == "'":
                at = text.index("'", at + 1)
                while text[at - 1] == "\\":
                    at = text.index("'", at + 1)
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    return (name, [text[start + 1:at]]), at + 1
            at += 1
    args = []
    at += 1
    while True:
        if name == "Tuple" and (element := _ELEMENT_NAME.match(text, at)):
            at = element.end()  # a named element: Tuple(a UInt8, b String)
        if name == "SimpleAggregateFunction" and not args:
            at = text.index(",", at) + 1  # its function, then the type its values have
            args.append(None)
        node, at = _parse(text, at)
        args.append(node)
        while at < len(text) and text[at] == " ":
            at += 1
        if text[at] == ",":
            at += 1
        elif text[at] == ")":
            return (name, [a for a in args if a is not None]), at + 1
        else:
            raise Unsupported(f"type {text!r}")


def _skip(reader: _Reader, node: tuple[str, list], rows: int) -> None:
    """Past ``rows`` values of a column of type ``node``."""
    name, args = node
    if name in _FIXED:
        reader.skip(rows * _FIXED[name])
    elif name == "Decimal":
        precision = int(args[0].split(",")[0])
        reader.skip(rows * (4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32))
    elif name == "FixedString":
        reader.skip(rows * int(args[0]))
    elif name == "String":
        data, at = reader.data, reader.at
        for _ in range(rows):  # a length (LEB128: one byte below 128), then the bytes
            length = data[at]
            at += 1
            if length >= 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    byte = data[at]
                    at += 1
                    length |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
            at += length
        reader.at = at
        reader.skip(0)
    elif name == "Nothing":
        reader.skip(rows)
    elif name == "Nullable":
        reader.skip(rows)  # the null map
        _skip(reader, args[0], rows)
    elif name in ("Array", "Map"):
        total = 0
        if rows:  # offsets, one UInt64 a row: the last is the count of nested values
            reader.skip((rows - 1) * 8)
            total = reader.uint64()
        for element in (args if name == "Map" else args[:1]):
            _skip(reader, element, total)
    elif name == "Tuple":
        for element in args:
            _skip(reader, element, rows)
    elif name == "SimpleAggregateFunction":
        _skip(reader, args[0], rows)
    elif name == "LowCardinality":
        _skip_low_cardinality(reader, args[0], rows)
    else:
        raise Unsupported(f"type {name}")


def _skip_low_cardinality(reader: _Reader, inner: tuple[str, list], rows: int) -> None:
    # The state prefix (the key version, a UInt64) comes once, before the block's values; then the index
    # type (its low byte: the width of an index, 1 << n bytes), the dictionary (its count, then its values
    # as the inner type without Nullable), and the indexes (their count, then theirs).
    if rows == 0:
        return
    reader.uint64()
    index_type = reader.uint64()
    if index_type & (1 << 8):  # a global dictionary, written apart: not what a single Native block holds
        raise Unsupported("LowCardinality with a shared dictionary")
    if index_type & (1 << 9):  # additional keys: the block's own dictionary
        _skip(reader, inner[1][0] if inner[0] == "Nullable" else inner, reader.uint64())
    reader.skip(reader.uint64() * (1 << (index_type & 0xFF)))


def for_revision(data: bytes, revision: int) -> bytes:
    """Revision-0 Native ``data`` laid out for a client of ``revision``."""
    if revision <= 0:
        return data
    return b"".join(blocks_for_revision(data, revision)[0])


def blocks_for_revision(data: bytes, revision: int) -> tuple[list[bytes], list[tuple[str, str]]]:
    """Revision-0 Native ``data`` as its blocks, each laid out for a client of ``revision`` (above 0), as the
    native protocol sends them one per Data packet; and the (name, type) of each column, read on the way."""
    reader, blocks, columns, view = _Reader(data), [], [], memoryview(data)  # slices of the view: no copy before the join
    try:
        while reader.at < len(data):
            out = [BLOCK_INFO]
            start = reader.at
            count, rows = reader.varint(), reader.varint()
            out.append(view[start:reader.at])
            for _ in range(count):
                start = reader.at
                name, kind = reader.string(), reader.string()
                if not blocks:
                    columns.append((name, kind))
                out.append(view[start:reader.at])
                if revision >= CUSTOM_SERIALIZATION:
                    out.append(b"\x00")
                start = reader.at
                _skip(reader, parse_type(kind), rows)
                out.append(view[start:reader.at])
            blocks.append(b"".join(out))
    except IndexError:
        raise ValueError("a Native block is cut short") from None
    return blocks, columns
