"""The Pinging API: ``/ping/<uuid>[/start|/fail|/log|/<exit-status>]`` and the slug forms.

Wire behaviour follows Healthchecks' ``hc/api/views.py``: the check is looked
up first (404 ``not found``, 409 ``ambiguous slug``), then the exit status
(400 ``invalid url format``), then ``rid`` (400 ``invalid uuid format``).
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

from checks.rules import (
    CANONICAL_UUID,
    MAX_EXIT_STATUS,
    SLUG,
    UUID,
    client_addr,
    parse_action,
    ping_kind,
    resumes,
)
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


NOT_FOUND = (404, "not found")
Reply = tuple[int, str, dict]  # status, plain-text body, extra headers


def _reply(status: int, text: str, headers: dict | None = None) -> web.Response:
    """A (status, text[, headers]) answer of the shared ping logic as an aiohttp response."""
    return _text(text, status, headers)


def _not_found() -> web.Response:
    return _reply(*NOT_FOUND)


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current second as an HTTP date, formatted once a second, not per ping."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def response_headers(limit: int) -> dict:
    # Upstream's ping view is wrapped in never_cache; the header values match it.
    return {
        "Access-Control-Allow-Origin": "*",
        "Ping-Body-Limit": str(limit),
        "Cache-Control": "max-age=0, no-cache, no-store, must-revalidate, private",
        "Expires": http_date(),
    }


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
            return 429, "rate limited", {"Retry-After": str(limiter.retry_after_s())}
    return None


def ping_event(
    check: CheckConfig, action: str, exit_status: int | None, rid: str | None, method: str, body: bytes,
    body_size: int, scheme: str, remote_addr: str, user_agent: str, source: str = "ping",
) -> PingEvent:
    """The PingEvent of a ping that passed validation, its kind decided by the exit status and the
    check's filters."""
    return PingEvent(
        event_id=uuid7(),
        check_id=check.id,
        project_id=check.project_id,
        kind=ping_kind(check, action, exit_status, method, body),
        received_at=utcnow(),
        exit_status=exit_status,
        rid=rid,
        method=method,
        scheme=scheme,
        remote_addr=remote_addr,
        user_agent=user_agent,
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
        return _text("invalid url format", 400)
    rid = request.query.get("rid")
    if rid is not None:
        if not CANONICAL_UUID.match(rid):
            return _text("invalid uuid format", 400)
        rid = rid.lower()
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
            return _text("request timeout", 408)
    else:
        body, body_size = b"", 0
    event = ping_event(
        check, action, exit_status, rid, request.method, body, body_size,
        _header(request, "X-Forwarded-Proto", "http"), addr, _header(request, "User-Agent"), source,
    )
    kind = event.kind
    event_log = request.app[EVENT_LOG]
    try:
        await event_log.produce(TOPIC_PINGS, encode(event), key=check.id.encode())
        metrics.child(metrics.PINGS, kind, source).inc()
        if resumes(check, kind):  # keep the registry's pause flag in step with the monitor
            await save_check(event_log, request.app[REGISTRY], msgspec.structs.replace(check, paused=False))
    except LogUnavailable as exc:
        log.warning("ping for %s not logged: %s", check.id, exc)
        return _text("service unavailable", 503, {"Retry-After": "1"})
    return None


class Target(NamedTuple):
    """Where a ping URL points: a check (None: a slug not found, created by ``?create=1``)."""

    check: CheckConfig | None
    action: str
    exit_status: int | None
    project_id: str = ""
    slug: str = ""


def match_ping(registry: Registry, tail: str) -> Target | tuple[int, str]:
    """Resolve the path after ``/ping/`` as upstream's routes do: the uuid form, else
    ``<ping-key>/<slug>``. Returns the target, or (status, text) for 404 / 409."""
    parts = tail.split("/")
    if UUID.match(parts[0]) and len(parts) <= 2:
        parsed = parse_action(parts[1] if len(parts) == 2 else None)
        check = registry.checks.get(parts[0])
        if check is not None and parsed is not None:
            return Target(check, *parsed)
        # "/ping/<uuid>/<word>" also reads as "/ping/<ping-key>/<slug>": try that.
        if not (len(parts) == 2 and parsed is None):
            return NOT_FOUND
    if len(parts) not in (2, 3) or not (SLUG.match(parts[0]) and SLUG.match(parts[1])):
        return NOT_FOUND
    parsed = parse_action(parts[2] if len(parts) == 3 else None)
    if parsed is None:
        return NOT_FOUND
    project = registry.project_by_ping_key(parts[0])
    if project is None:
        return NOT_FOUND
    matches = registry.checks_by_slug(project.id, parts[1])
    if len(matches) > 1:
        return 409, "ambiguous slug"
    if not matches:
        return Target(None, *parsed, project_id=project.id, slug=parts[1])
    return Target(matches[0], *parsed)


async def handle_ping(request: web.Request) -> web.Response:
    target = match_ping(request.app[REGISTRY], request.match_info["tail"])
    if not isinstance(target, Target):
        return _reply(*target)
    check = target.check
    if check is None:
        if request.query.get("create") != "1":
            return _not_found()
        # Derived from project + slug, so racing edges create the same check.
        check = CheckConfig(
            id=stable_id("check", target.project_id, target.slug),
            project_id=target.project_id,
            name=target.slug,
            slug=target.slug,
            created=utcnow(),
        )
        try:
            await save_check(request.app[EVENT_LOG], request.app[REGISTRY], check)
        except LogUnavailable:
            return _text("service unavailable", 503, {"Retry-After": "1"})
    error = await record_ping(request, check, target.action, target.exit_status)
    if error is not None:
        return error
    if target.check is None:
        return _text("Created", 201, response_headers(request.app[CONFIG].ping_body_limit))
    return _text("OK", headers=response_headers(request.app[CONFIG].ping_body_limit))


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/ping/{tail:.+}", handle_ping)
