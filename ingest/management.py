"""Healthchecks-compatible Management API (v1/v2/v3 paths, v3 behaviour).

Writes become registry / control events on the log (answered after the durable
ack, then applied to this edge's registry at once so the caller reads its own
write); configuration is read from the registry, state (status, n_pings,
last_ping, pings, flips) from the projected tables in ClickHouse.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime, timezone

import msgspec
from aiohttp import web

from pingstream.eventlog.base import LogUnavailable
from schemas.events import (
    TOPIC_CHECKS,
    TOPIC_PINGS,
    CheckConfig,
    CheckDeleted,
    CheckUpserted,
    Paused,
    Project,
    Resumed,
    encode,
    utcnow,
    uuid7,
)

from . import state
from .keys import CONFIG, EVENT_LOG, REGISTRY
from .spec import SpecError, load_json, spec_kind, validate

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_UNIQUE_KEY = re.compile(r"[0-9a-f]{40}\Z")
PING_LOG_LIMIT = 100


def error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def unique_key(check_id: str) -> str:
    """Upstream's stable read-only identifier: sha1 of the uuid's hex form."""
    return hashlib.sha1(check_id.replace("-", "").encode()).hexdigest()


def slugify(name: str) -> str:
    """Django's slugify, as v1/v2 use it to derive a slug from a name."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")


def isostring(dt: datetime | None) -> str | None:
    return dt.replace(microsecond=0).isoformat() if dt is not None else None


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
    check = request.app[REGISTRY].checks.get(code) if _UUID.match(code) else None
    if check is None:
        return error("not found", 404)
    if check.project_id != api.project.id:
        return error("forbidden", 403)
    return check


# --- serialisation ------------------------------------------------------------


def check_dict(request: web.Request, check: CheckConfig, st: dict | None, readonly: bool, status: str | None = None) -> dict:
    config = request.app[CONFIG]
    if status is None:
        # The registry knows about a pause the moment the API accepted it; the
        # projection may lag a little behind.
        status = "paused" if check.paused else (st["status"] if st else "new")
    last_ping = st["last_ping"] if st else None
    last_duration = st.get("last_duration_s") if st else None
    result = {
        "name": check.name,
        "slug": check.slug,
        "tags": check.tags,
        "desc": check.desc,
        "grace": check.grace_s,
        "n_pings": st["n_pings"] if st else 0,
        "status": status,
        "started": bool(st and st.get("started")) and status not in ("paused", "new"),
        "last_ping": isostring(last_ping),
        "next_ping": isostring(state.next_ping(check, last_ping)) if status not in ("paused", "new") else None,
        "manual_resume": check.manual_resume,
        "methods": check.methods,
        "subject": check.success_kw if check.filter_subject else "",
        "subject_fail": check.failure_kw if check.filter_subject else "",
        "start_kw": check.start_kw,
        "success_kw": check.success_kw,
        "failure_kw": check.failure_kw,
        "filter_subject": check.filter_subject,
        "filter_body": check.filter_body,
    }
    if last_duration is not None:
        result["last_duration"] = int(last_duration)
    if readonly:
        result["unique_key"] = unique_key(check.id)
    else:
        base = f"{config.public_url}/api/v3/checks/{check.id}"
        result.update(
            uuid=check.id,
            ping_url=f"{config.public_url}/ping/{check.id}",
            update_url=base,
            pause_url=f"{base}/pause",
            resume_url=f"{base}/resume",
            channels="",
        )
    if check.kind == "simple":
        result["timeout"] = check.timeout_s
    else:
        result["schedule"] = check.schedule
        result["tz"] = check.tz
    return result


# --- writes -------------------------------------------------------------------


async def _produce(request: web.Request, topic: str, event, key: str) -> None:
    await request.app[EVENT_LOG].produce(topic, encode(event), key=key.encode())


async def _save(request: web.Request, check: CheckConfig) -> None:
    event = CheckUpserted(event_id=uuid7(), check=check)
    await _produce(request, TOPIC_CHECKS, event, check.id)
    request.app[REGISTRY].apply(event)


def _apply_spec(check: CheckConfig, spec: dict, version: int) -> CheckConfig:
    """Upstream's _update: only the fields the request names change."""
    changes: dict = {}
    if "name" in spec and spec["name"] != check.name:
        changes["name"] = spec["name"]
        if version < 3:
            changes["slug"] = slugify(spec["name"])
    kind = spec_kind(spec)
    if kind == "simple":
        changes.update(kind="simple", timeout_s=spec["timeout"])
    elif kind in ("cron", "oncalendar"):
        changes.update(kind=kind, schedule=spec["schedule"])
    success_kw = spec.get("subject", spec.get("success_kw", check.success_kw))
    failure_kw = spec.get("subject_fail", spec.get("failure_kw", check.failure_kw))
    if "subject" in spec or "subject_fail" in spec:
        changes["filter_subject"] = bool(success_kw or failure_kw)
    changes.update(success_kw=success_kw, failure_kw=failure_kw)
    for key, field in (
        ("slug", "slug"),
        ("tags", "tags"),
        ("desc", "desc"),
        ("manual_resume", "manual_resume"),
        ("methods", "methods"),
        ("tz", "tz"),
        ("start_kw", "start_kw"),
        ("filter_subject", "filter_subject"),
        ("filter_body", "filter_body"),
        ("grace", "grace_s"),
    ):
        if key in spec:
            changes[field] = spec[key]
    return msgspec.structs.replace(check, **changes)


def _lookup_unique(request: web.Request, project: Project, spec: dict) -> CheckConfig | None:
    unique = spec.get("unique") or []
    if not unique or any(field not in spec for field in unique):
        return None
    for check in request.app[REGISTRY].project_checks(project.id):
        values = {"name": check.name, "slug": check.slug, "tags": check.tags,
                  "timeout": check.timeout_s, "grace": check.grace_s}
        if all(values[field] == spec[field] for field in unique):
            return check
    return None


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
    existing = _lookup_unique(request, api.project, spec)
    created = existing is None
    base = existing or CheckConfig(id=str(uuid7()), project_id=api.project.id, created=utcnow())
    check = _apply_spec(base, spec, api.version)
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
        if _UNIQUE_KEY.match(code):
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
            await _produce(request, TOPIC_CHECKS, CheckDeleted(event_id=uuid7(), check_id=check.id, project_id=check.project_id), check.id)
            request.app[REGISTRY].apply(CheckDeleted(event_id="", check_id=check.id, project_id=check.project_id))
            return web.json_response(check_dict(request, check, st, False))
        try:
            spec = validate(api.json, request.app[CONFIG].min_timeout_s)
        except SpecError as exc:
            return error(str(exc))
        updated = _apply_spec(check, spec, api.version)
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
    out = []
    for row in rows:
        item = {
            "type": row["kind"],
            "date": row["received_at"].isoformat(),
            "n": row["n"],
            "scheme": row["scheme"],
            "remote_addr": row["remote_addr"],
            "method": row["method"],
            "ua": row["user_agent"],
            "rid": row["rid"],
            "duration": row["duration_s"],
        }
        if row["exit_status"] is not None:
            item["exitstatus"] = row["exit_status"]
        if row["body_size"]:
            item["body_url"] = f"{base}/{row['n']}/body"
        out.append(item)
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
    if _UNIQUE_KEY.match(code):
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
