"""Ping rules: what a ping URL names and what a ping counts as, as Healthchecks decides it.

Pure functions; the edge's two ping paths (ingest/pings.py and the fast path)
and the Overwatch checkin endpoint all decide from here.
"""

from __future__ import annotations

import re

from schemas.events import CheckConfig

# Django's path converters, as Healthchecks' routes use them: lowercase-only
# uuids, slugs of [-a-zA-Z0-9_], exit statuses of digits.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# A run id is any uuid in its canonical textual form, either case.
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
SLUG = re.compile(r"[-a-zA-Z0-9_]+\Z")
ACTIONS = frozenset({"start", "fail", "log"})
MAX_EXIT_STATUS = 255


def parse_action(part: str | None) -> tuple[str, int | None] | None:
    """(action, exit_status) for the URL's last segment; None when it matches no route."""
    if part is None:
        return "success", None
    if part in ACTIONS:
        return part, None
    if part.isdigit() and part.isascii():
        return "success", int(part)
    return None


def matches(text: str, keywords: str) -> bool:
    """True when any of the comma-separated keywords occurs in ``text``."""
    return any(k.strip() and k.strip() in text for k in keywords.split(","))


def filtered_action(check: CheckConfig, method: str, body: bytes, action: str) -> str:
    """Apply the check's filters: POST-only checks ignore other methods, keyword
    filters decide by the body (failure wins over success over start), and a
    paused manual_resume check ignores pings."""
    if check.methods == "POST" and method != "POST":
        return "ign"
    if check.filter_body and (check.success_kw or check.failure_kw or check.start_kw):
        text = body.decode("utf-8", errors="replace")
        if check.failure_kw and matches(text, check.failure_kw):
            action = "fail"
        elif check.success_kw and matches(text, check.success_kw):
            action = "success"
        elif check.start_kw and matches(text, check.start_kw):
            action = "start"
        else:
            action = "ign"
    if check.paused and check.manual_resume:
        return "ign"
    return action


def ping_kind(check: CheckConfig, action: str, exit_status: int | None, method: str, body: bytes) -> str:
    """What a valid ping counts as: a non-zero exit status is a failure, then the check's filters."""
    if exit_status is not None and exit_status > 0:
        action = "fail"
    return filtered_action(check, method, body, action)


def resumes(check: CheckConfig, kind: str) -> bool:
    """Whether a ping of ``kind`` takes ``check`` out of its pause."""
    return check.paused and kind != "ign" and not check.manual_resume


def client_addr(forwarded_for: str, peer: str) -> str:
    """The client's address: the first X-Forwarded-For hop, else the socket's peer."""
    addr = (forwarded_for or peer or "").split(",")[0].strip()
    if "." in addr and ":" in addr:  # "ipv4:port" from some proxies: drop the port
        addr = addr.split(":")[0]
    return addr
