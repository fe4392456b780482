"""Healthchecks-compatible Management API (v1/v2/v3 paths, v3 behaviour; documents link to the
version they were asked under).

Writes become registry / control events on the log (answered after the durable
ack, then applied to this edge's registry at once so the caller reads its own
write); configuration is read from the registry, state (status, n_pings,
last_ping, pings, flips) from the projected tables in ClickHouse. Without a reachable read model an
answer that needs state is a 503 (ingest/state.py), read before any write so nothing is half done.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from aiohttp import web

from checks.document import after_pause, after_resume, check_document, isostring, ping_document, with_registry
from checks.extensions import dependency_error
from checks.channels import channel_document, channel_from_spec
from checks.spec import ChannelError, SpecError, apply_spec, find_unique, may_create, resolve_channels, validate
import runtime.registry
from schemas.events import (
    TOPIC_PINGS,
    CheckConfig,
    CheckDeleted,
    Paused,
    Resumed,
    encode,
    utcnow,
    uuid7,
)

from . import badges, state
from .keys import CONFIG, EVENT_LOG, REGISTRY
from .params import BadParam, flips_window
from .views import ApiError, ApiRequest, api_view, cors, empty, error, own_check, save, save_check

PING_LOG_LIMIT = 100


def _live(request: web.Request, check: CheckConfig) -> CheckConfig:
    """``check`` with only the channels that exist (what its document lists)."""
    live = request.app[REGISTRY].check_channels(check)
    return check if live == check.channels else msgspec.structs.replace(check, channels=live)


def _document(request: web.Request, api: ApiRequest, check: CheckConfig, st: dict | None,
              status: str | None = None, http_status: int = 200) -> web.Response:
    doc = check_document(_live(request, check), st, api.readonly, request.app[CONFIG].public_url, status,
                         v=api.version)
    return web.json_response(doc, status=http_status)


def _spec(request: web.Request, api: ApiRequest) -> dict:
    """The request's validated spec; 400 with upstream's message when it, or its channels, is bad."""
    try:
        spec = validate(api.json, request.app[CONFIG].min_timeout_s)
    except SpecError as exc:
        raise ApiError(str(exc)) from None
    return spec


def _apply(request: web.Request, check: CheckConfig, spec: dict, api: ApiRequest) -> CheckConfig:
    try:
        updated = apply_spec(check, spec, api.version)
    except SpecError as exc:
        raise ApiError(str(exc)) from None
    if "depends_on" in spec and updated.depends_on:
        checks = {c.id: c for c in request.app[REGISTRY].project_checks(api.project.id)}
        checks[updated.id] = updated
        problem = dependency_error(updated, checks)
        if problem is not None:
            raise ApiError(str(SpecError(problem)))
    return updated


def _check_channels(request: web.Request, api: ApiRequest, spec: dict) -> dict:
    """``spec`` with its ``channels`` resolved to channel ids; 400 with upstream's message for an
    unknown or ambiguous one. Upstream validates them when it applies the spec, after finding a
    unique match."""
    if "channels" not in spec:
        return spec
    try:
        ids = resolve_channels(spec["channels"], request.app[REGISTRY].project_channels(api.project.id))
    except ChannelError as exc:
        raise ApiError(str(exc)) from None
    return dict(spec, channels=ids)


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
    return web.json_response({"checks": [check_document(_live(request, c), states.get(c.id), api.readonly, public_url,
                                                        v=api.version)
                                         for c in checks]})


@api_view(write=True)
async def create_check(request: web.Request, api: ApiRequest) -> web.Response:
    """Create a check, or with ``unique`` update the project's matching one (200 instead of 201)."""
    spec = _spec(request, api)
    registry = request.app[REGISTRY]
    existing = find_unique(registry.project_checks(api.project.id), spec)
    created = existing is None
    if created and not may_create(registry.project_check_count(api.project.id), request.app[CONFIG].check_limit):
        raise ApiError(None, 403)  # upstream's HttpResponseForbidden() when the check limit is reached
    spec = _check_channels(request, api, spec)
    # A new check has no projected state; an existing one's is read before anything is written, so
    # a read model that cannot answer (503) leaves the check as it was.
    st = None if created else await _state(request, existing)
    base = existing or CheckConfig(id=str(uuid7()), project_id=api.project.id, created=utcnow())
    check = _apply(request, base, spec, api)
    if created or check != existing:
        await save_check(request, check)
    return _document(request, api, check, st, http_status=201 if created else 200)


