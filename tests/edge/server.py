"""aiohttp's test server, serving the way the edge does in production: through ingest.service.serve,
so requests start on the fast ping path (ingest/fastpath.py) and the rest is handed to aiohttp."""

from __future__ import annotations

from aiohttp.test_utils import TestServer
from yarl import URL

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
