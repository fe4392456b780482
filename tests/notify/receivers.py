"""Real local receivers for alerts: an HTTP server (aiohttp) that records every request, and an
SMTP server (aiosmtpd). Both on free loopback ports, stopped by their context managers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from runtime.kafkabroker import free_port


@dataclass
class Received:
    path: str
    method: str
    headers: dict
    body: bytes
    at: float  # time.time() when it arrived


@dataclass
class HttpReceiver:
    """Answers ``status_for(path)`` (default 200); a path in ``hang`` is never answered."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    delay_s: Callable[[], float] | None = None  # how long to wait before answering (None: at once)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay_s is not None:
            await asyncio.sleep(self.delay_s())
        self.received.append(Received(request.path, request.method, dict(request.headers), body, time.time()))
        self.arrived.set()
        if request.path in self.hang:
            await asyncio.sleep(3600)
        return web.Response(status=self.status.get(request.path, 200), text="ok")

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, predicate, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {[(r.path, r.headers.get('Idempotency-Key')) for r in self.received]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.1)


@contextlib.asynccontextmanager
async def http_receiver():
    receiver = HttpReceiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)  # the receiver's own lines are not the notifier's
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def smtp_receiver():
    """An aiosmtpd server; yields (port, messages) where messages are ``email.message.Message``s."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    messages: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = message_from_bytes(envelope.content)
            message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
            messages.append(message)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, messages
    finally:
        controller.stop()
