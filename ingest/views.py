"""The shell every API view goes through: the key, the check named in the URL, short JSON errors.

A view is written as ``view(request, api)`` and wrapped once, as Healthchecks wraps its views in
``@authorize`` / ``@authorize_read``:

- ``@api_view(write=...)``: the Management and Analyst APIs' ``X-Api-Key``, or, without that
  header, ``api_key`` in the JSON body, as upstream;
- ``@bearer_view(write=...)``: the Overwatch endpoints' ``Authorization: Bearer <key>``.

A key in a header is looked at before any body is read: a wrong one is answered 401 at once,
whatever body is announced (upstream parses the body first, so a wrong key with a malformed body
is 401 here where it is 400 there). A body is read with ``read_body``: the ping path's time limit
(408) and the app's size limit (413, at once when the announced length is over it).

Inside a view, ``raise ApiError(message, status)`` answers ``{"error": message}``, and so does a
log that cannot take a write (503 ``service unavailable``) and a read model that cannot be read
(503 ``read model unavailable: ...``, ingest/state.py); ``own_check``'s 404/403 have empty
bodies, as Healthchecks' ``HttpResponseNotFound()`` / ``HttpResponseForbidden()``.

A Management API route is ``cors({method: view})``, Healthchecks' ``@cors(...)``: browsers may
call the API from any page, so every answer carries the CORS headers.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from typing import Awaitable, Callable

from aiohttp import web

from checks.rules import UUID
from checks.spec import UNIQUE_KEY, load_json, unique_key
import runtime.registry
from runtime.eventlog.base import LogUnavailable
from schemas.events import CheckConfig, Project

from . import pings
from .keys import EVENT_LOG, REGISTRY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(message: str | None, status: int = 400) -> web.Response:
    """``{"error": message}``, or an empty body when there is no message."""
    if message is None:
        return empty(status)
    return web.json_response({"error": message}, status=status)


def empty(status: int) -> web.Response:
    return web.Response(status=status, text="")


class ApiError(Exception):
    """An answer ``{"error": message}`` (empty when message is None) with ``status``, raised from
    anywhere inside a view."""

    def __init__(self, message: str | None, status: int = 400) -> None:
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


async def read_body(request: web.Request) -> bytes:
    """The request's body, held to the limits a ping's body has: all of it within
    ``pings.BODY_TIMEOUT_S`` (else 408), at most the app's ``client_max_size`` (else 413, without
    reading it when the announced length says so)."""
    if (request.content_length or 0) > request.client_max_size:
        raise ApiError("request body too large", 413)
    try:
        async with asyncio.timeout(pings.BODY_TIMEOUT_S):  # a trickling body (slowloris) is cut off
            return await request.read()
    except TimeoutError:
        raise ApiError("request timeout", 408) from None
    except web.HTTPRequestEntityTooLarge:  # no length announced, more than the limit sent
        raise ApiError("request body too large", 413) from None


def _project_by_api_key(request: web.Request, api_key: str, write: bool) -> tuple[Project, bool]:
    if len(api_key) != 32:
        raise ApiError("missing api key", 401)
    # Keys are ASCII; a header of other bytes (or a lone surrogate in JSON) matches none.
    found = request.app[REGISTRY].project_by_api_key(api_key) if api_key.isascii() else None
    if found is None or (write and found[1]):
        raise ApiError("wrong api key", 401)
    return found


async def _by_api_key(request: web.Request, write: bool) -> ApiRequest:
    """The project of X-Api-Key, found before a POST's body is read; without that header, of
    ``api_key`` in that body, parsed first, as upstream. Other methods' bodies are not read."""
    api_key = request.headers.get("X-Api-Key")
    found = _project_by_api_key(request, api_key, write) if api_key is not None else None
    body: dict = {}
    if request.method == "POST" and request.body_exists:
        raw = await read_body(request)
        if raw:
            try:
                body = load_json(raw)
            except ValueError as exc:
                raise ApiError(str(exc)) from None
            if not isinstance(body, dict):
                raise ApiError("json validation error: value is not an object")
    if found is None:
        found = _project_by_api_key(request, str(body.get("api_key", "")), write)
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


def _view(authenticate: Callable[[web.Request], Awaitable[ApiRequest]]):
    def decorator(fn: Callable[[web.Request, ApiRequest], Awaitable[web.StreamResponse]]) -> Handler:
        @functools.wraps(fn)
        async def view(request: web.Request) -> web.StreamResponse:
            try:
                api = await authenticate(request)
                return await fn(request, api)
            except ApiError as exc:
                return error(exc.message, exc.status)
            except LogUnavailable:  # the log could not take a write: the client retries later
                return error("service unavailable", 503)

        return view

    return decorator


def api_view(write: bool):
    """A view for ``X-Api-Key`` holders; ``write`` refuses read-only keys."""
    return _view(functools.partial(_by_api_key, write=write))


def bearer_view(write: bool):
    """A view for ``Authorization: Bearer`` holders; ``write`` refuses read-only keys."""
    return _view(functools.partial(_by_bearer, write=write))


def cors(views: dict[str, Handler]) -> Handler:
    """One route, a view per method, as Healthchecks' ``@cors(*methods)``: a preflight
    (``OPTIONS``) is a 204 and any other method (HEAD too) an empty 405, both answered before
    any key is looked at; every answer, errors included, lets a page of any origin send
    ``X-Api-Key``."""
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Headers": "X-Api-Key",
        "Access-Control-Allow-Methods": ", ".join(sorted({*views, "OPTIONS"})),
        "Access-Control-Max-Age": "600",
    }

    async def dispatch(request: web.Request) -> web.StreamResponse:
        view = views.get(request.method)
        try:
            if request.method == "OPTIONS":
                response = empty(204)
            elif view is None:
                response = empty(405)
            else:
                response = await view(request)
        except web.HTTPException as exc:  # raised by aiohttp inside a view (a body over the size limit)
            exc.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return dispatch


def own_check(request: web.Request, api: ApiRequest, by_unique_key: bool = False) -> CheckConfig:
    """The check named by the URL's ``code``: its uuid, or (``by_unique_key``, for views that
    read-only keys use, which never see uuids) its unique key. 404 when there is none, 403
    when it is another project's, both with empty bodies."""
    code = request.match_info["code"]
    registry = request.app[REGISTRY]
    if by_unique_key and UNIQUE_KEY.match(code):
        given = code.encode()  # derived from a uuid, which is a ping's secret: compared in constant time
        check = next((c for c in registry.project_checks(api.project.id)
                      if hmac.compare_digest(unique_key(c.id).encode(), given)), None)
        if check is None:
            raise ApiError(None, 404)
        return check
    check = registry.checks.get(code) if UUID.match(code) else None
    if check is None:
        raise ApiError(None, 404)
    if check.project_id != api.project.id:
        raise ApiError(None, 403)
    return check


async def save(request: web.Request, event) -> None:
    """Log a registry event, then apply it to this edge's registry (runtime.registry.save)."""
    await runtime.registry.save(request.app[EVENT_LOG], request.app[REGISTRY], event)


async def save_check(request: web.Request, check: CheckConfig) -> None:
    """Log ``check``'s configuration, then apply it to this edge's registry."""
    await runtime.registry.save_check(request.app[EVENT_LOG], request.app[REGISTRY], check)
