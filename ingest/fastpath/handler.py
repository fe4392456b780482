"""``EdgeRequestHandler``: aiohttp's protocol for the connections the fast path hands over, with
the edge's own answer to malformed requests.

aiohttp answers a request its parser refuses (a bad request line or header, a control byte in the
URL, a negative Content-Length, ...) with the parser's message, which quotes the request line
back, and logs it at ERROR with its chained tracebacks; a body it cannot decode while draining
what a handler left unread is logged the same way. Anyone can send those, as fast as they like.
Here they are the client's error, not the server's:
- the answer is a fixed short text (``bad request``) with the edge's ``Server`` header;
- the log gets one short line, throttled (runtime/logthrottle.py: one per interval, with the
  count of those held back), and ``pingstream_http_bad_requests{reason}`` counts every one;
- a client leaving while its request is read is no error at all (a debug line);
- any other exception (a bug of ours) is logged as aiohttp logs it, traceback and all.

The handler also gives its client address's connection slot back when the connection ends
(listener.py: ``FastPings.release``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from runtime import metrics
from runtime.server_header import SERVER

from .wire import LINGER_S

log = logging.getLogger(__package__)  # "ingest.fastpath": throttled (ingest/service.py)

# The answers to a malformed request: fixed texts, never the parser's message.
TEXTS = {400: "bad request", 413: "request entity too large", 431: "request header fields too large"}


def client_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a malformed request rather than a failure of the server."""
    return isinstance(exc, (HttpProcessingError, RequestPayloadError))


def count_bad_request(remote: str | None, status: int | None, exc: BaseException | None) -> None:
    """One malformed request: counted, and one short (throttled) line naming what was wrong."""
    reason = type(exc).__name__ if exc is not None else "unknown"
    metrics.child(metrics.BAD_REQUESTS, reason).inc()
    log.info("bad request from %s: %s", remote or "?", f"{status} {reason}" if status else reason)


class EdgeRequestHandler(RequestHandler):
    """aiohttp's ``RequestHandler`` with short answers and throttled lines for malformed requests."""

    __slots__ = ("_on_lost",)

    def __init__(self, manager: web.Server, *, on_lost: Callable[[], None] | None = None, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, ConnectionResetError) and self.transport is None:
            # The client went away while its request was being read: no one to answer, nothing wrong.
            log.debug("client %s went away mid-request", request.remote)
            response = web.Response(status=400, text=TEXTS[400])
        elif status >= 500 or not client_error(exc):
            response = super().handle_error(request, status, exc, message)  # ours: stays loud
        else:
            count_bad_request(request.remote, status, exc)
            if request.writer.output_size > 0:  # as aiohttp: an answer was begun, the connection is broken
                raise ConnectionError("Response is sent already, cannot send another response")
            response = web.Response(status=status, text=TEXTS.get(status, "bad request"))
            response.force_close()
        response.headers["Server"] = SERVER
        return response

    def log_exception(self, *args, **kwargs) -> None:
        # aiohttp logs here, with a traceback, what ends a request outside any handler: a body that
        # cannot be read while draining it after the answer is the client's error.
        exc = kwargs.get("exc_info")
        if client_error(exc):
            count_bad_request(self.peername[0] if isinstance(self.peername, tuple) else None, None, exc)
            return
        super().log_exception(*args, **kwargs)


def make_handler(server: web.Server, idle_timeout_s: float, on_lost: Callable[[], None] | None = None) -> EdgeRequestHandler:
    """A handler for one connection, managed by ``server`` (the runner's, which waits for its
    connections at shutdown), with the edge's timeouts: ``idle_timeout_s`` for a request head, and
    LINGER_S (as the fast path's) for draining what a handler left unread of a body."""
    return EdgeRequestHandler(server, loop=asyncio.get_running_loop(), on_lost=on_lost, access_log=None,
                              keepalive_timeout=idle_timeout_s, lingering_time=LINGER_S)
