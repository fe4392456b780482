"""What an alert says: which alert events a transition is, the context it is built from, and the
webhook templates, the default JSON document and the text of e-mail and chat messages. Pure.

A transition is the events ``alert_events`` names (a channel is alerted when it chose one):

- ``down`` and ``up`` as Healthchecks' flips alert: ``up`` only back from down (not new → up,
  not paused → up: upstream sends nothing for those), ``failure`` as well when a failing ping
  (``/fail``, a non-zero exit status, a checkin with ``status=fail``) caused it;
- ``started``, ``grace``, ``paused`` for those displayed statuses (opt-in);
- ``ingest_gap`` for the monitor's ingest gaps (pingstream was deaf, not the jobs; opt-in).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from schemas.events import ChannelConfig, CheckConfig, IngestGap, Transition

BODY_HEAD = 1024  # bytes of the last ping's body an alert carries


@dataclass(frozen=True)
class LastPing:
    event_id: str
    at: datetime
    kind: str
    exit_status: int | None
    body: bytes  # its first BODY_HEAD bytes


@dataclass(frozen=True)
class Alert:
    """One transition (or ingest gap) with what the check was at that moment."""

    id: str  # the transition's event_id: the idempotency key
    event: str  # the alert event a channel chose it by (down, up, failure, ...)
    status: str  # Healthchecks' $STATUS: the new displayed status, or "ingest_gap"
    at: datetime
    transition: Transition | None = None
    gap: IngestGap | None = None
    check: CheckConfig | None = None
    project_name: str = ""
    last_ping: LastPing | None = None
    ping_url: str = ""


def _failing(t: Transition) -> bool:
    return t.reason.startswith(("fail ping", "checkin status=fail"))


def alert_events(t: Transition) -> tuple[str, ...]:
    """The alert events ``t`` is (empty: none a channel can choose)."""
    to, frm = t.to_status, t.from_status
    if to == "down" and frm != "down":
        return ("down", "failure") if _failing(t) else ("down",)
    if to == "up":
        was_down = (t.from_base == "down") if t.from_base else frm == "down"
        return ("up",) if was_down else ()
    if to in ("started", "grace", "paused") and frm != to:
        return (to,)
    return ()


def chosen(channel: ChannelConfig, events: tuple[str, ...]) -> str | None:
    """The first of ``events`` the channel wants, or None."""
    return next((e for e in events if e in channel.events), None)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def body_text(ping: LastPing | None) -> str:
    return ping.body.decode("utf-8", "replace") if ping is not None and ping.body else ""


def document(alert: Alert) -> dict:
    """The default webhook body: the alert and the check as it was when the transition happened."""
    doc: dict = {"type": f"check.{alert.event}" if alert.check or alert.transition else alert.event,
                 "id": alert.id, "event": alert.event, "status": alert.status, "at": _iso(alert.at)}
    if alert.gap is not None:
        doc.update(type="ingest_gap", start=_iso(alert.gap.start), end=_iso(alert.gap.end),
                   partition=alert.gap.partition)
        return doc
    t = alert.transition
    doc["transition"] = {"from": t.from_status, "to": t.to_status, "reason": t.reason,
                         "cause_event_id": t.cause_event_id or None}
    check = alert.check
    c: dict = {"uuid": t.check_id, "project": {"id": t.project_id, "name": alert.project_name}}
    if check is not None:
        c.update(name=check.name, slug=check.slug, tags=check.tags.split(), desc=check.desc, grace=check.grace_s)
        if check.kind == "simple":
            c["timeout"] = check.timeout_s
        else:
            c.update(schedule=check.schedule, tz=check.tz)
    c["ping_url"] = alert.ping_url
    ping = alert.last_ping
    c["last_ping"] = None if ping is None else {
        "at": _iso(ping.at), "kind": ping.kind, "exit_status": ping.exit_status, "body": body_text(ping)}
    doc["check"] = c
    return doc


def variables(alert: Alert, urlencode: bool = False, template: str | None = None) -> dict[str, str]:
    """Healthchecks' webhook variables ($NAME, $STATUS, $BODY, ...) and pingstream's ($SLUG, $DESC,
    $PROJECT, $PING_URL, $REASON, $EVENT). ``$JSON`` is built only when ``template`` (if given) uses it."""
    safe = quote if urlencode else (lambda s: s)
    check = alert.check
    name = check.name if check else ""
    tags = check.tags if check else ""
    ping = alert.last_ping
    body = body_text(ping)
    out = {
        "$CODE": alert.transition.check_id if alert.transition else "",
        "$STATUS": alert.status,
        "$EVENT": alert.event,
        "$NOW": safe(_iso(alert.at) or ""),
        "$NAME_JSON": safe(json.dumps(name)),
        "$NAME": safe(name),
        "$SLUG": safe(check.slug if check else ""),
        "$TAGS": safe(tags),
        "$DESC": safe(check.desc if check else ""),
        "$PROJECT": safe(alert.project_name),
        "$PING_URL": safe(alert.ping_url),
        "$REASON": safe(alert.transition.reason if alert.transition else "ingest gap"),
        "$JSON": safe(json.dumps(document(alert))) if template is None or "$JSON" in template else "",
        "$BODY_JSON": safe(json.dumps(body)),
        "$BODY": safe(body),
        "$EXITSTATUS": str(ping.exit_status) if ping is not None and ping.exit_status is not None else "-1",
    }
    for i, tag in enumerate(tags.split()):
        out[f"$TAG{i + 1}"] = safe(tag)
    return out


def render(template: str, values: dict[str, str]) -> str:
    """Every variable replaced at once (so a value containing "$NAME" is not replaced again), the
    longest name first ($NAME_JSON before $NAME, $TAG10 before $TAG1)."""
    if not template or "$" not in template:
        return template
    names = sorted(values, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(n) for n in names))
    return pattern.sub(lambda m: values[m.group(0)], template)


def subject(alert: Alert) -> str:
    if alert.gap is not None:
        return "pingstream: ingest gap (pingstream heard nothing for a while)"
    name = (alert.check.name if alert.check else "") or alert.transition.check_id
    return f"{alert.status.upper()} | {name}"


def text(alert: Alert) -> str:
    """The plain-text message of e-mail and chat alerts."""
    if alert.gap is not None:
        g = alert.gap
        return (f"pingstream heard no pings on partition {g.partition} from {_iso(g.start)} to {_iso(g.end)}. "
                "No check was called down for that span: the data, not the jobs, may be missing.")
    t, check, ping = alert.transition, alert.check, alert.last_ping
    name = (check.name if check else "") or t.check_id
    lines = [f'The check "{name}" is {alert.status.upper()} ({t.reason}).', ""]
    if alert.project_name:
        lines.append(f"Project: {alert.project_name}")
    if check is not None:
        if check.desc:
            lines.append(f"Description: {check.desc}")
        if check.tags:
            lines.append(f"Tags: {check.tags}")
        if check.kind == "simple":
            lines.append(f"Period: {check.timeout_s} s, grace {check.grace_s} s")
        else:
            lines.append(f"Schedule: {check.schedule} ({check.tz}), grace {check.grace_s} s")
    lines.append(f"Last ping: {_iso(ping.at)} ({ping.kind})" if ping else "Last ping: never (or before the notifier started)")
    if ping is not None and ping.exit_status is not None:
        lines.append(f"Exit status: {ping.exit_status}")
    lines.append(f"Ping URL: {alert.ping_url}")
    if ping is not None and ping.body:
        lines += ["", "Last ping body (first KB):", body_text(ping)]
    return "\n".join(lines)
