"""The edge's HTTP protocol: plain pings answered without aiohttp's web layer, the rest handed to aiohttp.

Every connection starts here. Requests are parsed with httptools (llhttp); a request
that is an ordinary ping — HTTP/1.1, ``/ping/<uuid>[/<action>]`` or
``/ping/<ping-key>/<slug>[/<action>]`` naming one existing, unpaused check, no query
other than a canonical ``rid``, no Expect / Content-Encoding / Upgrade, head within
aiohttp's limits — is checked, logged and answered here: its ``PingEvent`` is queued
on the event log with ``send`` and the ``OK`` is written once the log has durably
acknowledged it, in request order (pipelining). That is what nearly every ping is,
and it costs a fraction of a trip through aiohttp's request, router, middleware and
response objects.

Anything else (an API call, a 404, ``?create=1``, a malformed request, a check whose
ping has a side effect) is handed to aiohttp's own protocol for the rest of the
connection, starting with that request's first byte, so every answer other than a
plain ping's comes from the one implementation in ingest/pings.py and the handlers
next to it. The decision is made before anything of the request is acted on.

The guarantees of the aiohttp path hold here too: the body is kept up to the ping
body limit and the connection is closed after a longer one without reading it; a
request head must arrive within the idle timeout and a body within
``pings.BODY_TIMEOUT_S`` (408); a connection piling up unanswered pipelined pings stops
being read; a ping is answered 200 only after its durable acknowledgement, 503 when the
log refuses; shutdown lets pings in flight finish.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import sys
import time

import httptools
from aiohttp import __version__ as aiohttp_version
from aiohttp import web

from checks.rules import client_addr
from runtime import metrics
from schemas.events import TOPIC_PINGS, encode

from . import pings
from .keys import CONFIG, EVENT_LOG, LIMITERS, REGISTRY

log = logging.getLogger(__name__)

# The URL shapes a ping route can take (segments of [-a-zA-Z0-9_], at most three) with an optional
# canonical rid; a path with anything else (percent-escapes, dots, empty segments) goes to aiohttp.
_FAST_URL = re.compile(
    rb"/ping/([-a-zA-Z0-9_]+(?:/[-a-zA-Z0-9_]+){0,2})"
    rb"(?:\?rid=([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}))?\Z"
)
_PING_PREFIX = b"/ping/"
# aiohttp's parser limits (max_line_size, max_field_size, max_headers): beyond them it answers 4xx.
_MAX_LINE = 8190
_MAX_HEADERS = 100
_MAX_HEAD = 64 * 1024  # head bytes seen before headers complete; past this aiohttp answers its own 4xx
_MAX_WINDOW = 256 * 1024  # bytes kept for a handoff before the answered requests in them are dropped
_MAX_QUEUED = 64  # unanswered pipelined pings on one connection before it stops being read
LINGER_S = 2.0  # longest a half-closed connection is kept for the client to read its answer
_HANDED_OFF = {b"expect", b"content-encoding", b"upgrade"}
_SERVER = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp_version}"
_REASONS = {200: "OK", 400: "Bad Request", 408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


class _Handoff(Exception):
    """Raised inside a parser callback: this request is aiohttp's."""


class _Stop(Exception):
    """Raised inside a parser callback: read nothing more on this connection."""


def _response(status: int, text: str, headers: dict, date: str, close: bool, head: bool) -> bytes:
    body = text.encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"Date: {date}",
        f"Server: {_SERVER}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def _text(value: bytes | None) -> str:
    if not value:
        return ""
    if value.isascii():
        return value.decode("ascii")
    return value.decode("utf-8", "replace")


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
            answer = self._ok[close, head] = _response(
                200, "OK", pings.response_headers(self.limit), date, close, head
            )
        return answer

    def error(self, status: int, text: str, headers: dict, close: bool, head: bool) -> bytes:
        metrics.child(metrics.HTTP_RESPONSES, "ping", str(status)).inc()
        return _response(status, text, headers, self.date(), close, head)

    def __call__(self) -> "EdgeProtocol":
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


