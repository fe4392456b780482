"""aiohttp's test server, serving the way the edge does in production: through ingest.service.serve,
so requests start on the fast ping path (ingest/fastpath/) and the rest is handed to aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import types

from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from ingest.app import create_app
from ingest.fastpath.handler import make_handler
from ingest.keys import CONFIG
from ingest.service import serve


class EdgeTestServer(TestServer):
    def __init__(self, app, config=None, **kwargs) -> None:
        super().__init__(app, host="127.0.0.1", **kwargs)
        self.config = config or app[CONFIG]
        self.site = None

    async def start_server(self, loop=None, **kwargs) -> None:
        if self.runner:
            return
        self.runner, self.site = await serve(self.app, self.config, self.host, 0)
        self.port = self.site.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


@contextlib.asynccontextmanager
async def serving(edge, config=None, log=None, fast: bool = True):
    """The edge fixture's registry (and its log, unless another is given) on a real loopback port:
    served as in production (``fast``), or behind aiohttp's own site alone, to compare with.
    Yields the site (``.port``); stopped even when the test fails."""
    config = config or edge.config
    app = create_app(config, log or edge.log, edge.registry, clickhouse=edge.read_model)
    server = None
    if fast:
        runner, site = await serve(app, config, "127.0.0.1", 0)
    else:
        # aiohttp's protocol alone, as the edge's handed-off connections have it (its own answers
        # to malformed requests, its timeouts), on every connection from the first byte.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server = await asyncio.get_running_loop().create_server(
            lambda: make_handler(runner.server, config.idle_timeout_s), "127.0.0.1", 0)
        site = types.SimpleNamespace(port=server.sockets[0].getsockname()[1])
    try:
        yield site
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()
