"""The shell every API view goes through: the key, the check named in the URL, short JSON errors.

A view is written as ``view(request, api)`` and wrapped once, as Healthchecks wraps its views in
``@authorize`` / ``@authorize_read``:

- ``@api_view(write=...)``: the Management and Analyst APIs' ``X-Api-Key`` (or ``api_key`` in
  the JSON body, which is parsed first, as upstream);
- ``@bearer_view(write=...)``: the Overwatch endpoints' ``Authorization: Bearer <key>``.

Inside a view, ``raise ApiError(message, status)`` answers ``{"error": message}``; so do
``own_check`` (404/403) and a log that cannot take a write (503 ``service unavailable``).
"""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

from aiohttp import web

from checks.rules import UUID
from checks.spec import UNIQUE_KEY, load_json, unique_key
import runtime.registry
from runtime.eventlog.base import LogUnavailable
from schemas.events import CheckConfig, Project

from .keys import CLICKHOUSE, EVENT_LOG, REGISTRY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ApiError(Exception):
    """An answer ``{"error": message}`` with ``status``, raised from anywhere inside a view."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ApiRequest:
    """The parsed JSON body, the project the key belongs to, and whether the key is read-only."""

    __slots__ = ("json", "project", "readonly", "version")

    def __init__(self, json_body: dict, project: Project, readonly: bool, version: int) -> None:
        self.json = json_body
        self.project = project
        self.readonly = readonly
        self.version = version


async def _by_api_key(request: web.Request, write: bool) -> ApiRequest:
    """Parse the body, then find the project by X-Api-Key (or ``api_key`` in the body), as upstream."""
    body: dict = {}
    if request.body_exists:
        raw = await request.read()
        if raw:
            try:
                body = load_json(raw)
            except ValueError as exc:
                raise ApiError(str(exc)) from None
            if not isinstance(body, dict):
                raise ApiError("json validation error: value is not an object")
    api_key = request.headers.get("X-Api-Key")
    if api_key is None:
        api_key = str(body.get("api_key", ""))
    if len(api_key) != 32:
        raise ApiError("missing api key", 401)
    # Keys are ASCII; a header of other bytes (or a lone surrogate in JSON) matches none.
    found = request.app[REGISTRY].project_by_api_key(api_key) if api_key.isascii() else None
    if found is None or (write and found[1]):
        raise ApiError("wrong api key", 401)
    project, readonly = found
    return ApiRequest(body, project, readonly, int(request.match_info.get("v", "3")))


async def _by_bearer(request: web.Request, write: bool) -> ApiRequest:
    """The project of ``Authorization: Bearer <key>``; the body is left to the view."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and token.strip() and token.isascii():
        found = request.app[REGISTRY].project_by_api_key(token.strip())
    if found is None or (write and found[1]):
        raise ApiError("unauthorized", 401)
    project, readonly = found
    return ApiRequest({}, project, readonly, 1)


def _view(authenticate: Callable[[web.Request], Awaitable[ApiRequest]], clickhouse: bool = False):
    def decorator(fn: Callable[[web.Request, ApiRequest], Awaitable[web.StreamResponse]]) -> Handler:
        @functools.wraps(fn)
        async def view(request: web.Request) -> web.StreamResponse:
            try:
                api = await authenticate(request)
                if clickhouse and request.app.get(CLICKHOUSE) is None:
                    raise ApiError("analytics need ClickHouse", 503)
                return await fn(request, api)
            except ApiError as exc:
                return error(exc.message, exc.status)
            except LogUnavailable:  # the log could not take a write: the client retries later
                return error("service unavailable", 503)

        return view

    return decorator


def api_view(write: bool, clickhouse: bool = False):
    """A view for ``X-Api-Key`` holders; ``write`` refuses read-only keys, ``clickhouse`` answers
    503 on an edge run without the read model."""
    return _view(functools.partial(_by_api_key, write=write), clickhouse)


def bearer_view(write: bool):
    """A view for ``Authorization: Bearer`` holders; ``write`` refuses read-only keys."""
    return _view(functools.partial(_by_bearer, write=write))


def by_method(views: dict[str, Handler], otherwise: Handler | None = None) -> Handler:
    """One route, a view per method; any other method goes to ``otherwise``, or is a 405
    (answered before any key is looked at)."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        view = views.get(request.method, otherwise)
        if view is None:
            return error("method not allowed", 405)
        return await view(request)

    return dispatch


def own_check(request: web.Request, api: ApiRequest, by_unique_key: bool = False) -> CheckConfig:
    """The check named by the URL's ``code``: its uuid, or (``by_unique_key``, for views that
    read-only keys use, which never see uuids) its unique key. 404 when there is none, 403
    when it is another project's."""
    code = request.match_info["code"]
    registry = request.app[REGISTRY]
    if by_unique_key and UNIQUE_KEY.match(code):
        check = next((c for c in registry.project_checks(api.project.id) if unique_key(c.id) == code), None)
        if check is None:
            raise ApiError("not found", 404)
        return check
    check = registry.checks.get(code) if UUID.match(code) else None
    if check is None:
        raise ApiError("not found", 404)
    if check.project_id != api.project.id:
        raise ApiError("forbidden", 403)
    return check


async def save(request: web.Request, event) -> None:
    """Log a registry event, then apply it to this edge's registry (runtime.registry.save)."""
    await runtime.registry.save(request.app[EVENT_LOG], request.app[REGISTRY], event)


async def save_check(request: web.Request, check: CheckConfig) -> None:
    """Log ``check``'s configuration, then apply it to this edge's registry."""
    await runtime.registry.save_check(request.app[EVENT_LOG], request.app[REGISTRY], check)