class _Ping:
    """A fast-path ping being read."""

    __slots__ = ("target", "rid", "method", "head", "keep_alive", "content_length", "body", "size", "scheme",
                 "addr", "user_agent")


class EdgeProtocol(asyncio.Protocol):
    def __init__(self, edge: FastPings) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        # Bytes since the last point the parser stood between two requests, and how many requests
        # were completed within them: where a handed-off request starts is found from these.
        self.chunks: list[bytes] = []
        self.window = 0  # bytes in chunks
        self.completed = 0
        self.in_message = False
        self.head_bytes = 0
        self.head_began = False
        self.url: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.n_headers = 0
        self.unusual = False
        self.ping: _Ping | None = None  # the fast ping whose body is being read
        self.answers: collections.deque[list] = collections.deque()  # [bytes | None] in request order
        self.closing = False  # close once every answer is written
        self.unread = False  # closing with input left unread: linger (see _close)
        self.handoff: bytes | None = None  # bytes for aiohttp, once the answers are written
        self.read_paused = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""

    # --- connection ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.edge.connections.add(self)
        self.deadline = self.loop.time() + self.edge.idle_timeout_s
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.edge.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.closing = True
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing or self.handoff is not None:
            return
        self.chunks.append(data)
        self.window += len(data)
        try:
            self.parser.feed_data(data)
        except (_Handoff, httptools.HttpParserUpgrade):
            self._hand_off()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Handoff):
                self._hand_off()
            elif not isinstance(exc.__context__, _Stop):
                self._failed(exc.__context__)
        except httptools.HttpParserError:
            if self.ping is None:
                self._hand_off()  # aiohttp's parser gives its own 400 for what llhttp refused
            else:  # the body of a ping we took broke off mid-way (bad chunk framing)
                self.ping = None
                self._answer_now(400, "could not read request body")
        except Exception as exc:  # a bug of ours must not leave the client hanging
            self._failed(exc)
        else:
            if not self.in_message:
                self.chunks.clear()
                self.window = self.completed = 0
                return
            ping = self.ping
            if ping is not None and ping.size > self.edge.limit:
                self._cut(ping)
                return
            if ping is None:  # within a request head: count what came after the read it began in
                if self.head_began:
                    self.head_began = False
                else:
                    self.head_bytes += len(data)
                if self.head_bytes > _MAX_HEAD:
                    self._hand_off()
                    return
            if self.window > _MAX_WINDOW and self.completed:
                # Pipelined requests keep every read ending mid-request: drop what was answered.
                data = b"".join(self.chunks)
                self.chunks = [data[_end_of_requests(data, self.completed):]]
                self.window, self.completed = len(self.chunks[0]), 0

    def _failed(self, exc: BaseException | None) -> None:
        log.error("fast ping path failed", exc_info=exc)
        if self.ping is None and not self.closing:
            self._hand_off()  # aiohttp answers it instead
        else:
            self.ping = None
            self._answer_now(400, "could not read request")

    def eof_received(self) -> bool | None:
        # The client will send no more: answer what was asked, then close.
        self.closing = True
        self.unread = False
        if not self.answers and self.transport is not None:
            self.transport.close()
        return True

    def pause_writing(self) -> None:
        self._pause_reading()

    def resume_writing(self) -> None:
        if len(self.answers) < _MAX_QUEUED:
            self._resume_reading()

    def close_when_done(self) -> None:
        """Shutdown: no new requests; close once the pings in flight are answered."""
        self._stop_reading()
        if not self.answers and self.transport is not None:
            self.transport.close()

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self.in_message = True
        self.head_bytes = 0
        self.head_began = True
        self.url = []
        self.headers = {}
        self.n_headers = 0
        self.unusual = False

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        if not self.url[0].startswith(_PING_PREFIX[: len(self.url[0])]) or sum(map(len, self.url)) > _MAX_LINE:
            raise _Handoff

    def on_header(self, name: bytes, value: bytes) -> None:
        self.n_headers += 1
        if len(name) > _MAX_LINE or len(value) > _MAX_LINE or self.n_headers > _MAX_HEADERS:
            raise _Handoff
        name = name.lower()
        if name in _HANDED_OFF:
            self.unusual = True
        self.headers.setdefault(name, value)

    def on_headers_complete(self) -> None:
        ping = self._take()
        if ping is None:
            raise _Handoff
        self.ping = ping
        if ping.content_length or b"transfer-encoding" in self.headers:
            # A body is coming: it has BODY_TIMEOUT_S to arrive.
            self._set_deadline(pings.BODY_TIMEOUT_S)

    def on_body(self, body: bytes) -> None:
        ping = self.ping
        ping.size += len(body)
        limit = self.edge.limit
        if len(ping.body) < limit:
            ping.body += body[: limit - len(ping.body)]
        # Over the limit: what this read brought is counted; if the body does not end within it,
        # the rest is not read (see _cut), as the aiohttp path reads one chunk past the limit.

    def on_message_complete(self) -> None:
        self.in_message = False
        self.completed += 1
        ping, self.ping = self.ping, None
        if not ping.keep_alive:
            self._stop_reading()
        self._record(ping)
        if not ping.keep_alive:
            raise _Stop

    # --- the ping ---

    def _cut(self, ping: _Ping) -> None:
        """A body longer than the limit and not yet all here: record the ping with what was kept,
        answer, and close without reading the rest."""
        ping.size = max(ping.size, ping.content_length)
        ping.keep_alive = False
        self.ping = None
        self._stop_reading(unread=True)
        self._record(ping)

    def _take(self) -> _Ping | None:
        """A _Ping when this request is one the fast path answers exactly as aiohttp would, else None."""
        if self.unusual or self.parser.get_http_version() != "1.1" or self.closing:
            return None
        url = self.url[0] if len(self.url) == 1 else b"".join(self.url)
        m = _FAST_URL.match(url)
        if m is None:
            return None
        target = pings.match_ping(self.edge.registry, m.group(1).decode())
        if not isinstance(target, pings.Target) or target.check is None or target.check.paused:
            return None
        if target.exit_status is not None and target.exit_status > 255:
            return None
        headers = self.headers
        te = headers.get(b"transfer-encoding")
        if te is not None and te.strip().lower() != b"chunked":
            return None
        try:
            content_length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            return None
        ping = _Ping()
        ping.target = target
        rid = m.group(2)
        ping.rid = rid.decode().lower() if rid else None
        ping.method = self.parser.get_method().decode()
        ping.head = ping.method == "HEAD"
        ping.keep_alive = self.parser.should_keep_alive()
        ping.content_length = content_length
        ping.body = b""
        ping.size = 0
        ping.scheme = _text(headers.get(b"x-forwarded-proto")) or "http"
        ping.addr = client_addr(_text(headers.get(b"x-forwarded-for")), self.peer)
        ping.user_agent = _text(headers.get(b"user-agent"))
        return ping

    def _record(self, ping: _Ping) -> None:
        target = ping.target
        check = target.check
        answer = [None]
        self.answers.append(answer)
        if len(self.answers) >= _MAX_QUEUED:
            self._pause_reading()
        close = not ping.keep_alive
        limited = pings.rate_limited(self.edge.limiters, check, ping.addr)
        if limited is not None:
            answer[0] = self.edge.error(*limited, close, ping.head)
            self._write_ready()
            return
        event = pings.ping_event(
            check, target.action, target.exit_status, ping.rid, ping.method, ping.body, ping.size,
            ping.scheme, ping.addr, ping.user_agent,
        )
        fut = self.edge.event_log.send(TOPIC_PINGS, encode(event), key=check.id.encode())
        fut.add_done_callback(lambda f: self._acked(f, answer, event.kind, close, ping.head))

    def _acked(self, fut: asyncio.Future, answer: list, kind: str, close: bool, head: bool) -> None:
        edge = self.edge
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            log.warning("ping not logged: %s", exc or "cancelled")
            answer[0] = edge.error(503, "service unavailable", {"Retry-After": "1"}, close, head)
        else:
            metrics.child(metrics.PINGS, kind, "ping").inc()
            edge.ok_metric.inc()
            answer[0] = edge.ok(close, head)
        edge.answered += 1
        self._write_ready()

    def _answer_now(self, status: int, text: str) -> None:
        """An error of the connection's own (408, a broken body): answered after what is queued, then closed."""
        self.answers.append([self.edge.error(status, text, {}, True, False)])
        self._stop_reading(unread=True)
        self._write_ready()

    def _stop_reading(self, unread: bool = False) -> None:
        """Nothing more is read: the connection closes once the queued answers are written.
        ``unread``: the client may still be sending (a cut body)."""
        self.closing = True
        self.unread = self.unread or unread
        self._pause_reading()

    def _close(self) -> None:
        transport = self.transport
        if not self.unread:
            transport.close()
            return
        # Closing a socket with unread input resets the connection, and the reset can reach the
        # client before it has read the answer. Half-close instead (the answer, then FIN), discard
        # what still arrives, and close when the client does or after LINGER_S.
        self.unread = False
        transport.write_eof()
        self.read_paused = False
        transport.resume_reading()
        self.loop.call_later(LINGER_S, transport.close)

    def _write_ready(self) -> None:
        answers = self.answers
        ready = []
        while answers and answers[0][0] is not None:
            ready.append(answers.popleft()[0])
        transport = self.transport
        if transport is None:
            return
        if ready:
            transport.write(ready[0] if len(ready) == 1 else b"".join(ready))
        if answers:
            return
        if self.closing:
            self._close()
        elif self.handoff is not None:
            self._finish_handoff()
        else:
            self._set_deadline(self.edge.idle_timeout_s)
            self._resume_reading()

    # --- flow control and timeouts ---

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        # Never while closing, nor while a handoff waits for the answers before it (what would be
        # read then is aiohttp's, and this protocol no longer parses).
        if self.read_paused and self.transport is not None and not self.closing and self.handoff is None:
            self.read_paused = False
            self.transport.resume_reading()

    def _set_deadline(self, seconds: float) -> None:
        # The timer is re-armed lazily when it fires before the deadline, so that a later deadline
        # costs one attribute per request; only an earlier one re-arms it now.
        self.deadline = deadline = self.loop.time() + seconds
        timer = self.timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        now = self.loop.time()
        if now < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        if self.answers and self.ping is None:
            # Pings waiting for the log, which has its own failure answer: look again later.
            self.timer = self.loop.call_at(now + 1.0, self._on_timer)
            return
        if self.ping is not None:  # a body trickling in: 408, as the aiohttp path answers
            self.ping = None
            self._answer_now(408, "request timeout")
        else:  # no complete request head in time (idle or slowloris): close, as aiohttp does
            self.transport.close()

    # --- handing a connection to aiohttp ---

    def _hand_off(self) -> None:
        """The rest of this connection, from the first byte of the request that is not ours, is
        aiohttp's; it takes over once the answers queued before it are written."""
        data = b"".join(self.chunks)
        self.handoff = data[_end_of_requests(data, self.completed):]
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
        handler = self.edge.server()
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


def _end_of_requests(data: bytes, n: int) -> int:
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


class EdgeSite(web.TCPSite):
    """A TCP site whose connections start on the fast ping path (see the module's text)."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, *, idle_timeout_s: float,
                 shutdown_timeout_s: float = 10.0, **kwargs) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._idle_timeout_s = idle_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self.fast: FastPings | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        self.fast = FastPings(self._runner.app, self._runner.server, self._idle_timeout_s)
        self._server = await loop.create_server(
            self.fast, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        if self.fast is not None:
            await self.fast.shutdown(self._shutdown_timeout_s)
