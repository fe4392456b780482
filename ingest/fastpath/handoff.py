"""Handing a connection to aiohttp: the rest of it, from the first byte of the first request
the fast path does not answer, goes to aiohttp's own protocol.

The connection keeps the bytes read since the parser last stood between two requests and how
many requests were completed within them (``EdgeProtocol.chunks`` and ``.completed``). Where the
handed-off request starts is found by parsing those bytes again (``end_of_requests``). Once the
answers queued before it are written, ``transport.set_protocol`` gives the transport to a new
aiohttp ``RequestHandler`` (``EdgeRequestHandler``, handler.py, managed by the runner's
``web.Server``), which is told of the connection and fed the bytes kept, as if it had read them itself. Only public protocol methods
of the handler are called; that the handler then behaves as on a fresh connection (its idle timer
armed at ``connection_made``) is why aiohttp is pinned to one minor version in pyproject.toml.
"""

from __future__ import annotations

import httptools


class HandOff:
    """The handoff of an ``EdgeProtocol`` (protocol.py), whose state it uses."""

    def _hand_off(self) -> None:
        """The rest of this connection, from the first byte of the request that is not ours, is
        aiohttp's; it takes over once the answers queued before it are written."""
        data = b"".join(self.chunks)
        self.handoff = data[end_of_requests(data, self.completed):]
        self.chunks = []
        self.ping = None
        self._pause_reading()
        if not self.answers:
            self._finish_handoff()

    def _finish_handoff(self) -> None:
        transport, data = self.transport, self.handoff
        self.edge.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        self.edge.handed_off += 1
        # The client address's connection slot goes with the connection: the handler gives it back.
        handler = self.edge.handler(self.peer)
        self.admitted = False
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
        if self.read_paused:
            transport.resume_reading()


class _Counter:
    """Counts the requests a throwaway parser completes."""

    def __init__(self) -> None:
        self.completed = 0

    def on_message_complete(self) -> None:
        self.completed += 1


def _completed(data: memoryview) -> int:
    counter = _Counter()
    try:
        httptools.HttpRequestParser(counter).feed_data(data)
    except httptools.HttpParserError:
        pass  # what follows the complete requests is not ours to judge
    return counter.completed


def end_of_requests(data: bytes, n: int) -> int:
    """Offset in ``data`` just after its ``n``-th complete request (0 for none): the shortest prefix
    a parser completes ``n`` requests in, found by bisection (rare: a request for aiohttp behind
    pings in one read, or a long pipelined stream)."""
    if n == 0:
        return 0
    view = memoryview(data)
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if _completed(view[:mid]) >= n:
            hi = mid
        else:
            lo = mid + 1
    return lo
