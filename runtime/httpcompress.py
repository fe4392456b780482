"""HTTP compression on the SQL endpoint, as ClickHouse's HTTP interface does it.

- **Answers**: with ``enable_http_compression=1``, an answer is compressed in the first method of ClickHouse's
  order (zstd, br, lz4, gzip, deflate, xz, bz2) whose name appears anywhere in ``Accept-Encoding`` (ClickHouse
  matches names as substrings, and so does this), at ``http_zlib_compression_level`` (default 3; 1-22 for zstd,
  1-12 for lz4, 1-9 for the others), and named in ``Content-Encoding``. lz4 is the LZ4 frame format. Without the
  setting, or with no method named, the answer goes as it is. ClickHouse's snappy is not sent: a client that
  names only snappy gets the answer uncompressed, which HTTP allows.
- **Request bodies**: ``Content-Encoding`` gzip, deflate, br and zstd are decoded by aiohttp before the handler
  (``client_max_size`` bounds what they decode to); lz4, xz (or lzma), bz2 and zst are decoded here, bounded.
  A name ClickHouse does not know is refused, as ClickHouse refuses it; snappy is refused too.
"""

from __future__ import annotations

import bz2
import lzma
import zlib

import brotli
import lz4.frame

from .chcompress import zstd  # compression.zstd, or its backport before Python 3.14

DEFAULT_LEVEL = 3
ORDER = ("zstd", "br", "lz4", "gzip", "deflate", "xz", "bz2")  # ClickHouse's chooseHTTPCompressionMethod, less snappy
_LEVELS = {"zstd": (1, 22), "lz4": (1, 12)}  # the others 1-9, as ClickHouse's getCompressionLevelRange
DECODED_BY_AIOHTTP = frozenset({"gzip", "deflate", "br", "zstd"})
_NAMES = {"lzma": "xz", "zst": "zstd", "brotli": "br"}  # ClickHouse's other names of a method
KNOWN = frozenset({*ORDER, "snappy", *_NAMES})


class Refused(ValueError):
    """A request whose compression cannot be honoured: ``code`` and ``name`` are ClickHouse's."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name = code, name


def choose(accept_encoding: str) -> str | None:
    """The method an answer is sent in for ``Accept-Encoding`` (with ``enable_http_compression``), or None."""
    listed = accept_encoding.lower()
    return next((method for method in ORDER if method in listed), None)


def level(method: str, raw: str | None) -> int:
    """``http_zlib_compression_level`` for ``method``: ``Refused`` when it is not a level the method has."""
    if raw is None:
        return DEFAULT_LEVEL
    low, high = _LEVELS.get(method, (1, 9))
    try:
        value = int(raw)
    except ValueError:
        raise Refused(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", f"http_zlib_compression_level={raw!r} is not a number") from None
    if not low <= value <= high:
        raise Refused(36, "BAD_ARGUMENTS", f"http_zlib_compression_level={value}: {method} takes {low} to {high}")
    return value


def encode(method: str, data: bytes, at: int) -> bytes:
    """``data`` compressed in ``method`` (one of ``ORDER``) at level ``at``."""
    if method == "zstd":
        return zstd.compress(data, level=at)
    if method == "br":
        return brotli.compress(data, quality=at)
    if method == "lz4":
        return lz4.frame.compress(data, compression_level=at)
    if method == "gzip":
        packer = zlib.compressobj(at, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    if method == "deflate":
        return zlib.compress(data, at)
    if method == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=at)
    if method == "bz2":
        return bz2.compress(data, compresslevel=at)
    raise ValueError(f"no such method: {method}")


def decode(content_encoding: str, body: bytes, limit: int) -> bytes:
    """A request ``body`` sent with ``content_encoding``, decoded unless aiohttp already did; ``Refused`` for a
    method not known or not read here, for data that does not decode, and for more than ``limit`` bytes."""
    name = content_encoding.strip().lower()
    if name in ("", "none", "auto", "identity") or name in DECODED_BY_AIOHTTP:
        return body
    method = _NAMES.get(name, name)
    if method not in KNOWN or method == "snappy":
        raise Refused(48, "NOT_IMPLEMENTED", f"Unknown compression method '{content_encoding}' in Content-Encoding. "
                      "Only 'none', 'gzip', 'deflate', 'br', 'xz', 'zstd', 'lz4' and 'bz2' are read here")
    if method == "zstd":
        unpacker = zstd.ZstdDecompressor()
        errors: tuple = (zstd.ZstdError,)
    elif method == "lz4":
        unpacker, errors = lz4.frame.LZ4FrameDecompressor(), (RuntimeError,)
    elif method == "xz":
        unpacker, errors = lzma.LZMADecompressor(), (lzma.LZMAError,)
    else:
        unpacker, errors = bz2.BZ2Decompressor(), (OSError,)
    try:
        data = unpacker.decompress(body, max_length=limit + 1)
    except errors as exc:
        raise Refused(271, "CANNOT_DECOMPRESS", f"the {method} body does not decompress: {exc}") from None
    if len(data) > limit:
        raise Refused(229, "QUERY_IS_TOO_LARGE", f"the body decompresses to more than {limit} bytes")
    if not unpacker.eof:
        raise Refused(271, "CANNOT_DECOMPRESS", f"the {method} body is cut short")
    return data
