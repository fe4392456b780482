"""What an alert says: which alert events a transition is, the context it is built from, and the
webhook templates, the default JSON document and the text of e-mail and chat messages. Pure.

A transition is the events ``alert_events`` names (a channel is alerted when it chose one):

- ``down`` and ``up`` as Healthchecks' flips alert: ``up`` only back from down (not new → up,
  not paused → up: upstream sends nothing for those), ``failure`` as well when a failing ping
  (``/fail``, a non-zero exit status, a checkin with ``status=fail``) caused it;
- ``started``, ``grace``, ``paused`` for those displayed statuses (opt-in);
- ``ingest_gap`` for the monitor's ingest gaps (pingstream was deaf, not the jobs; opt-in);
- ``flapping`` and ``broken`` for a check's Flapping and Broken events (announced once each; opt-in);
- ``ingest_anomaly`` for the volume gate's IngestAnomaly (a project's pings fell abnormally, its
  missed deadlines in that minute were judged unknown, not down; opt-in).

The alert of a transition carries its ``rule`` (which of pingstream's rules fired, if one did) and
``held`` (why its notification is held: such a delivery is recorded as held, not sent). A down a
maintenance window or snooze held is announced when the window ends if the check is still down: a
``down`` alert whose transition says ``released_from`` (the window's kind) and ``rule: window_end``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from schemas.events import Broken, ChannelConfig, CheckConfig, Flapping, IngestAnomaly, IngestGap, Transition

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
    notice: Flapping | Broken | IngestAnomaly | None = None  # the event of a flapping/broken/ingest_anomaly alert
    check: CheckConfig | None = None
    project_name: str = ""
    last_ping: LastPing | None = None
    ping_url: str = ""


def check_id(alert: Alert) -> str:
    """The uuid of the check the alert is about ("" for an ingest gap or anomaly)."""
    source = alert.transition or alert.notice
    return getattr(source, "check_id", "") if source is not None else ""


def reason(alert: Alert) -> str:
    """A short why: the transition's reason, or what the flapping/broken/anomaly event says."""
    n = alert.notice
    if alert.transition is not None:
        return alert.transition.reason
    if isinstance(n, Flapping):
        return f"{n.flips} up/down changes within a day"
    if isinstance(n, Broken):
        return f"down since {_iso(n.down_since)}"
    if isinstance(n, IngestAnomaly):
        source = f" from {n.network}" if n.network else ""
        return (f"{n.volume} pings{source} in the minute from {_iso(n.start)}, against {n.baseline:g} usual: "
                f"{n.unknown} missed deadline(s) judged unknown, not down")
    return "ingest gap"


def _failing(t: Transition) -> bool:
    return t.reason.startswith(("fail ping", "checkin status=fail"))


def alert_events(t: Transition) -> tuple[str, ...]:
    """The alert events ``t`` is (empty: none a channel can choose)."""
    to, frm = t.to_status, t.from_status
    if t.released_from:
        return ("down",)  # a down a window held, announced at its end: the check is still down
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
    doc: dict = {"type": f"check.{alert.event}" if alert.check or check_id(alert) else alert.event,
                 "id": alert.id, "event": alert.event, "status": alert.status, "at": _iso(alert.at)}
    if alert.gap is not None:
        doc.update(type="ingest_gap", start=_iso(alert.gap.start), end=_iso(alert.gap.end),
                   partition=alert.gap.partition)
        return doc
    n = alert.notice
    if isinstance(n, IngestAnomaly):
        doc.update(type="ingest_anomaly", project={"id": n.project_id, "name": alert.project_name},
                   start=_iso(n.start), end=_iso(n.end), volume=n.volume, baseline=n.baseline, unknown=n.unknown,
                   network=n.network)
        return doc
    t = alert.transition
    if isinstance(n, Flapping):
        doc["flapping"] = {"flips": n.flips}
    elif isinstance(n, Broken):
        doc["broken"] = {"down_since": _iso(n.down_since)}
    else:
        doc["transition"] = {"from": t.from_status, "to": t.to_status, "reason": t.reason,
                         "cause_event_id": t.cause_event_id or None, "rule": t.rule, "held": t.held}
        if t.released_from:
            doc["transition"]["released_from"] = t.released_from  # held by that window until now
    check = alert.check
    subject_ = t if t is not None else n
    c: dict = {"uuid": subject_.check_id, "project": {"id": subject_.project_id, "name": alert.project_name}}
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
    $PROJECT, $PING_URL, $REASON, $RULE, $EVENT). ``$JSON`` is built only when ``template`` (if given) uses it."""
    safe = quote if urlencode else (lambda s: s)
    check = alert.check
    name = check.name if check else ""
    tags = check.tags if check else ""
    ping = alert.last_ping
    body = body_text(ping)
    out = {
        "$CODE": check_id(alert),
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
        "$REASON": safe(reason(alert)),
        "$RULE": safe((alert.transition.rule or "") if alert.transition else ""),
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
    if isinstance(alert.notice, IngestAnomaly):
        project = alert.project_name or alert.notice.project_id
        return f"pingstream: ingest anomaly in {project} ({alert.notice.unknown} check(s) judged unknown)"
    name = (alert.check.name if alert.check else "") or check_id(alert)
    return f"{alert.status.upper()} | {name}"


def text(alert: Alert) -> str:
    """The plain-text message of e-mail and chat alerts."""
    if alert.gap is not None:
        g = alert.gap
        return (f"pingstream heard no pings on partition {g.partition} from {_iso(g.start)} to {_iso(g.end)}. "
                "No check was called down for that span: the data, not the jobs, may be missing.")
    if isinstance(alert.notice, IngestAnomaly):
        n = alert.notice
        return (f"Ping volume of project {alert.project_name or n.project_id} fell abnormally: {reason(alert)}. "
                "The checks were not called down for it; they are judged again as pings return.")
    t, check, ping = alert.transition, alert.check, alert.last_ping
    name = (check.name if check else "") or check_id(alert)
    if t is None:
        what = "FLAPPING" if isinstance(alert.notice, Flapping) else "BROKEN"
        lines = [f'The check "{name}" is {what} ({reason(alert)}).']
    else:
        lines = [f'The check "{name}" is {alert.status.upper()} ({t.reason}).']
    if t is not None and t.rule:
        lines.append(f"Rule: {t.rule}")
    lines.append("")
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
