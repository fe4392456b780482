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

from runtime.eventlog.base import LogUnavailable
from runtime.registry import save, save_check
from schemas.events import (
    TOPIC_PINGS,
    CheckConfig,
    CheckDeleted,
    Paused,
    Project,
    Resumed,
    encode,
    utcnow,
    uuid7,
)

from checks.document import check_document, isostring, ping_document
from checks.rules import UUID
from checks.spec import UNIQUE_KEY, SpecError, apply_spec, find_unique, load_json, unique_key, validate

from . import state
from .keys import CONFIG, EVENT_LOG, REGISTRY

PING_LOG_LIMIT = 100


def error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


# --- request parsing and auth ----------------------------------------------


class ApiRequest:
    """The parsed JSON body, the project the key belongs to, and whether the key is read-only."""

    __slots__ = ("json", "project", "readonly", "version")

    def __init__(self, json_body: dict, project: Project, readonly: bool, version: int) -> None:
        self.json = json_body
        self.project = project
        self.readonly = readonly
        self.version = version


async def authorize(request: web.Request, write: bool) -> ApiRequest | web.Response:
    """Parse the body, then find the project by X-Api-Key (or ``api_key`` in the body), as upstream."""
    body: dict = {}
    if request.body_exists:
        raw = await request.read()
        if raw:
            try:
                body = load_json(raw)
            except ValueError as exc:
                return error(str(exc))
            if not isinstance(body, dict):
                return error("json validation error: value is not an object")
    api_key = request.headers.get("X-Api-Key")
    if api_key is None:
        api_key = str(body.get("api_key", ""))
    if len(api_key) != 32:
        return error("missing api key", 401)
    # Keys are ASCII; a header of other bytes (or a lone surrogate in JSON) matches none.
    found = request.app[REGISTRY].project_by_api_key(api_key) if api_key.isascii() else None
    if found is None or (write and found[1]):
        return error("wrong api key", 401)
    project, readonly = found
    version = int(request.match_info.get("v", "3"))
    return ApiRequest(body, project, readonly, version)


def _own_check(request: web.Request, api: ApiRequest, code: str) -> CheckConfig | web.Response:
    check = request.app[REGISTRY].checks.get(code) if UUID.match(code) else None
    if check is None:
        return error("not found", 404)
    if check.project_id != api.project.id:
        return error("forbidden", 403)
    return check


# --- serialisation ------------------------------------------------------------


def check_dict(request: web.Request, check: CheckConfig, st: dict | None, readonly: bool, status: str | None = None) -> dict:
    return check_document(check, st, readonly, request.app[CONFIG].public_url, status)


# --- writes -------------------------------------------------------------------


async def _produce(request: web.Request, topic: str, event, key: str) -> None:
    await request.app[EVENT_LOG].produce(topic, encode(event), key=key.encode())


async def _save(request: web.Request, check: CheckConfig) -> None:
    await save_check(request.app[EVENT_LOG], request.app[REGISTRY], check)


async def checks_collection(request: web.Request) -> web.Response:
    if request.method == "POST":
        return await create_check(request)
    api = await authorize(request, write=False)
    if isinstance(api, web.Response):
        return api
    checks = request.app[REGISTRY].project_checks(api.project.id)
    tags = set(request.query.getall("tag", []))
    if tags:
        checks = [c for c in checks if tags <= set(c.tags.split())]
    slug = request.query.get("slug")
    if slug:
        checks = [c for c in checks if c.slug == slug]
    states = await state.check_states(request, [c.id for c in checks])
    checks.sort(key=lambda c: (c.created, c.id))
    return web.json_response(
        {"checks": [check_dict(request, c, states.get(c.id), api.readonly) for c in checks]}
    )


