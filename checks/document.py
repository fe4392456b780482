"""A check as the APIs show it: its status and its Healthchecks / Overwatch documents.

Pure: the check's configuration (the registry), its projected state (a
``check_state`` row as a dict, or None before the first ping), the time of
the request and the public base URL go in; a JSON-ready dict comes out.

The projected state holds what Healthchecks stores on a ``Check``: its stored
status (new, up, down, paused), last ping, last start. What the API shows is
computed from it at ``now`` as Healthchecks does (``get_status``,
``get_grace_start``), with ``sendalerts`` taken as instant: a check whose time
is up reads as down at once, as stored down.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from schemas.events import CheckConfig, as_utc, utcnow

from .badges import check_badge_key
from .extensions import extension_document, uses_rules
from .schedule import next_expected, to_datetime
from .spec import unique_key


def isostring(dt: datetime | None) -> str | None:
    return dt.replace(microsecond=0).isoformat() if dt is not None else None


def expected_after(check: CheckConfig, last_ping: datetime | None) -> datetime | None:
    """When the ping after one at ``last_ping`` is due (None: never, or no ping yet)."""
    if last_ping is None:
        return None
    t = next_expected(check.kind, check.timeout_s, check.schedule, check.tz, last_ping.timestamp())
    return None if math.isinf(t) else to_datetime(t)


def with_registry(check: CheckConfig, state: dict | None) -> dict | None:
    """The registry knows about a pause or resume the moment the API accepted it; the projection may lag.

    When the projected status was set before the last pause or resume (or never), the state reads
    as that call left it. A ping after it (a success or fail un-pauses, as upstream) is newer, so
    the projection wins then."""
    calls = [(at, paused) for at, paused in ((check.paused_at, True), (check.resumed_at, False)) if at is not None]
    if not calls:
        return state
    at, paused = max(calls)
    status_at = as_utc(state.get("status_at")) if state else None
    if status_at is not None and status_at >= at:
        return state
    return after_pause(state) if paused else after_resume(state)


def _stored(state: dict | None) -> tuple[str, datetime | None, datetime | None]:
    """Healthchecks' stored status, last ping and last start (the run in progress)."""
    if not state:
        return "new", None, None
    return state["status"], as_utc(state.get("last_ping")), as_utc(state.get("last_start"))


def status(check: CheckConfig, state: dict | None, now: datetime | None = None, *, v: int = 3) -> str:
    """Healthchecks' ``Check.get_status(with_started=v == 1)`` at ``now``: new, up, grace, down, paused
    (and started, in API v1 only, while a run is within its grace time)."""
    now = now or utcnow()
    if uses_rules(check):
        return _ruled_status(check, state, v)
    base, last_ping, last_start = _stored(with_registry(check, state))
    grace = timedelta(seconds=check.grace_s)
    if last_start is not None:
        if now >= last_start + grace:
            return "down"
        if v == 1:
            return "started"
    if base != "up":
        return base
    grace_start = expected_after(check, last_ping)
    if grace_start is None:
        return "up"
    if now >= grace_start + grace:
        return "down"
    return "grace" if now >= grace_start else "up"


def _ruled_status(check: CheckConfig, state: dict | None, v: int) -> str:
    """The status of a check that uses pingstream's rules (thresholds, run time bounds): what the
    monitor last decided (its newest transition), as only the monitor counts consecutive failures.
    A pause or resume the API accepted after that reads as the call left the check."""
    word = state.get("monitor") if state else None
    calls = [(at, paused) for at, paused in ((check.paused_at, True), (check.resumed_at, False)) if at is not None]
    if calls:
        at, paused = max(calls)
        if word is None or as_utc(word["at"]) < at:
            return "paused" if paused else "new"
    if word is None:
        return "paused" if state and state["status"] == "paused" else "new"
    if word["to_status"] == "started" and v != 1:
        return word["to_base"] or "up"
    return word["to_status"]


def next_ping(check: CheckConfig, state: dict | None, now: datetime | None = None) -> datetime | None:
    """Healthchecks' ``next_ping`` (``get_grace_start``): None for a new, paused or down check, the next
    expected time of an up one, and the last start while a run is open if that is earlier."""
    base, last_ping, last_start = _stored(with_registry(check, state))
    if base != "down" and status(check, state, now) == "down":
        base = "down"  # sendalerts marks it down as soon as its time is up
    grace_start = expected_after(check, last_ping) if base == "up" else None
    if last_start is not None and base != "down":
        grace_start = last_start if grace_start is None else min(grace_start, last_start)
    return grace_start


def after_pause(state: dict | None) -> dict:
    """The state as Healthchecks' pause leaves it: paused, no run in progress (a paused check: as it was)."""
    state = dict(state or {"status": "new", "last_ping": None, "last_duration_s": None, "n_pings": 0})
    if state["status"] != "paused":
        state.update(status="paused", last_start=None, started=0)
    return state


