"""A check as the APIs show it: its status and its Healthchecks / Overwatch documents.

Pure: the check's configuration (the registry), its projected state (a
``check_state`` row as a dict, or None before the first ping) and the public
base URL go in; a JSON-ready dict comes out.
"""

from __future__ import annotations

from datetime import datetime

from schemas.events import CheckConfig

from .badges import check_badge_key
from .schedule import next_expected, to_datetime
from .spec import unique_key


def isostring(dt: datetime | None) -> str | None:
    return dt.replace(microsecond=0).isoformat() if dt is not None else None


def next_ping(check: CheckConfig, last_ping: datetime | None) -> datetime | None:
    """When the next ping is expected (Healthchecks' ``next_ping``): None before the first ping."""
    if last_ping is None:
        return None
    return to_datetime(next_expected(check.kind, check.timeout_s, check.schedule, check.tz, last_ping.timestamp()))


def status(check: CheckConfig, state: dict | None) -> str:
    """The registry knows about a pause the moment the API accepted it; the projection may lag."""
    return "paused" if check.paused else (state["status"] if state else "new")


def check_document(
    check: CheckConfig, state: dict | None, readonly: bool, public_url: str, status_word: str | None = None,
    version: int = 3,
) -> dict:
    """The Management API's check object (v3 fields; read-only keys see ``unique_key`` instead of urls,
    which name the API version the document was asked for)."""
    if status_word is None:
        status_word = status(check, state)
    last_ping = state["last_ping"] if state else None
    last_duration = state.get("last_duration_s") if state else None
    shown = status_word not in ("paused", "new")
    result = {
        "name": check.name,
        "slug": check.slug,
        "tags": check.tags,
        "desc": check.desc,
        "grace": check.grace_s,
        "n_pings": state["n_pings"] if state else 0,
        "status": status_word,
        "started": bool(state and state.get("started")) and shown,
        "last_ping": isostring(last_ping),
        "next_ping": isostring(next_ping(check, last_ping)) if shown else None,
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
    if last_duration is not None:
        result["last_duration"] = int(last_duration)
    if readonly:
        result["unique_key"] = unique_key(check.id)
    else:
        base = f"{public_url}/api/v{version}/checks/{check.id}"
        result.update(
            uuid=check.id,
            ping_url=f"{public_url}/ping/{check.id}",
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
    if check.kind == "simple":
        out["interval"] = check.timeout_s
    else:
        out["schedule"] = check.schedule
        out["timezone"] = check.tz
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
