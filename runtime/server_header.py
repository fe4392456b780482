"""The ``Server`` header of every HTTP answer pingstream gives: its name and no versions (a version
tells a scanner which known bugs to try).

aiohttp fills in ``Python/3.x aiohttp/3.y`` on every response not naming a server of its own;
``install`` makes an application replace that, once each response's headers are final. Answers
written outside an application (the edge's fast ping path, its refusals of malformed requests)
use ``SERVER`` themselves.
"""

from __future__ import annotations

from aiohttp import web

SERVER = "pingstream"


async def _set_server(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


def install(app: web.Application) -> None:
    app.on_response_prepare.append(_set_server)
