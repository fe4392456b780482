"""The status board: a static page (``ingest/board/``) that reads the project's state through the API.

The page is opened as ``/board/#key=<read-only API key>``: the key stays in the URL fragment,
which browsers never send (no server or proxy log sees it), and the script sends it as
``X-Api-Key``. A check's page is ``/board/checks/<uuid or unique key>#key=...`` (or the fragment
``check=`` on ``/board/``); that route answers 404 when no check has that code.

Data comes from the API a read-only key may use: the check list, flips, the analyst API, and one
extension, ``GET /api/v3/checks/<code>/ping-log``: the recent pings without their bodies, client
addresses or user agents (Healthchecks' ``/pings/`` needs a read-write key).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from checks.document import ping_document
from checks.rules import UUID
from checks.spec import UNIQUE_KEY, unique_key

from . import params, state
from .keys import REGISTRY
from .views import ApiRequest, api_view, cors, own_check

PING_LOG_LIMIT = 100
_PRIVATE = ("remote_addr", "ua", "body_url")  # what a read-only key does not see of a ping
_FILES = {"board.js": "text/javascript", "board.css": "text/css"}
# The page loads its own script and style only, and talks to this origin only.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("board", name).read_bytes()


def _page(status: int = 200) -> web.Response:
    return web.Response(body=_asset("index.html"), status=status, content_type="text/html", charset="utf-8",
                        headers=_HEADERS)


async def board(request: web.Request) -> web.Response:
    return _page()


async def to_board(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/board/")  # the browser keeps the #key fragment


async def check_page(request: web.Request) -> web.Response:
    """The board on a check's page; 404 (the page, in its not-found state) for an unknown code."""
    code = request.match_info["code"]
    registry = request.app[REGISTRY]
    if UUID.match(code):
        known = code in registry.checks
    else:
        known = bool(UNIQUE_KEY.match(code)) and any(unique_key(i) == code for i in registry.checks)
    return _page(200 if known else 404)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=_FILES[name], charset="utf-8", headers=_HEADERS)


@api_view(write=False)  # state.pings answers 503 without a reachable read model
async def ping_log(request: web.Request, api: ApiRequest) -> web.Response:
    """The check's most recent pings (``limit``, default 20), newest first, as Healthchecks'
    ping log entries without body urls, client addresses and user agents."""
    check = own_check(request, api, by_unique_key=True)
    limit = params.int_param(request.query, "limit", 20, 1, PING_LOG_LIMIT)
    rows = await state.pings(request, check.id, limit)
    pings = []
    for row in rows:
        item = ping_document(row, "")
        for name in _PRIVATE:
            item.pop(name, None)
        item["exit_status"] = row["exit_status"]
        item["body_size"] = row["body_size"]
        pings.append(item)
    return web.json_response({"pings": pings})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/board", to_board)
    app.router.add_get("/board/", board)
    app.router.add_get("/board/checks/{code}", check_page)
    app.router.add_get("/board/static/{name}", asset)
    app.router.add_route("*", "/api/v{v:[123]}/checks/{code}/ping-log", cors({"GET": ping_log}))
