"""The Pinging API: ``/ping/<uuid>[/start|/fail|/log|/<exit-status>]`` and the slug forms.

Wire behaviour follows Healthchecks' ``hc/api/urls.py`` and ``hc/api/views.py``:
the route first (checks/rules.py: ``route``), then, on the slug route, an upper-case
slug (400 ``invalid url format``), then the check (404 ``not found``, 409 ``ambiguous
slug``), then the exit status (400 ``invalid url format``), then ``rid`` (400
``invalid uuid format``), then our ``Idempotency-Key`` (400 ``idempotency key too long``,
``invalid idempotency key``; see checks/idempotency.py). Answers of Healthchecks' ``ping`` view (everything from
the check lookup of the uuid route on) carry its never_cache headers; the slug
route's own refusals and the routing 404 do not.
A ping is answered ``OK`` only once the event log has durably acknowledged
its ``PingEvent``; when the log cannot, the answer is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import NamedTuple

import msgspec
from aiohttp import web

from checks.idempotency import HEADER as IDEMPOTENCY_KEY
from checks.idempotency import BadKey, parse_key, ping_event_id
from checks.rules import (
    CANONICAL_UUID,
    MAX_EXIT_STATUS,
    checkin_kind,
    client_addr,
    ping_kind,
    resumes,
    route,
    user_agent,
)
from checks.spec import SpecError, may_create, provision_spec
from runtime import metrics
from runtime.eventlog.base import LogUnavailable
from runtime.registry import Registry, save_check
from schemas.events import TOPIC_PINGS, CheckConfig, PingEvent, encode, stable_id, utcnow, uuid7

from .keys import CONFIG, EVENT_LOG, LIMITERS, REGISTRY, Limiters

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
BODY_TIMEOUT_S = 30.0
UNREAD_BODY = web.RequestKey("unread_body", bool)  # the rest of the body was left on the socket


def _text(body: str, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", headers=headers)


Reply = tuple[int, str, dict]  # status, plain-text body, extra headers


def _reply(status: int, text: str, headers: dict | None = None) -> web.Response:
    """A (status, text[, headers]) answer of the shared ping logic as an aiohttp response."""
    return _text(text, status, headers)


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current second as an HTTP date, formatted once a second, not per ping."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def never_cache() -> dict:
    """The headers of Django's never_cache, which wraps Healthchecks' ping view: on all its answers."""
    return {"Cache-Control": "max-age=0, no-cache, no-store, must-revalidate, private", "Expires": http_date()}


def response_headers(limit: int) -> dict:
    """The headers of a recorded ping's answer (200 OK, 201 Created)."""
    return {"Access-Control-Allow-Origin": "*", "Ping-Body-Limit": str(limit), **never_cache()}


def refusal(status: int, text: str, headers: dict | None = None) -> web.Response:
    """An error answer of Healthchecks' ping view itself (unknown uuid, exit status, rid, ...):
    never_cache, unlike the slug route's own refusals."""
    return _text(text, status, {**(headers or {}), **never_cache()})


def unavailable() -> Reply:
    """The answer when the event log cannot take a ping (or a check ``?create=1`` makes)."""
    return 503, "service unavailable", {"Retry-After": "1", **never_cache()}


