"""One listening socket's fast path (``FastPings``): the protocol factory its server calls for
each connection, and shutdown of those connections."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from runtime import metrics

from .. import pings
from ..keys import CONFIG, EVENT_LOG, LIMITERS, REGISTRY
from .protocol import EdgeProtocol
from .wire import response


class FastPings:
    """What the connections of one listening socket share: the app's state, the aiohttp server
    that takes over the connections it hands off, the answers of the current second."""

    def __init__(self, app: web.Application, server: web.Server, idle_timeout_s: float) -> None:
        self.server = server
        self.registry = app[REGISTRY]
        self.event_log = app[EVENT_LOG]
        self.limiters = app[LIMITERS]
        self.limit = app[CONFIG].ping_body_limit
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[EdgeProtocol] = set()
        self.answered = 0  # pings answered here (200 or 503)
        self.handed_off = 0  # connections handed to aiohttp
        self._date = ""
        self._ok: dict[tuple[bool, bool], bytes] = {}  # the 200 answers of the second self._date
        self.ok_metric = metrics.child(metrics.HTTP_RESPONSES, "ping", "200")

    def date(self) -> str:
        date = pings.http_date()
        if date != self._date:
            self._date, self._ok = date, {}
        return date

    def ok(self, close: bool, head: bool) -> bytes:
        """The 200 answer of a ping, as the aiohttp path writes it, made once a second."""
        date = self.date()
        answer = self._ok.get((close, head))
        if answer is None:
            answer = self._ok[close, head] = response(
                200, "OK", pings.response_headers(self.limit), date, close, head
            )
        return answer

    def error(self, status: int, text: str, headers: dict, close: bool, head: bool) -> bytes:
        metrics.child(metrics.HTTP_RESPONSES, "ping", str(status)).inc()
        return response(status, text, headers, self.date(), close, head)

    def __call__(self) -> EdgeProtocol:
        return EdgeProtocol(self)

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections now, the others once their pings in flight are answered."""
        for conn in list(self.connections):
            conn.close_when_done()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.abort()
