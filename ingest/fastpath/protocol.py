"""``EdgeProtocol``: one connection on the fast ping path, from its first byte until it closes or
is handed to aiohttp.

Requests are parsed with httptools (llhttp) as they arrive. A parser callback raises ``_Handoff``
as soon as the request cannot be a plain ping (a URL that is not a ping's, a head beyond aiohttp's
limits, an Expect / Content-Encoding / Upgrade header, or ``_take`` finding, once the head is
complete, that it is not a ping this path answers exactly as aiohttp would); that request, and
one llhttp refuses, is handed to aiohttp with the rest of the connection (handoff.py). A ping's
body is kept up to the ping body limit; a longer one that has not ended within the read is cut
(``_cut``) and the rest is never read. A complete ping is recorded and answered in request order
(answers.py).

One timer per connection keeps its deadlines: a request head within the idle timeout, a body
within ``pings.BODY_TIMEOUT_S`` (408). A connection beyond its client address's bound
(``PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT``, listener.py) is answered 429 and closed as it opens.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import httptools

from checks.idempotency import BadKey, parse_key
from checks.rules import client_addr

from .. import pings
from .answers import Answers
from .handoff import HandOff, end_of_requests
from .wire import FAST_URL, HANDED_OFF_HEADERS, MAX_HEAD, MAX_HEADERS, MAX_LINE, MAX_WINDOW, PING_PREFIX, Ping, header_text

if TYPE_CHECKING:
    from .listener import FastPings

log = logging.getLogger(__package__)  # "ingest.fastpath": one logger for the whole fast path


class _Handoff(Exception):
    """Raised inside a parser callback: this request is aiohttp's."""


class _Stop(Exception):
    """Raised inside a parser callback: read nothing more on this connection."""


class EdgeProtocol(Answers, HandOff, asyncio.Protocol):
    """One connection on the fast ping path, until it closes or is handed to aiohttp."""

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
        self.ping: Ping | None = None  # the fast ping whose body is being read
        self.answers: collections.deque[list] = collections.deque()  # [bytes | None] in request order
        self.closing = False  # close once every answer is written
        self.unread = False  # closing with input left unread: linger (see _close)
        self.handoff: bytes | None = None  # bytes for aiohttp, once the answers are written
        self.read_paused = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self.admitted = False  # holds one of its client address's connection slots

    # --- connection ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        if not self.edge.admit(self.peer):
            # Over its address's bound: answered before it sends anything, and closed.
            self.closing = True
            self.transport = None
            transport.write(self.edge.too_many_connections())
            transport.close()
            return
        self.admitted = True
        self.edge.connections.add(self)
        self.deadline = self.loop.time() + self.edge.idle_timeout_s
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.edge.connections.discard(self)
        if self.admitted:
            self.admitted = False
            self.edge.release(self.peer)
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
                if self.head_bytes > MAX_HEAD:
                    self._hand_off()
                    return
            if self.window > MAX_WINDOW and self.completed:
                # Pipelined requests keep every read ending mid-request: drop what was answered.
                data = b"".join(self.chunks)
                self.chunks = [data[end_of_requests(data, self.completed):]]
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
        if not self.url[0].startswith(PING_PREFIX[: len(self.url[0])]) or sum(map(len, self.url)) > MAX_LINE:
            raise _Handoff

    def on_header(self, name: bytes, value: bytes) -> None:
        self.n_headers += 1
        if len(name) > MAX_LINE or len(value) > MAX_LINE or self.n_headers > MAX_HEADERS:
            raise _Handoff
        name = name.lower()
        if name in HANDED_OFF_HEADERS:
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

    def _cut(self, ping: Ping) -> None:
        """A body longer than the limit and not yet all here: record the ping with what was kept,
        answer, and close without reading the rest."""
        ping.size = max(ping.size, ping.content_length)
        ping.keep_alive = False
        self.ping = None
        self._stop_reading(unread=True)
        self._record(ping)

    def _take(self) -> Ping | None:
        """A Ping when this request is one the fast path answers exactly as aiohttp would, else None."""
        if self.unusual or self.parser.get_http_version() != "1.1" or self.closing:
            return None
        url = self.url[0] if len(self.url) == 1 else b"".join(self.url)
        m = FAST_URL.match(url)
        if m is None:
            return None
        # Refusals, ``?create=1`` and pings to paused checks (which may resume them) are aiohttp's.
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
        key = headers.get(b"idempotency-key")
        if key is not None:
            try:
                key = parse_key(header_text(key))
            except BadKey:
                return None  # aiohttp answers the 400
        ping = Ping()
        ping.target = target
        ping.key = key
        rid = m.group(2)
        ping.rid = rid.decode().lower() if rid else None
        ping.method = self.parser.get_method().decode()
        ping.head = ping.method == "HEAD"
        ping.keep_alive = self.parser.should_keep_alive()
        ping.content_length = content_length
        ping.body = b""
        ping.size = 0
        ping.scheme = header_text(headers.get(b"x-forwarded-proto")) or "http"
        ping.addr = client_addr(header_text(headers.get(b"x-forwarded-for")), self.peer)
        ping.user_agent = header_text(headers.get(b"user-agent"))
        return ping

    # --- timeouts ---

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
            self._answer_now(408, "request timeout", pings.never_cache())
        else:  # no complete request head in time (idle or slowloris): close, as aiohttp does
            self.transport.close()
