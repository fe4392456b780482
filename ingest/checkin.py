"""The Overwatch-style endpoints (seed 000): SCHEDULED monitors and their checkin URL.

A SCHEDULED monitor is an ordinary check (same registry, same pipeline) whose
``monitor_type`` is ``SCHEDULED``; only such checks accept checkins.
"""

from __future__ import annotations
from aiohttp import web

from runtime.eventlog.base import LogUnavailable
from schemas.events import CheckConfig, utcnow, uuid7

from checks.document import monitor_document
from checks.spec import SpecError, load_json, monitor_spec

from . import state
from .keys import CONFIG, REGISTRY
from .management import _save
from .pings import record_ping


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _project(request: web.Request, write: bool):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not token.isascii():
        return None
    found = request.app[REGISTRY].project_by_api_key(token.strip())
    if found is None or (write and found[1]):
        return None
    return found[0]


async def create_monitor(request: web.Request) -> web.Response:
    project = _project(request, write=True)
    if project is None:
        return _error("unauthorized", 401)
    try:
        body = load_json(await request.read() or b"{}")
    except ValueError as exc:
        return _error(str(exc), 400)
    if not isinstance(body, dict):
        return _error("request body must be a JSON object", 400)
    try:
        fields = monitor_spec(body, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        return _error(exc.args[0], 400)
    check = CheckConfig(id=str(uuid7()), project_id=project.id, monitor_type="SCHEDULED", created=utcnow(), **fields)
    try:
        await _save(request, check)
    except LogUnavailable:
        return _error("service unavailable", 503)
    return web.json_response({"data": monitor_document(check, None, request.app[CONFIG].public_url)}, status=201)


async def get_monitor(request: web.Request) -> web.Response:
    project = _project(request, write=False)
    if project is None:
        return _error("unauthorized", 401)
    check = request.app[REGISTRY].checks.get(request.match_info["id"])
    if check is None or check.project_id != project.id or check.monitor_type != "SCHEDULED":
        return _error("not found", 404)
    st = (await state.check_states(request, [check.id])).get(check.id)
    return web.json_response({"data": monitor_document(check, st, request.app[CONFIG].public_url)})


async def checkin(request: web.Request) -> web.Response:
    monitor_id = request.match_info["id"]
    check = request.app[REGISTRY].checks.get(monitor_id)
    if check is None or check.monitor_type != "SCHEDULED":
        return _error("not found", 404)
    status = request.query.get("status", "ok")
    if status not in ("ok", "fail"):
        return _error("status must be ok or fail", 400)
    failed = await record_ping(request, check, "fail" if status == "fail" else "success", None, source="checkin")
    if failed is not None:
        return failed
    return web.json_response({"recorded": "failure" if status == "fail" else "ok", "monitor": check.id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/monitors", create_monitor)
    app.router.add_get("/api/v1/monitors/{id}", get_monitor)
    app.router.add_route("GET", "/api/v1/monitors/{id}/checkin", checkin)
    app.router.add_route("POST", "/api/v1/monitors/{id}/checkin", checkin)
