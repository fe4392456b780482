"""Answering on an ``EdgeProtocol`` (protocol.py), whose state it uses: pings recorded on the
event log and answered in request order, and the reading of the connection paused, resumed and
stopped around those answers.

A ping's ``PingEvent`` is queued on the log with ``send``; its place in ``answers`` is filled
once the log has durably acknowledged it (200) or refused it (503); a ping over a rate limit
is answered 429 without being logged. Answers are written as soon as every one before them is. A connection with ``MAX_QUEUED`` pings unanswered, or
whose write buffer is full, is not read until its answers go out. When the last queued answer
is written the connection closes (if it is closing), is handed to aiohttp (if a handoff is
waiting), or reads the next request.
"""

from __future__ import annotations

import asyncio
import logging

from runtime import metrics
from schemas.events import TOPIC_PINGS, encode

from .. import pings
from .wire import LINGER_S, MAX_QUEUED, Ping

log = logging.getLogger(__package__)  # "ingest.fastpath": one logger for the whole fast path


class Answers:
    """The answering side of ``EdgeProtocol``."""

    def _record(self, ping: Ping) -> None:
        target = ping.target
        check = target.check
        answer = [None]
        self.answers.append(answer)
        if len(self.answers) >= MAX_QUEUED:
            self._pause_reading()
        close = not ping.keep_alive
        limited = pings.rate_limited(self.edge.limiters, check, ping.addr)
        if limited is not None:
            answer[0] = self.edge.error(*limited, close, ping.head)
            self._write_ready()
            return
        event = pings.ping_event(
            check, target.action, target.exit_status, ping.rid, ping.method, ping.body, ping.size,
            ping.scheme, ping.addr, ping.user_agent, key=ping.key,
        )
        fut = self.edge.event_log.send(TOPIC_PINGS, encode(event), key=check.id.encode())
        fut.add_done_callback(lambda f: self._acked(f, answer, event.kind, close, ping.head))

    def _acked(self, fut: asyncio.Future, answer: list, kind: str, close: bool, head: bool) -> None:
        edge = self.edge
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            log.warning("ping not logged: %s", exc or "cancelled")
            answer[0] = edge.error(*pings.unavailable(), close, head)
        else:
            metrics.child(metrics.PINGS, kind, "ping").inc()
            edge.ok_metric.inc()
            answer[0] = edge.ok(close, head)
        edge.answered += 1
        self._write_ready()

    def _answer_now(self, status: int, text: str, headers: dict | None = None) -> None:
        """An error of the connection's own (408, a broken body): answered after what is queued, then closed."""
        self.answers.append([self.edge.error(status, text, headers or {}, True, False)])
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

    # --- flow control ---

    def pause_writing(self) -> None:
        self._pause_reading()

    def resume_writing(self) -> None:
        if len(self.answers) < MAX_QUEUED:
            self._resume_reading()

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

