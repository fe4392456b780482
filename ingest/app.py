"""The edge's aiohttp application factory."""

from __future__ import annotations

import logging

from aiohttp import web

from runtime import health, metrics, server_header
from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.base import EventLog
from runtime.registry import Registry

from . import analytics, badges, board, checkin, management, openapi, pings, prometheus, windows
from .fastpath.handler import count_bad_request
from .keys import CLICKHOUSE, CONFIG, EVENT_LOG, LIMITERS, REGISTRY, Limiters

log = logging.getLogger(__name__)


def _endpoint(path: str) -> str:
    if path.startswith("/ping/"):
        return "ping"
    if path.endswith("/checkin"):
        return "checkin"
    return "api" if path.startswith("/api/") else "other"


def _short_error(exc: web.HTTPException) -> web.Response | None:
    """aiohttp's own 4xx ("404: Not Found") as a short plain-text body; None for errors a handler
    raised with a text of its own."""
    if exc.status >= 400 and exc.text and exc.text.startswith(f"{exc.status}:"):
        text = {404: "not found", 405: "method not allowed"}.get(exc.status, exc.reason.lower())
        headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
        return web.Response(status=exc.status, text=text, headers=headers)
    return None


# Pings catch up only on a miss (handle_ping); health and metrics never wait on the log.
_NO_CATCH_UP = ("/ping/", "/healthz", "/readyz", "/metrics")


@web.middleware
async def finish(request: web.Request, handler):
    """One middleware (each costs a coroutine layer on every ping) that
    - lets the registry catch up with the log before a request other than a ping reads it;
    - answers router and client errors with short plain-text 4xx bodies, never an HTML page or a traceback;
    - counts every answer in pingstream_http_responses{endpoint, code} (what an operator watches for
      4xx/5xx storms);
    - closes the connection after a ping whose body was cut without reading the rest."""
    try:
        if not request.path.startswith(_NO_CATCH_UP):
            # Read your writes across edges: what another edge process wrote to the registry (a check
            # created, a key rotated) is applied here before this request reads the registry.
            await request.app[REGISTRY].caught_up()
        response = await handler(request)
    except web.HTTPException as exc:
        response = _short_error(exc)
        if response is None:
            metrics.child(metrics.HTTP_RESPONSES, _endpoint(request.path), str(exc.status)).inc()
            raise
    except web.RequestPayloadError as exc:
        # A body that cannot be read as sent (bad Content-Encoding data, broken chunks) is the
        # client's error; what is left of it on the socket is unusable, so close after answering.
        count_bad_request(request.remote, 400, exc)
        response = web.Response(status=400, text="could not read request body")
        response.force_close()
    except ConnectionResetError:
        if request.transport is not None:  # not the client gone mid-request (nothing to answer): ours
            metrics.child(metrics.HTTP_RESPONSES, _endpoint(request.path), "500").inc()
        raise
    except BaseException:
        metrics.child(metrics.HTTP_RESPONSES, _endpoint(request.path), "500").inc()
        raise
    metrics.child(metrics.HTTP_RESPONSES, _endpoint(request.path), str(response.status)).inc()
    if pings.UNREAD_BODY in request:
        response.force_close()
    return response


def create_app(config: Config, event_log: EventLog, registry: Registry, clickhouse: ClickHouse | None) -> web.Application:
    # Bodies of pings are streamed and cut by the ping handler; this bounds the other endpoints.
    app = web.Application(middlewares=[finish], client_max_size=1024 * 1024)
    server_header.install(app)  # "Server: pingstream", no versions, on every answer
    app[CONFIG] = config
    app[EVENT_LOG] = event_log
    app[REGISTRY] = registry
    app[LIMITERS] = Limiters(config)
    if clickhouse is not None:
        app[CLICKHOUSE] = clickhouse
    pings.add_routes(app)
    management.add_routes(app)
    windows.add_routes(app)
    badges.add_routes(app)
    checkin.add_routes(app)
    analytics.add_routes(app)
    board.add_routes(app)
    openapi.add_routes(app)
    prometheus.add_routes(app)  # a project's checks, by its read-only key
    app.router.add_get("/healthz", health.healthz)  # alive: the loops turn (runtime.health)
    app.router.add_get("/readyz", health.readyz)  # ready: log reachable, registry caught up
    app.router.add_get("/metrics", metrics.metrics_handler)  # the service's own series: no check or project named
    return app
