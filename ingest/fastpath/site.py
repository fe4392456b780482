"""``EdgeSite``: an aiohttp ``web.TCPSite`` whose connections start on the fast ping path.

This is the one place that reaches into aiohttp's private attributes. aiohttp has no public way
to give a site another protocol factory, so ``start`` does what ``TCPSite.start`` does with
``FastPings`` in place of the runner's ``web.Server``:
- ``web.BaseSite.start(self)`` is called directly, skipping ``TCPSite.start``, to register the
  site with its runner (``BaseRunner._reg_site``) without creating aiohttp's own server;
- ``_runner`` (BaseSite) gives the app and the ``web.Server`` that takes over handed-off
  connections;
- ``_host``, ``_port``, ``_backlog``, ``_reuse_address``, ``_reuse_port`` (TCPSite) are the
  site's arguments, passed on to ``loop.create_server``;
- ``_server`` (BaseSite) is set to the listening server, which ``BaseSite.stop`` closes;
- ``_bound_port`` (TCPSite) is set to the port bound, which ``TCPSite.port`` returns.
``stop`` is ``BaseSite.stop`` (closes ``_server``, unregisters the site), then the fast path's
own shutdown, which lets pings in flight be answered.
aiohttp is pinned to one minor version in pyproject.toml for this (and for handoff.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .listener import FastPings


class EdgeSite(web.TCPSite):
    """A TCP site whose connections start on the fast ping path (see ingest/fastpath/__init__.py)."""

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
