"""What the fast ping path knows of the wire: the URLs it takes, the limits it keeps, and the
answers it writes byte for byte as aiohttp writes them.

aiohttp's parser limits are repeated here so that a request beyond them is handed to aiohttp,
which answers it with its own 4xx; the others are this path's own limits on a connection.
"""

from __future__ import annotations

import re

from runtime.server_header import SERVER

# The URL shapes a ping route can take (segments of [-a-zA-Z0-9_], at most three) with an optional
# canonical rid; a path with anything else (percent-escapes, dots, empty segments) goes to aiohttp.
FAST_URL = re.compile(
    rb"/ping/([-a-zA-Z0-9_]+(?:/[-a-zA-Z0-9_]+){0,2})"
    rb"(?:\?rid=([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}))?\Z"
)
PING_PREFIX = b"/ping/"
# Headers whose request is aiohttp's to answer.
HANDED_OFF_HEADERS = {b"expect", b"content-encoding", b"upgrade"}

# aiohttp's parser limits (max_line_size, max_field_size, max_headers): beyond them it answers 4xx.
MAX_LINE = 8190
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024  # head bytes seen before headers complete; past this aiohttp answers its own 4xx

# This path's own limits.
MAX_WINDOW = 256 * 1024  # bytes kept for a handoff before the answered requests in them are dropped
MAX_QUEUED = 64  # unanswered pipelined pings on one connection before it stops being read
LINGER_S = 2.0  # longest a half-closed connection is kept for the client to read its answer

REASONS = {200: "OK", 400: "Bad Request", 408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


def response(status: int, text: str, headers: dict, date: str, close: bool, head: bool) -> bytes:
    """A plain-text answer with the headers, in the order, aiohttp's response gives it."""
    body = text.encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"Date: {date}",
        f"Server: {SERVER}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def header_text(value: bytes | None) -> str:
    """A header value as text, decoded leniently ("" when absent)."""
    if not value:
        return ""
    if value.isascii():
        return value.decode("ascii")
    return value.decode("utf-8", "replace")


class Ping:
    """A fast-path ping being read."""

    __slots__ = ("target", "rid", "method", "head", "keep_alive", "content_length", "body", "size", "scheme",
                 "addr", "user_agent", "key")
