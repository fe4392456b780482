"""Maintenance windows and snooze over the Management API (pingstream's extension, own endpoints):

- ``/api/v3/checks/<uuid>/windows/``: GET the check's windows, POST a new one
  (``{start, end}`` or ``{cron, duration, tz}``); ``.../windows/<id>``: DELETE one.
- ``/api/v3/checks/<uuid>/snooze``: POST ``{duration}``, a window from now.
- ``/api/v3/windows/``: the project's windows (every check's), GET / POST; ``/api/v3/windows/<id>``: DELETE.

Windows are configuration: saved with the check (or the project) as registry events, which
the monitor folds, so a replay holds the same notifications. One-off windows that have ended
are dropped on the next write.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from checks.spec import SpecError
from checks.windows import MAX_WINDOWS, expired, snooze, validate_window, window_document
from schemas.events import ProjectUpserted, Window, utcnow, uuid7

from .views import ApiError, ApiRequest, api_view, cors, own_check, save, save_check


def _listing(windows) -> web.Response:
    return web.json_response({"windows": [window_document(w) for w in windows]})


def _added(windows: tuple[Window, ...], make) -> tuple[tuple[Window, ...], Window]:
    now = utcnow()
    try:
        window = make(now)
    except SpecError as exc:
        raise ApiError(str(exc)) from None
    gone = expired(windows, now)
    kept = tuple(w for w in windows if w not in gone)
    if len(kept) >= MAX_WINDOWS:
        raise ApiError(f"too many windows (at most {MAX_WINDOWS})", 403)
    return kept + (window,), window


def _without(windows: tuple[Window, ...], window_id: str) -> tuple[tuple[Window, ...], Window]:
    found = next((w for w in windows if w.id == window_id), None)
    if found is None:
        raise ApiError(None, 404)
    return tuple(w for w in windows if w.id != window_id), found


@api_view(write=False)
async def check_windows(request: web.Request, api: ApiRequest) -> web.Response:
    return _listing(own_check(request, api).windows)


async def _save_check_windows(request: web.Request, api: ApiRequest, change) -> Window:
    check = own_check(request, api)
    windows, window = change(check.windows)
    await save_check(request, msgspec.structs.replace(check, windows=windows))
    return window


@api_view(write=True)
async def add_check_window(request: web.Request, api: ApiRequest) -> web.Response:
    window = await _save_check_windows(request, api, lambda ws: _added(ws, lambda now: validate_window(api.json, now)))
    return web.json_response(window_document(window), status=201)


@api_view(write=True)
async def snooze_check(request: web.Request, api: ApiRequest) -> web.Response:
    window = await _save_check_windows(request, api, lambda ws: _added(ws, lambda now: snooze(api.json, now)))
    return web.json_response(window_document(window), status=201)


@api_view(write=True)
async def delete_check_window(request: web.Request, api: ApiRequest) -> web.Response:
    window_id = request.match_info["window"]
    window = await _save_check_windows(request, api, lambda ws: _without(ws, window_id))
    return web.json_response(window_document(window))


@api_view(write=False)
async def project_windows(request: web.Request, api: ApiRequest) -> web.Response:
    return _listing(api.project.windows)


async def _save_project_windows(request: web.Request, api: ApiRequest, change) -> Window:
    windows, window = change(api.project.windows)
    project = msgspec.structs.replace(api.project, windows=windows)
    await save(request, ProjectUpserted(event_id=uuid7(), project=project))
    return window


@api_view(write=True)
async def add_project_window(request: web.Request, api: ApiRequest) -> web.Response:
    window = await _save_project_windows(request, api, lambda ws: _added(ws, lambda now: validate_window(api.json, now)))
    return web.json_response(window_document(window), status=201)


@api_view(write=True)
async def delete_project_window(request: web.Request, api: ApiRequest) -> web.Response:
    window_id = request.match_info["window"]
    window = await _save_project_windows(request, api, lambda ws: _without(ws, window_id))
    return web.json_response(window_document(window))


_UUID = "{code:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}"
_WINDOW = "{window:[0-9a-f-]{36}}"


def add_routes(app: web.Application) -> None:
    check = "/api/v3/checks/" + _UUID
    routes = {
        check + "/windows/": {"GET": check_windows, "POST": add_check_window},
        check + "/windows/" + _WINDOW: {"DELETE": delete_check_window},
        check + "/snooze": {"POST": snooze_check},
        "/api/v3/windows/": {"GET": project_windows, "POST": add_project_window},
        "/api/v3/windows/" + _WINDOW: {"DELETE": delete_project_window},
    }
    for path, views in routes.items():
        app.router.add_route("*", path, cors(views))
