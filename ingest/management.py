"""Healthchecks-compatible Management API (v1/v2/v3 paths, v3 behaviour).

Writes become registry / control events on the log (answered after the durable
ack, then applied to this edge's registry at once so the caller reads its own
write); configuration is read from the registry, state (status, n_pings,
last_ping, pings, flips) from the projected tables in ClickHouse.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from aiohttp import web

from checks.document import after_pause, after_resume, check_document, isostring, ping_document
from checks.spec import SpecError, apply_spec, find_unique, validate
from schemas.events import TOPIC_PINGS, CheckConfig, CheckDeleted, Paused, Resumed, encode, utcnow, uuid7

from . import state
from .keys import CONFIG, EVENT_LOG, REGISTRY
from .params import flips_window
from .views import ApiRequest, api_view, by_method, error, own_check, save, save_check

PING_LOG_LIMIT = 100


def _document(request: web.Request, check: CheckConfig, st: dict | None, readonly: bool,
              status: str | None = None, http_status: int = 200) -> web.Response:
    return web.json_response(check_document(check, st, readonly, request.app[CONFIG].public_url, status),
                             status=http_status)


async def _state(request: web.Request, check: CheckConfig) -> dict | None:
    return (await state.check_states(request, [check.id])).get(check.id)


@api_view(write=False)
async def list_checks(request: web.Request, api: ApiRequest) -> web.Response:
    checks = request.app[REGISTRY].project_checks(api.project.id)
    tags = set(request.query.getall("tag", []))
    if tags:
        checks = [c for c in checks if tags <= set(c.tags.split())]
    slug = request.query.get("slug")
    if slug:
        checks = [c for c in checks if c.slug == slug]
    states = await state.check_states(request, [c.id for c in checks])
    checks.sort(key=lambda c: (c.created, c.id))
    public_url = request.app[CONFIG].public_url
    return web.json_response({"checks": [check_document(c, states.get(c.id), api.readonly, public_url) for c in checks]})


@api_view(write=True)
async def create_check(request: web.Request, api: ApiRequest) -> web.Response:
    """Create a check, or with ``unique`` update the project's matching one (200 instead of 201)."""
    try:
        spec = validate(api.json, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        return error(str(exc))
    existing = find_unique(request.app[REGISTRY].project_checks(api.project.id), spec)
    created = existing is None
    base = existing or CheckConfig(id=str(uuid7()), project_id=api.project.id, created=utcnow())
    check = apply_spec(base, spec, api.version)
    if created or check != existing:
        await save_check(request, check)
    return _document(request, check, await _state(request, check), False, http_status=201 if created else 200)


@api_view(write=False)
async def get_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    return _document(request, check, await _state(request, check), api.readonly)


@api_view(write=True)
async def update_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    st = await _state(request, check)
    try:
        spec = validate(api.json, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        return error(str(exc))
    updated = apply_spec(check, spec, api.version)
    if updated != check:
        await save_check(request, updated)
    return _document(request, updated, st, False)


@api_view(write=True)
async def delete_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    st = await _state(request, check)
    deleted = CheckDeleted(event_id=uuid7(), check_id=check.id, project_id=check.project_id)
    await save(request, deleted)
    return _document(request, check, st, False)


@api_view(write=True)
async def pause(request: web.Request, api: ApiRequest) -> web.Response:
    return await _pause_or_resume(request, own_check(request, api), pausing=True)


@api_view(write=True)
async def resume(request: web.Request, api: ApiRequest) -> web.Response:
    return await _pause_or_resume(request, own_check(request, api), pausing=False)


async def _pause_or_resume(request: web.Request, check: CheckConfig, pausing: bool) -> web.Response:
    st = await _state(request, check)
    if not pausing and not (check.paused or (st and st["status"] == "paused")):
        return web.Response(text="check is not paused", status=409, content_type="text/plain")
    control = (Paused if pausing else Resumed)(event_id=uuid7(), check_id=check.id, project_id=check.project_id,
                                               at=utcnow())
    # The control event on the pings topic is ordered with the check's pings for
    # the monitor; the registry flag lets every edge apply manual_resume.
    await request.app[EVENT_LOG].produce(TOPIC_PINGS, encode(control), key=check.id.encode())
    stamp = {"paused_at" if pausing else "resumed_at": control.at}
    check = msgspec.structs.replace(check, paused=pausing, **stamp)
    await save_check(request, check)
    return _document(request, check, after_pause(st) if pausing else after_resume(st), False)


@api_view(write=True)
async def check_pings(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    rows = await state.pings(request, check.id, PING_LOG_LIMIT)
    base = f"{request.app[CONFIG].public_url}/api/v3/checks/{check.id}/pings"
    return web.json_response({"pings": [ping_document(row, base) for row in rows]})


@api_view(write=True)
async def ping_body(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    body = await state.ping_body(request, check.id, int(request.match_info["n"]))
    if not body:
        return error("not found", 404)
    return web.Response(body=body, content_type="text/plain")


@api_view(write=False)
async def check_flips(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    start, end, seconds = flips_window(request.query)
    since = datetime.fromtimestamp(start, timezone.utc) if start is not None else None
    until = datetime.fromtimestamp(end, timezone.utc) if end is not None else None
    if seconds is not None:
        threshold = datetime.fromtimestamp(utcnow().timestamp() - seconds, timezone.utc)
        since = max(since, threshold) if since else threshold
    rows = await state.flips(request, check.id, since, until)
    return web.json_response({"flips": [{"timestamp": isostring(r["at"]), "up": 1 if r["to_status"] == "up" else 0}
                                        for r in rows]})


@api_view(write=True)
async def channels(request: web.Request, api: ApiRequest) -> web.Response:
    return web.json_response({"channels": []})


def add_routes(app: web.Application) -> None:
    prefix = r"/api/v{v:[123]}"
    # Any method but POST lists the checks; the other "*" routes answer 405 to methods they lack.
    app.router.add_route("*", prefix + "/checks/", by_method({"POST": create_check}, otherwise=list_checks))
    app.router.add_route("*", prefix + "/checks/{code}",
                         by_method({"GET": get_check, "POST": update_check, "DELETE": delete_check}))
    app.router.add_route("*", prefix + "/checks/{code}/pause", by_method({"POST": pause}))
    app.router.add_route("*", prefix + "/checks/{code}/resume", by_method({"POST": resume}))
    app.router.add_get(prefix + "/checks/{code}/pings/", check_pings)
    app.router.add_get(prefix + r"/checks/{code}/pings/{n:\d{1,18}}/body", ping_body)
    app.router.add_get(prefix + "/checks/{code}/flips/", check_flips)
    app.router.add_get(prefix + "/channels/", channels)