async def create_check(request: web.Request) -> web.Response:
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    try:
        spec = validate(api.json, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        return error(str(exc))
    existing = find_unique(request.app[REGISTRY].project_checks(api.project.id), spec)
    created = existing is None
    base = existing or CheckConfig(id=str(uuid7()), project_id=api.project.id, created=utcnow())
    check = apply_spec(base, spec, api.version)
    try:
        if created or check != existing:
            await _save(request, check)
    except LogUnavailable:
        return error("service unavailable", 503)
    st = (await state.check_states(request, [check.id])).get(check.id)
    return web.json_response(check_dict(request, check, st, False), status=201 if created else 200)


async def single_check(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if request.method == "GET":
        api = await authorize(request, write=False)
        if isinstance(api, web.Response):
            return api
        if UNIQUE_KEY.match(code):
            for check in request.app[REGISTRY].project_checks(api.project.id):
                if unique_key(check.id) == code:
                    st = (await state.check_states(request, [check.id])).get(check.id)
                    return web.json_response(check_dict(request, check, st, api.readonly))
            return error("not found", 404)
        check = _own_check(request, api, code)
        if isinstance(check, web.Response):
            return check
        st = (await state.check_states(request, [check.id])).get(check.id)
        return web.json_response(check_dict(request, check, st, api.readonly))
    if request.method not in ("POST", "DELETE"):
        return error("method not allowed", 405)
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    check = _own_check(request, api, code)
    if isinstance(check, web.Response):
        return check
    st = (await state.check_states(request, [check.id])).get(check.id)
    try:
        if request.method == "DELETE":
            deleted = CheckDeleted(event_id=uuid7(), check_id=check.id, project_id=check.project_id)
            await save(request.app[EVENT_LOG], request.app[REGISTRY], deleted)
            return web.json_response(check_dict(request, check, st, False))
        try:
            spec = validate(api.json, request.app[CONFIG].min_timeout_s)
        except SpecError as exc:
            return error(str(exc))
        updated = apply_spec(check, spec, api.version)
        if updated != check:
            await _save(request, updated)
    except LogUnavailable:
        return error("service unavailable", 503)
    return web.json_response(check_dict(request, updated, st, False))


async def pause(request: web.Request) -> web.Response:
    return await _pause_or_resume(request, pausing=True)


async def resume(request: web.Request) -> web.Response:
    return await _pause_or_resume(request, pausing=False)


async def _pause_or_resume(request: web.Request, pausing: bool) -> web.Response:
    if request.method != "POST":
        return error("method not allowed", 405)
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    check = _own_check(request, api, request.match_info["code"])
    if isinstance(check, web.Response):
        return check
    st = (await state.check_states(request, [check.id])).get(check.id)
    if not pausing and not (check.paused or (st and st["status"] == "paused")):
        return web.Response(text="check is not paused", status=409, content_type="text/plain")
    now = utcnow()
    control = Paused if pausing else Resumed
    try:
        # The control event on the pings topic is ordered with the check's pings for
        # the monitor; the registry flag lets every edge apply manual_resume.
        await _produce(request, TOPIC_PINGS, control(event_id=uuid7(), check_id=check.id, project_id=check.project_id, at=now), check.id)
        check = msgspec.structs.replace(check, paused=pausing)
        await _save(request, check)
    except LogUnavailable:
        return error("service unavailable", 503)
    if not pausing:
        st = None  # resume clears last_ping and last_start, as upstream
    return web.json_response(check_dict(request, check, st, False, status="paused" if pausing else "new"))


async def check_pings(request: web.Request) -> web.Response:
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    check = _own_check(request, api, request.match_info["code"])
    if isinstance(check, web.Response):
        return check
    rows = await state.pings(request, check.id, PING_LOG_LIMIT)
    base = f"{request.app[CONFIG].public_url}/api/v3/checks/{check.id}/pings"
    out = [ping_document(row, base) for row in rows]
    return web.json_response({"pings": out})


async def ping_body(request: web.Request) -> web.Response:
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    check = _own_check(request, api, request.match_info["code"])
    if isinstance(check, web.Response):
        return check
    n = int(request.match_info["n"])
    body = await state.ping_body(request, check.id, n)
    if not body:
        return error("not found", 404)
    return web.Response(body=body, content_type="text/plain")


# Upstream's FlipsFiltersForm bounds: timestamps up to 10,000,000,000 (year 2286), at most a year of seconds.
_FLIPS_PARAMS = {"start": 10_000_000_000, "end": 10_000_000_000, "seconds": 31_536_000}


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) > _FLIPS_PARAMS[name]:
        raise ValueError(name)
    return int(raw)


async def check_flips(request: web.Request) -> web.Response:
    api = await authorize(request, write=False)
    if isinstance(api, web.Response):
        return api
    code = request.match_info["code"]
    check = None
    if UNIQUE_KEY.match(code):
        check = next((c for c in request.app[REGISTRY].project_checks(api.project.id) if unique_key(c.id) == code), None)
        if check is None:
            return error("not found", 404)
    else:
        check = _own_check(request, api, code)
        if isinstance(check, web.Response):
            return check
    try:
        start, end, seconds = (_int_param(request, n) for n in _FLIPS_PARAMS)
    except ValueError as exc:
        return error(f"invalid {exc.args[0]}")
    since = datetime.fromtimestamp(start, timezone.utc) if start is not None else None
    until = datetime.fromtimestamp(end, timezone.utc) if end is not None else None
    if seconds is not None:
        threshold = datetime.fromtimestamp(utcnow().timestamp() - seconds, timezone.utc)
        since = max(since, threshold) if since else threshold
    rows = await state.flips(request, check.id, since, until)
    return web.json_response({"flips": [{"timestamp": isostring(r["at"]), "up": 1 if r["to_status"] == "up" else 0} for r in rows]})


async def channels(request: web.Request) -> web.Response:
    api = await authorize(request, write=True)
    if isinstance(api, web.Response):
        return api
    return web.json_response({"channels": []})


def add_routes(app: web.Application) -> None:
    prefix = r"/api/v{v:[123]}"
    app.router.add_route("*", prefix + "/checks/", checks_collection)
    app.router.add_route("*", prefix + "/checks/{code}", single_check)
    app.router.add_route("*", prefix + "/checks/{code}/pause", pause)
    app.router.add_route("*", prefix + "/checks/{code}/resume", resume)
    app.router.add_get(prefix + "/checks/{code}/pings/", check_pings)
    app.router.add_get(prefix + r"/checks/{code}/pings/{n:\d{1,18}}/body", ping_body)
    app.router.add_get(prefix + "/checks/{code}/flips/", check_flips)
    app.router.add_get(prefix + "/channels/", channels)