async def _read_body(request: web.Request, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` bytes of the body and its size.

    At most ``limit`` plus one chunk is read from the socket: a longer body is
    left unread (its size taken from Content-Length, else what was read), and the
    connection is closed after the answer instead of draining it.
    """
    kept = bytearray()
    size = 0
    content = request.content
    while True:
        chunk = await content.read(_READ_CHUNK)
        if not chunk:
            return bytes(kept), size
        size += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
        if size > limit and not content.at_eof():
            request[UNREAD_BODY] = True
            return bytes(kept), max(size, request.content_length or 0)


def _header(request: web.Request, name: str, default: str = "") -> str:
    """A header's text; bytes that are not UTF-8 (aiohttp keeps them as surrogates) become U+FFFD,
    so the PingEvent carrying it can be encoded."""
    value = request.headers.get(name, default)
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _remote_addr(request: web.Request) -> str:
    return client_addr(_header(request, "X-Forwarded-For"), request.remote or "")


def rate_limited(limiters: Limiters, check: CheckConfig, addr: str) -> Reply | None:
    """The 429 answer when the check or the client is over its rate, else None."""
    if not (limiters.by_check.enabled or limiters.by_client.enabled):
        return None
    now = time.monotonic()
    for limiter, key in ((limiters.by_check, check.id), (limiters.by_client, addr)):
        if limiter.enabled and not limiter.allow(key, now):
            return 429, "rate limited", {"Retry-After": str(limiter.retry_after_s()), **never_cache()}
    return None


def ping_event(
    check: CheckConfig, action: str, exit_status: int | None, rid: str | None, method: str, body: bytes,
    body_size: int, scheme: str, remote_addr: str, ua: str, source: str = "ping", key: str | None = None,
) -> PingEvent:
    """The PingEvent of a ping that passed validation, its kind decided by the exit status and the
    check's filters (a checkin's by its status alone). With an idempotency ``key`` its id is derived
    from the check and the key, so a retry carries the same id (checks/idempotency.py)."""
    if source == "checkin":
        kind = checkin_kind(check, action == "fail")
    else:
        kind = ping_kind(check, action, exit_status, method, body)
    return PingEvent(
        event_id=uuid7() if key is None else ping_event_id(check.id, key),
        check_id=check.id,
        project_id=check.project_id,
        kind=kind,
        received_at=utcnow(),
        exit_status=exit_status,
        rid=rid,
        method=method,
        scheme=scheme,
        remote_addr=remote_addr,
        user_agent=user_agent(ua),
        body=body,
        body_size=body_size,
        source=source,
    )


async def record_ping(
    request: web.Request,
    check: CheckConfig,
    action: str,
    exit_status: int | None,
    source: str = "ping",
) -> web.Response | None:
    """Validate, build and durably log a ping. Returns an error response, or None on success."""
    if exit_status is not None and exit_status > MAX_EXIT_STATUS:
        return refusal(400, "invalid url format")
    rid = request.query.get("rid")
    if rid is not None:
        if not CANONICAL_UUID.match(rid):
            return refusal(400, "invalid uuid format")
        rid = rid.lower()
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None:
        try:
            key = parse_key(key)
        except BadKey as exc:
            return refusal(400, str(exc))
    addr = _remote_addr(request)
    limited = rate_limited(request.app[LIMITERS], check, addr)
    if limited is not None:
        return _reply(*limited)
    if request.body_exists:
        try:
            # A client trickling its body (slowloris) is cut off instead of holding the handler.
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body, body_size = await _read_body(request, request.app[CONFIG].ping_body_limit)
        except TimeoutError:
            return refusal(408, "request timeout")
    else:
        body, body_size = b"", 0
    event = ping_event(
        check, action, exit_status, rid, request.method, body, body_size,
        _header(request, "X-Forwarded-Proto", "http"), addr, _header(request, "User-Agent"), source, key,
    )
    kind = event.kind
    event_log = request.app[EVENT_LOG]
    try:
        await event_log.produce(TOPIC_PINGS, encode(event), key=check.id.encode())
        metrics.child(metrics.PINGS, kind, source).inc()
        if resumes(check, kind):  # keep the registry's pause flag in step with the monitor's status
            await save_check(event_log, request.app[REGISTRY], msgspec.structs.replace(check, paused=False))
    except LogUnavailable as exc:
        log.warning("ping for %s not logged: %s", check.id, exc)
        return _reply(*unavailable())
    return None


class Target(NamedTuple):
    """Where a ping URL points: a check (None: a slug not found, created by ``?create=1``)."""

    check: CheckConfig | None
    action: str
    exit_status: int | None
    project_id: str = ""
    slug: str = ""


class Refused(NamedTuple):
    """A ping URL answered without a ping; ``never_cache``: by Healthchecks' ping view itself."""

    status: int
    text: str
    never_cache: bool = False


NO_ROUTE = Refused(404, "not found")


def match_ping(registry: Registry, tail: str) -> Target | Refused:
    """Resolve the path after ``/ping/`` as Healthchecks' routes and views do (``create`` is the
    caller's to decide for a Target without a check)."""
    found = route(tail)
    if found is None:
        return NO_ROUTE
    if not found.slug:
        check = registry.checks.get(found.key)
        if check is None:
            return Refused(404, "not found", never_cache=True)
        return Target(check, found.action, found.exit_status)
    if found.slug != found.slug.lower():
        return Refused(400, "invalid url format")
    project = registry.project_by_ping_key(found.key)
    if project is None:
        return Refused(404, "not found")
    matches = registry.checks_by_slug(project.id, found.slug)
    if len(matches) > 1:
        return Refused(409, "ambiguous slug")
    if not matches:
        return Target(None, found.action, found.exit_status, project_id=project.id, slug=found.slug)
    return Target(matches[0], found.action, found.exit_status)


async def handle_ping(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    target = match_ping(registry, request.match_info["tail"])
    if (isinstance(target, Refused) and target.status == 404) or (isinstance(target, Target) and target.check is None):
        # Not known here (yet): a check or project just created through another edge on this port is
        # in the log already; the registry catches up with it before the answer or the ?create=1.
        await registry.caught_up()
        target = match_ping(registry, request.match_info["tail"])
    if isinstance(target, Refused):
        return refusal(target.status, target.text) if target.never_cache else _text(target.text, target.status)
    check = target.check
    if check is None:
        if request.query.get("create") != "1":
            return _text("not found", 404)
        # As upstream: a project at twice its check limit provisions no more (its answer: not found).
        if not may_create(registry.project_check_count(target.project_id), request.app[CONFIG].check_limit,
                          auto_provision=True):
            return _text("not found", 404)
        try:
            spec = provision_spec(target.slug)  # the Management API's rules for a name and a slug
        except SpecError:
            return _text("invalid url format", 400)
        # Derived from project + slug, so racing edges create the same check. As upstream's
        # assign_all_channels, a check made by a ping is alerted to every channel of its project.
        check = CheckConfig(
            id=stable_id("check", target.project_id, target.slug),
            project_id=target.project_id,
            name=spec["name"],
            slug=spec["slug"],
            channels=tuple(sorted(c.id for c in registry.project_channels(target.project_id))),
            created=utcnow(),
        )
        try:
            await save_check(request.app[EVENT_LOG], registry, check)
        except LogUnavailable:
            return _reply(*unavailable())
    error = await record_ping(request, check, target.action, target.exit_status)
    if error is not None:
        return error
    if target.check is None:
        return _text("Created", 201, response_headers(request.app[CONFIG].ping_body_limit))
    return _text("OK", headers=response_headers(request.app[CONFIG].ping_body_limit))


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/ping/{tail:.+}", handle_ping)