@api_view(write=False)
async def get_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    return _document(request, api, check, await _state(request, check))


@api_view(write=True)
async def update_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    st = await _state(request, check)
    spec = _check_channels(request, api, _spec(request, api))
    updated = _apply(request, check, spec, api)
    if updated != check:
        await save_check(request, updated)
    return _document(request, api, updated, st)


@api_view(write=True)
async def delete_check(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    st = await _state(request, check)
    deleted = CheckDeleted(event_id=uuid7(), check_id=check.id, project_id=check.project_id)
    await save(request, deleted)
    return _document(request, api, check, st)


@api_view(write=True)
async def pause(request: web.Request, api: ApiRequest) -> web.Response:
    return await _pause_or_resume(request, api, own_check(request, api), pausing=True)


@api_view(write=True)
async def resume(request: web.Request, api: ApiRequest) -> web.Response:
    return await _pause_or_resume(request, api, own_check(request, api), pausing=False)


async def _pause_or_resume(request: web.Request, api: ApiRequest, check: CheckConfig, pausing: bool) -> web.Response:
    st = with_registry(check, await _state(request, check))  # an earlier pause or resume may not be projected yet
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
    return _document(request, api, check, after_pause(st) if pausing else after_resume(st))


@api_view(write=True)
async def check_pings(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api)
    rows = await state.pings(request, check.id, PING_LOG_LIMIT)
    base = f"{request.app[CONFIG].public_url}/api/v{api.version}/checks/{check.id}/pings"
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
    try:
        start, end, seconds = flips_window(request.query)
    except BadParam:
        raise ApiError(None) from None  # upstream's HttpResponseBadRequest()
    since = datetime.fromtimestamp(start, timezone.utc) if start is not None else None
    until = datetime.fromtimestamp(end, timezone.utc) if end is not None else None
    if seconds:  # as upstream, seconds=0 is no limit
        threshold = datetime.fromtimestamp(utcnow().timestamp() - seconds, timezone.utc)
        since = max(since, threshold) if since else threshold
    rows = await state.flips(request, check.id, since, until)
    return web.json_response({"flips": [{"timestamp": isostring(r["at"]), "up": 1 if r["to_status"] == "up" else 0}
                                        for r in rows]})


@api_view(write=True)
async def check_notifications(request: web.Request, api: ApiRequest) -> web.Response:
    """pingstream's extension: how the check's alerts went (time, channel, event, status, attempts,
    last error), newest first."""
    check = own_check(request, api)
    channels = request.app[REGISTRY].channels
    rows = await state.notifications(request, check.id, PING_LOG_LIMIT)
    return web.json_response({"notifications": [
        {"date": isostring(r["at"]), "finished": isostring(r["finished"]), "alert_id": r["alert_id"],
         "channel": r["channel_id"], "channel_name": channels[r["channel_id"]].name if r["channel_id"] in channels else None,
         "kind": r["channel_kind"], "event": r["event"], "status": r["status"], "attempts": r["attempts"],
         "error": r["error"] or None}
        for r in rows]})


@api_view(write=True)
async def list_channels(request: web.Request, api: ApiRequest) -> web.Response:
    channels = request.app[REGISTRY].project_channels(api.project.id)
    return web.json_response({"channels": [channel_document(c) for c in channels]})


@api_view(write=True)
async def create_channel(request: web.Request, api: ApiRequest) -> web.Response:
    """pingstream's extension (upstream adds integrations in its web UI): a new channel, assigned to
    every check of the project as upstream assigns a new integration. It is alerted about
    transitions from now on, never about earlier ones. A webhook's signing secret is in this
    answer only."""
    try:
        channel = channel_from_spec(api.json, id=str(uuid7()), project_id=api.project.id, created=utcnow(),
                                    allow_private=request.app[CONFIG].webhook_allow_private)
    except SpecError as exc:
        raise ApiError(str(exc)) from None
    await runtime.registry.add_channel(request.app[EVENT_LOG], request.app[REGISTRY], channel)
    doc = dict(channel_document(channel), events=list(channel.events))
    if channel.secret:
        doc["secret"] = channel.secret
    return web.json_response(doc, status=201)


@api_view(write=True)
async def delete_channel(request: web.Request, api: ApiRequest) -> web.Response:
    channel = request.app[REGISTRY].channels.get(request.match_info["channel"])
    if channel is None:
        raise ApiError(None, 404)
    if channel.project_id != api.project.id:
        raise ApiError(None, 403)
    await runtime.registry.remove_channel(request.app[EVENT_LOG], request.app[REGISTRY], channel)
    return web.json_response(channel_document(channel))


async def status(request: web.Request) -> web.Response:
    """Upstream's liveness probe: any method, no key."""
    return web.Response(text="OK")


async def metrics(request: web.Request) -> web.Response:
    """Upstream's internal metrics need its METRICS_KEY, which pingstream has not (its metrics are
    at /metrics): always 403, as upstream without the setting."""
    return empty(403)


async def append_slash(request: web.Request) -> web.Response:
    """Django's APPEND_SLASH: a known path but for its trailing slash is a permanent redirect."""
    path, sep, query = request.raw_path.partition("?")  # as received: percent-escapes stay escaped
    location = path + "/" + sep + query
    return web.Response(status=301, headers={"Location": location}, text="")


# Route patterns of upstream's URL converters: a lower-case uuid, or a 40-character unique key.
_UUID = "{code:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}"
_SHA1 = "{code:[A-Za-z0-9]{40}}"


def add_routes(app: web.Application) -> None:
    prefix = r"/api/v{v:[123]}"
    checks = prefix + "/checks/"
    routes = {
        checks: {"GET": list_checks, "POST": create_check},
        checks + _UUID: {"GET": get_check, "POST": update_check, "DELETE": delete_check},
        checks + _SHA1: {"GET": get_check},
        checks + _UUID + "/pause": {"POST": pause},
        checks + _UUID + "/resume": {"POST": resume},
        checks + _UUID + "/pings/": {"GET": check_pings},
        checks + _UUID + r"/pings/{n:\d{1,18}}/body": {"GET": ping_body},
        checks + _UUID + "/flips/": {"GET": check_flips},
        checks + _UUID + "/notifications/": {"GET": check_notifications},
        checks + _SHA1 + "/flips/": {"GET": check_flips},
        prefix + "/channels/": {"GET": list_channels, "POST": create_channel},
        prefix + "/channels/" + _UUID.replace("code", "channel"): {"DELETE": delete_channel},
        prefix + "/badges/": {"GET": badges.list_badges},
    }
    for path, views in routes.items():
        app.router.add_route("*", path, cors(views))
    app.router.add_route("*", prefix + "/status/", status)
    app.router.add_route("*", prefix + "/metrics/", metrics)
    for path in (checks, checks + _UUID + "/pings/", checks + _UUID + "/flips/", checks + _SHA1 + "/flips/",
                 checks + _UUID + "/notifications/",
                 prefix + "/channels/", prefix + "/badges/", prefix + "/status/", prefix + "/metrics/"):
        app.router.add_route("*", path.removesuffix("/"), append_slash)
