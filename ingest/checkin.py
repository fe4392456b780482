"""The Overwatch-style endpoints (seed 000): monitors and their checkin URL.

pingstream runs no probes, so every check is a heartbeat, which is what Overwatch
calls a SCHEDULED monitor: every check of a project (made here, with the
Management API or by ``?create=1``) is listed and shown as a monitor and takes
checkins. Listing, creating and reading monitors take ``Authorization: Bearer
<api key>``; a checkin, like a ping, takes no key.
"""

from __future__ import annotations

from aiohttp import web

from checks.document import monitor_document
from checks.idempotency import HEADER as IDEMPOTENCY_KEY
from checks.idempotency import BadKey, parse_key
from checks.spec import SpecError, load_json, may_create, monitor_spec
from schemas.events import CheckConfig, utcnow, uuid7

from . import state
from .keys import CONFIG, REGISTRY
from .pings import record_ping
from .views import ApiError, ApiRequest, bearer_view, error, read_body, save_check


async def _documents(request: web.Request, checks: list[CheckConfig]) -> list[dict]:
    """The monitor documents of ``checks``, from their projected state."""
    states = await state.check_states(request, [c.id for c in checks])
    down = [c.id for c in checks if (states.get(c.id) or {}).get("status") == "down"]
    failed = await state.last_completion_failed(request, down)
    public_url = request.app[CONFIG].public_url
    return [monitor_document(c, states.get(c.id), public_url, c.id in failed) for c in checks]


@bearer_view(write=True)
async def create_monitor(request: web.Request, api: ApiRequest) -> web.Response:
    # The body is read after the key, and an empty one is an empty object.
    try:
        body = load_json(await read_body(request) or b"{}")
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    try:
        fields = monitor_spec(body, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        raise ApiError(exc.args[0]) from None
    if not may_create(request.app[REGISTRY].project_check_count(api.project.id), request.app[CONFIG].check_limit):
        raise ApiError("checks limit exceeded", 403)
    check = CheckConfig(id=str(uuid7()), project_id=api.project.id, monitor_type="SCHEDULED", created=utcnow(), **fields)
    await save_check(request, check)
    return web.json_response({"data": monitor_document(check, None, request.app[CONFIG].public_url)}, status=201)


@bearer_view(write=False)
async def list_monitors(request: web.Request, api: ApiRequest) -> web.Response:
    checks = sorted(request.app[REGISTRY].project_checks(api.project.id), key=lambda c: (c.created, c.id))
    return web.json_response({"data": await _documents(request, checks)})


@bearer_view(write=False)
async def get_monitor(request: web.Request, api: ApiRequest) -> web.Response:
    check = request.app[REGISTRY].checks.get(request.match_info["id"])
    if check is None or check.project_id != api.project.id:
        raise ApiError("not found", 404)
    [document] = await _documents(request, [check])
    return web.json_response({"data": document})


async def checkin(request: web.Request) -> web.Response:
    check = request.app[REGISTRY].checks.get(request.match_info["id"])
    if check is None:
        return error("not found", 404)
    status = request.query.get("status", "ok")
    if status not in ("ok", "fail"):
        return error("status must be ok or fail")
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None:
        try:
            parse_key(key)
        except BadKey as exc:
            return error(str(exc))  # here, as this endpoint's other errors (record_ping's would be text)
    failed = await record_ping(request, check, "fail" if status == "fail" else "success", None, source="checkin")
    if failed is not None:
        return failed
    return web.json_response({"recorded": "failure" if status == "fail" else "ok", "monitor": check.id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/monitors", create_monitor)
    app.router.add_get("/api/v1/monitors", list_monitors)
    app.router.add_get("/api/v1/monitors/{id}", get_monitor)
    app.router.add_route("GET", "/api/v1/monitors/{id}/checkin", checkin)
    app.router.add_route("POST", "/api/v1/monitors/{id}/checkin", checkin)
