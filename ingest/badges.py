"""Status badges (Healthchecks' ``/api/v3/badges/``, ``/badge/...``, ``/b/...``).

The badge URLs carry no API key: a project's badges are found by its badge key and
proven by their signature, a check's badge by the check's badge key (checks/badges.py).
Badge answers are never cached, so a README shows the state of now; without a reachable read
model a badge is a 503 naming what is missing, never a made-up "up".
"""

from __future__ import annotations

import hmac
import time
from email.utils import formatdate

from aiohttp import web

from checks import badges as domain
from checks.document import status
from runtime.registry import Registry
from schemas.events import CheckConfig, Project

from . import state
from .keys import CONFIG, REGISTRY
from .views import ApiRequest, api_view, cors, empty, error

MASTER_LABEL = "pingstream"  # the label of the badge of all checks (upstream: its site name)
# A badge shows up, late (with three states) or down; paused and new checks count as up.
_BADGE_STATUS = {"down": "down", "grace": "grace"}


@api_view(write=False)
async def list_badges(request: web.Request, api: ApiRequest) -> web.Response:
    tags: set[str] = set()
    for check in request.app[REGISTRY].project_checks(api.project.id):
        tags.update(check.tags.split())
    key = domain.project_badge_key(api.project.api_key)
    public_url = request.app[CONFIG].public_url
    return web.json_response(
        {"badges": {tag: domain.tag_badge_urls(public_url, api.project.api_key, key, tag) for tag in [*sorted(tags), "*"]}}
    )


def _never_cache(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "max-age=0, no-cache, no-store, must-revalidate, private"
    response.headers["Expires"] = formatdate(time.time(), usegmt=True)
    return response


async def _statuses(request: web.Request, checks: list[CheckConfig]) -> list[str]:
    states = await state.check_states(request, [c.id for c in checks])
    return [_BADGE_STATUS.get(status(c, states.get(c.id)), "up") for c in checks]


def _answer(fmt: str, label: str, badge: tuple[str, int, int, int]) -> web.Response:
    shown, total, grace, down = badge
    if fmt == "shields":
        return web.json_response(domain.shields_document(label, shown))
    if fmt == "json":
        return web.json_response({"status": shown, "total": total, "grace": grace, "down": down})
    return web.Response(body=domain.svg(label, shown).encode(), content_type="image/svg+xml")


def _project_by_badge_key(registry: Registry, badge_key: str) -> Project | None:
    # Derived from the API key: compared in constant time, as every secret is.
    given = badge_key.encode()
    return next((p for p in registry.projects.values()
                 if hmac.compare_digest(domain.project_badge_key(p.api_key).encode(), given)), None)


async def tag_badge(request: web.Request) -> web.Response:
    """A project's badge for one tag, or for all its checks (``*``)."""
    info = request.match_info
    tag, fmt, sig = info.get("tag", "*"), info["fmt"], info["sig"]
    project = _project_by_badge_key(request.app[REGISTRY], info["badge_key"])
    if fmt not in domain.FORMATS or project is None or not domain.signature_matches(
        project.api_key, info["badge_key"], tag, sig
    ):
        return _never_cache(empty(404))
    checks = request.app[REGISTRY].project_checks(project.id)
    if tag != "*":
        checks = [c for c in checks if tag in c.tags.split()]
    with_late = not (len(sig) == 10 and sig.endswith("-2"))
    try:
        statuses = await _statuses(request, checks)
    except state.ReadModelUnavailable as exc:
        return _never_cache(error(exc.message, exc.status))
    badge = domain.badge_state(statuses, with_late, stop_at_down=fmt == "svg")
    return _never_cache(_answer(fmt, MASTER_LABEL if tag == "*" else tag, badge))


class _CheckBadgeKeys:
    """check badge key -> check id over the registry, rebuilt on a miss at most once a second."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.built_at = float("-inf")

    def find(self, registry: Registry, badge_key: str) -> CheckConfig | None:
        check_id = self.ids.get(badge_key)
        if check_id is None and time.monotonic() - self.built_at > 1:
            self.ids = {domain.check_badge_key(i): i for i in registry.checks}
            self.built_at = time.monotonic()
            check_id = self.ids.get(badge_key)
        return registry.checks.get(check_id) if check_id else None


CHECK_BADGE_KEYS = web.AppKey("check_badge_keys", _CheckBadgeKeys)


async def check_badge(request: web.Request) -> web.Response:
    """One check's badge: ``states`` 3 shows late, any other number only up and down."""
    info = request.match_info
    check = request.app[CHECK_BADGE_KEYS].find(request.app[REGISTRY], info["badge_key"])
    if info["fmt"] not in domain.FORMATS or check is None:
        return _never_cache(empty(404))
    try:
        [check_status] = await _statuses(request, [check])
    except state.ReadModelUnavailable as exc:
        return _never_cache(error(exc.message, exc.status))
    shown = {"down": "down", "grace": "late" if int(info["states"]) == 3 else "up"}.get(check_status, "up")
    badge = (shown, 1, int(check_status == "grace"), int(check_status == "down"))
    return _never_cache(_answer(info["fmt"], check.name or check.id, badge))


def add_routes(app: web.Application) -> None:
    app[CHECK_BADGE_KEYS] = _CheckBadgeKeys()
    slug = "[-a-zA-Z0-9_]+"
    for path, view in (
        (f"/badge/{{badge_key:{slug}}}/{{sig:{slug}}}/{{tag:[\\w%~_.-]+}}.{{fmt:{slug}}}", tag_badge),
        (f"/badge/{{badge_key:{slug}}}/{{sig:{slug}}}.{{fmt:{slug}}}", tag_badge),
        ("/b/{states:[0-9]+}/{badge_key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}.{fmt:" + slug + "}",
         check_badge),
    ):
        app.router.add_route("*", path, cors({"GET": view}))
