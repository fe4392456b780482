"""One listening socket's fast path (``FastPings``): the protocol factory its server calls for
each connection, the bound on the connections one client address holds, the aiohttp handlers
that take connections over, and shutdown of those connections."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiohttp import web

from runtime import metrics

from .. import pings
from ..keys import CONFIG, EVENT_LOG, LIMITERS, REGISTRY
from .handler import EdgeRequestHandler, make_handler
from .protocol import EdgeProtocol
from .wire import response

log = logging.getLogger(__package__)  # "ingest.fastpath": throttled (ingest/service.py)


class FastPings:
    """What the connections of one listening socket share: the app's state, the aiohttp server
    that takes over the connections it hands off, the answers of the current second, and the
    number of connections each client address holds (fast or handed off, until they close)."""

    def __init__(self, app: web.Application, server: web.Server, idle_timeout_s: float) -> None:
        self.server = server
        self.registry = app[REGISTRY]
        self.event_log = app[EVENT_LOG]
        self.limiters = app[LIMITERS]
        self.limit = app[CONFIG].ping_body_limit
        self.idle_timeout_s = idle_timeout_s
        self.max_per_client = app[CONFIG].max_connections_per_client  # 0: no limit
        self.per_client: dict[str, int] = {}  # client address -> connections open
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

    # --- connections per client address ---

    def admit(self, peer: str) -> bool:
        """Take a connection slot of ``peer``; False (counted, and said in a throttled line) when
        it holds ``max_per_client`` already. Every True is matched by one ``release``."""
        if not self.max_per_client:
            return True
        held = self.per_client.get(peer, 0)
        if held >= self.max_per_client:
            metrics.CONNECTIONS_REFUSED.inc()
            log.warning("client %s holds %d connections already: refused one", peer, held)
            return False
        self.per_client[peer] = held + 1
        return True

    def release(self, peer: str) -> None:
        if not self.max_per_client:
            return
        held = self.per_client.get(peer, 0) - 1
        if held > 0:
            self.per_client[peer] = held
        else:
            self.per_client.pop(peer, None)

    def too_many_connections(self) -> bytes:
        """The answer on a connection refused by ``admit``, written as soon as it opens."""
        return response(429, "too many connections", {"Retry-After": "1"}, self.date(), True, False)

    def handler(self, peer: str) -> EdgeRequestHandler:
        """An aiohttp protocol to take over a connection of ``peer`` (handoff.py); it gives the
        address's connection slot back when the connection ends."""
        return make_handler(self.server, self.idle_timeout_s, functools.partial(self.release, peer))

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections now, the others once their pings in flight are answered."""
        for conn in list(self.connections):
            conn.close_when_done()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.transport.abort()
