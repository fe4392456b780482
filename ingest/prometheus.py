"""A project's Prometheus endpoint, as Healthchecks serves it (hc/integrations/prometheus).

``GET /projects/<project uuid>/metrics/<read-only key>`` (also under ``/checks/metrics/``, the
older path), or ``/projects/<project uuid>/metrics/`` with ``Authorization: Bearer <read-only
key>``. As upstream: no bearer token is 401, a key that is not 32 characters 400, anything but a
read-only key 403 (all with empty bodies), and the project is the key's (upstream looks the
project up by the key alone). The text is checks/prometheus.py's.

This is where per-check series live; the service's ``/metrics`` names no check or project.
"""

from __future__ import annotations

from aiohttp import web

from checks.prometheus import exposition
from reads import checks as queries
from schemas.events import utcnow

from . import state
from .keys import REGISTRY
from .views import empty, error


async def project_metrics(request: web.Request) -> web.Response:
    key = request.match_info.get("key")
    if key is None:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return empty(401)
        key = authorization.removeprefix("Bearer ")
    if len(key) != 32:
        return empty(400)
    # Keys are ASCII; a header of other bytes matches none.
    found = request.app[REGISTRY].project_by_api_key(key) if key.isascii() else None
    if found is None or not found[1]:
        return empty(403)
    project, _ = found
    checks = sorted(request.app[REGISTRY].project_checks(project.id), key=lambda c: (c.created, c.id))
    try:  # without the read model every check would read as up: 503 naming what is missing instead
        states = await state.read(request, queries.check_states, [c.id for c in checks])
    except state.ReadModelUnavailable as exc:
        return error(exc.message, exc.status)
    text = exposition(checks, states, utcnow())
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain"})


def add_routes(app: web.Application) -> None:
    project = "/projects/{code:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}"
    key = "{key:[-a-zA-Z0-9_]+}"  # Django's slug converter
    for path in (f"{project}/metrics/{key}", f"{project}/checks/metrics/{key}", f"{project}/metrics/"):
        app.router.add_route("*", path, project_metrics)
