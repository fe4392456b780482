"""Ping rules: what a ping URL names and what a ping counts as, as Healthchecks decides it.

Pure functions; the edge's two ping paths (ingest/pings.py and the fast path)
and the Overwatch checkin endpoint all decide from here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from schemas.events import CheckConfig

# Django's path converters, as Healthchecks' routes use them: lowercase-only
# uuids, slugs of [-a-zA-Z0-9_], exit statuses of digits.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# A run id is any uuid in its canonical textual form, either case.
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
SLUG = re.compile(r"[-a-zA-Z0-9_]+\Z")
EXIT_STATUS = re.compile(r"[0-9]+\Z")
ACTIONS = frozenset({"start", "fail", "log"})
MAX_EXIT_STATUS = 255
MAX_USER_AGENT = 200  # Healthchecks keeps the first 200 characters


class Route(NamedTuple):
    """The Healthchecks route a ping URL takes: ``/ping/<uuid>[/...]`` (``slug`` empty) or
    ``/ping/<ping-key>/<slug>[/...]`` (``key`` is the ping key)."""

    key: str
    slug: str
    action: str
    exit_status: int | None


def parse_action(part: str) -> tuple[str, int | None] | None:
    """(action, exit_status) for a ping URL's action segment; None when no route has it."""
    if part in ACTIONS:
        return part, None
    if EXIT_STATUS.match(part):
        return "success", int(part)
    return None


def route(tail: str) -> Route | None:
    """The route of the path after ``/ping/``, in Healthchecks' order (hc/api/urls.py): the uuid
    form with an optional action or a trailing slash, then ``<ping-key>/<slug>`` with an optional
    action (no trailing slash). None: no route (Healthchecks' plain 404 page).

    ``/ping/<uuid>/<word>`` with a word that is no action takes the slug route (a ping key may look
    like a uuid); that is why ``/ping/<uuid>/START`` is a 400: its slug is not lower case."""
    parts = tail.split("/")
    success = ("success", None)
    if UUID.match(parts[0]) and len(parts) <= 2:
        parsed = success if len(parts) == 1 or parts[1] == "" else parse_action(parts[1])
        if parsed is not None:
            return Route(parts[0], "", *parsed)
    if len(parts) not in (2, 3) or not (SLUG.match(parts[0]) and SLUG.match(parts[1])):
        return None
    parsed = success if len(parts) == 2 else parse_action(parts[2])
    if parsed is None:
        return None
    return Route(parts[0], parts[1], *parsed)


def matches(text: str, keywords: str) -> bool:
    """True when any of the comma-separated keywords (stripped, case-sensitive) occurs in ``text``."""
    return any(k.strip() and k.strip() in text for k in keywords.split(","))


def ping_kind(check: CheckConfig, action: str, exit_status: int | None, method: str, body: bytes) -> str:
    """What a valid ping counts as, decided in Healthchecks' order (hc/api/views.py:ping, Check.ping)."""
    if exit_status is not None and exit_status > 0:
        action = "fail"
    if check.methods == "POST" and method != "POST":
        action = "ign"
    if action != "ign" and check.filter_http_body:
        # The keywords override the URL's action (start, fail, log, exit status alike). The body is
        # decoded leniently where Healthchecks fails on bytes that are not UTF-8.
        text = body.decode("utf-8", errors="replace")
        if check.failure_kw and matches(text, check.failure_kw):
            action = "fail"
        elif check.success_kw and matches(text, check.success_kw):
            action = "success"
        elif check.start_kw and matches(text, check.start_kw):
            action = "start"
        else:
            action = "fail" if check.filter_default_fail else "ign"
    if check.paused and check.manual_resume:
        return "ign"  # the check waits for a resume through the API
    return action


def checkin_kind(check: CheckConfig, failed: bool) -> str:
    """What an Overwatch checkin counts as: a success or a failure, whatever the check's
    Healthchecks filters (methods, body keywords) say; a paused manual_resume check ignores it."""
    if check.paused and check.manual_resume:
        return "ign"
    return "fail" if failed else "success"


def resumes(check: CheckConfig, kind: str) -> bool:
    """Whether a ping of ``kind`` takes ``check`` out of its pause: only a success or failure
    sets a status (up / down); start, log and ign pings leave the check paused."""
    return check.paused and kind in ("success", "fail")


def user_agent(value: str) -> str:
    """The User-Agent as kept with a ping."""
    return value[:MAX_USER_AGENT]


def client_addr(forwarded_for: str, peer: str) -> str:
    """The client's address: the first X-Forwarded-For hop, else the socket's peer."""
    addr = (forwarded_for or peer or "").split(",")[0].strip()
    if "." in addr and ":" in addr:  # "ipv4:port" from some proxies: drop the port
        addr = addr.split(":")[0]
    return addr