def after_resume(state: dict | None) -> dict:
    """The state as Healthchecks' resume leaves it: new, no last ping, no run; counts and durations kept."""
    state = dict(state or {"last_duration_s": None, "n_pings": 0})
    state.update(status="new", last_ping=None, last_start=None, started=0)
    return state


def check_document(
    check: CheckConfig, state: dict | None, readonly: bool, public_url: str, status_word: str | None = None,
    *, v: int = 3, now: datetime | None = None,
) -> dict:
    """The Management API's check object (v3 fields; read-only keys see ``unique_key`` instead of urls).

    ``v`` is the API version of the request: v1 shows a running check as ``started``, and the urls
    name the version the document was asked for. ``now`` is the time of the request."""
    now = now or utcnow()
    state = with_registry(check, state)
    if status_word is None:
        status_word = status(check, state, now, v=v)
    last_ping = state["last_ping"] if state else None
    last_duration = state.get("last_duration_s") if state else None
    result = {
        "name": check.name,
        "slug": check.slug,
        "tags": check.tags,
        "desc": check.desc,
        "grace": check.grace_s,
        "n_pings": state["n_pings"] if state else 0,
        "status": status_word,
        "started": bool(state and state.get("last_start") is not None),
        "last_ping": isostring(last_ping),
        "next_ping": isostring(next_ping(check, state, now)),
        "manual_resume": check.manual_resume,
        "methods": check.methods,
        "subject": check.success_kw if check.filter_subject else "",
        "subject_fail": check.failure_kw if check.filter_subject else "",
        "start_kw": check.start_kw,
        "success_kw": check.success_kw,
        "failure_kw": check.failure_kw,
        "filter_subject": check.filter_subject,
        "filter_body": check.filter_body,
        "filter_http_body": check.filter_http_body,
        "filter_default_fail": check.filter_default_fail,
        "badge_url": f"{public_url}/b/2/{check_badge_key(check.id)}.svg",
    }
    if last_duration:  # upstream leaves out a zero duration too
        result["last_duration"] = int(last_duration)
    if readonly:
        result["unique_key"] = unique_key(check.id)
    else:
        base = f"{public_url}/api/v{v}/checks/{check.id}"
        result.update(
            uuid=check.id,
            ping_url=f"{public_url}/ping/{check.id}",
            update_url=base,
            pause_url=f"{base}/pause",
            resume_url=f"{base}/resume",
            channels=",".join(check.channels),
        )
    result.update(_schedule(check, "timeout", "schedule", "tz"))
    result.update(extension_document(check))  # nothing unless the check uses pingstream's extension
    return result


def _schedule(check: CheckConfig, period: str, expression: str, zone: str) -> dict:
    """A check's schedule under the names a document gives it: a period, or an expression in a zone."""
    if check.kind == "simple":
        return {period: check.timeout_s}
    return {expression: check.schedule, zone: check.tz}


def monitor_status(check: CheckConfig, state: dict | None, failed: bool) -> str:
    """Overwatch's status word for a check: ``havent_heard`` when it is down for missing its
    deadline, ``down`` when it is down because its last completion (ping or checkin) failed."""
    word = status(check, state)
    if word in ("new", "paused"):
        return word
    if word == "down":
        return "down" if failed else "havent_heard"
    if not (state and state.get("last_ping")):
        return "new"  # a run started before the first completion
    return "up"


def monitor_document(check: CheckConfig, state: dict | None, public_url: str, failed: bool = False) -> dict:
    """The Overwatch monitor object of a check: every check is a heartbeat, a SCHEDULED monitor
    (``failed``: its last completion was a failure, see ``monitor_status``)."""
    out = {
        "id": check.id,
        "name": check.name,
        "type": "SCHEDULED",
        "checkinUrl": f"{public_url}/api/v1/monitors/{check.id}/checkin",
        "status": monitor_status(check, state, failed),
        "gracePeriod": check.grace_s,
        "createdAt": isostring(check.created),
        "lastCheckinAt": isostring(state["last_ping"]) if state else None,
    }
    out.update(_schedule(check, "interval", "schedule", "timezone"))
    return out


def ping_document(row: dict, body_base_url: str) -> dict:
    """One entry of a check's ping log (``/pings/``) from a ``pings`` row: ``body_url`` is null
    without a body, ``duration`` (seconds, 2 decimals) only there when the ping ended a run.
    The exit status is in ``type`` (fail) only, as upstream's API has no field for it."""
    item = {
        "type": row["kind"],
        "date": row["received_at"].isoformat(),
        "n": row["n"],
        "scheme": row["scheme"],
        "remote_addr": row["remote_addr"],
        "method": row["method"],
        "ua": row["user_agent"],
        "rid": row["rid"],
        "body_url": f"{body_base_url}/{row['n']}/body" if row["body_size"] else None,
    }
    if row["duration_s"] is not None:
        item["duration"] = round(row["duration_s"], 2)
    return item
