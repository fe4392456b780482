"""Status badges, as Healthchecks serves them: keys, signed URLs, the state a badge shows, SVG.

Pure. Two kinds of badge:

- a project's badge per tag (``/badge/<badge_key>/<sig>/<tag>.<fmt>``, ``*`` for all checks),
  listed by ``GET /api/v3/badges/``; the signature proves the URL was handed out by the API;
- a check's own badge (``/b/<states>/<badge_key>.<fmt>``), linked from the check document's
  ``badge_url``.

Badge URLs are meant to be published (a README, a status page), so a badge key must tell
nothing about the secrets behind it. Healthchecks stores random keys; pingstream derives them
with one-way hashes instead, so every edge computes the same keys with no registry field: a
check's from its uuid (whoever knows the uuid may ping the check anyway), a project's and the
signatures from the project's API key, which never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from html import escape
from urllib.parse import quote

FORMATS = ("svg", "json", "shields")
SHIELDS_COLORS = {"up": "success", "late": "important", "down": "critical"}
_COLORS = {"up": "#4c1", "late": "#fe7d37", "down": "#e05d44"}
# Verdana 11px advance widths (px) of the characters labels mostly use; 7 for the rest.
_NARROW = {"f": 4, "i": 3, "j": 3, "l": 3, "r": 4, "t": 5, "I": 3, "J": 4, "-": 4,
           "c": 6, "e": 6, "s": 6, "x": 6, "1": 6, "F": 6, "L": 6, "P": 6, "_": 6}
_WIDE = {"m": 10, "w": 9, "A": 8, "C": 8, "D": 8, "H": 8, "N": 8, "U": 8, "V": 8,
         "G": 9, "O": 9, "Q": 9, "M": 10, "W": 11}


def check_badge_key(check_id: str) -> str:
    """A check's badge key: a uuid hashed from the check's uuid (which it does not reveal)."""
    digest = hashlib.sha256(f"pingstream check badge {check_id}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def project_badge_key(api_key: str) -> str:
    """A project's badge key, hashed from its API key."""
    return hashlib.sha256(f"pingstream project badge {api_key}".encode()).hexdigest()[:32]


def signature(api_key: str, badge_key: str, tag: str) -> str:
    """The 8 URL-safe characters that sign (badge key, tag) for the project of ``api_key``."""
    mac = hmac.new(api_key.encode(), f"{badge_key}/{tag}".encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(mac).decode()[:8]


def signature_matches(api_key: str, badge_key: str, tag: str, sig: str) -> bool:
    return hmac.compare_digest(signature(api_key, badge_key, tag), sig[:8])


def tag_badge_urls(public_url: str, api_key: str, badge_key: str, tag: str) -> dict[str, str]:
    """The six URLs of one tag's badge: svg/json/shields, each with 2 states (up, down) and 3 (late too)."""
    sig = signature(api_key, badge_key, tag)
    where = f"{public_url}/badge/{badge_key}"
    name = "" if tag == "*" else "/" + quote(tag, safe="")  # the badge of all checks has no tag part
    out = {}
    for fmt in FORMATS:
        out[fmt] = f"{where}/{sig}-2{name}.{fmt}"  # "-2": two states, up and down
        out[fmt + "3"] = f"{where}/{sig}{name}.{fmt}"  # three: late too
    return out


def badge_state(statuses: list[str], with_late: bool, stop_at_down: bool = False) -> tuple[str, int, int, int]:
    """(state, total, grace, down) of the checks whose statuses are given: down if any is down,
    else late if any is in its grace period (and the badge shows 3 states), else up."""
    state, grace, down, total = "up", 0, 0, 0
    for status in statuses:
        total += 1
        if status == "down":
            down += 1
            state = "down"
            if stop_at_down:  # an SVG shows only the state; Healthchecks stops counting here
                break
        elif status == "grace":
            grace += 1
            if state == "up" and with_late:
                state = "late"
    return state, total, grace, down


def shields_document(label: str, state: str) -> dict:
    """The shields.io endpoint badge document."""
    return {"schemaVersion": 1, "label": label, "message": state, "color": SHIELDS_COLORS[state]}


def _width(text: str) -> int:
    return sum(_NARROW.get(c) or _WIDE.get(c) or 7 for c in text) + 10


def svg(label: str, state: str) -> str:
    """A flat two-part badge: the label on grey, the state on its colour."""
    w1, w2 = _width(label), _width(state)
    label, shown = escape(label), escape(state)
    texts = "".join(
        f'<text x="{x}" y="15" fill="#010101" fill-opacity=".3">{t}</text><text x="{x}" y="14">{t}</text>'
        for x, t in ((w1 / 2, label), (w1 + w2 / 2, shown))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w1 + w2}" height="20">'
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        f'<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<mask id="r"><rect width="{w1 + w2}" height="20" rx="3" fill="#fff"/></mask>'
        f'<g mask="url(#r)"><rect width="{w1}" height="20" fill="#555"/>'
        f'<rect x="{w1}" width="{w2}" height="20" fill="{_COLORS[state]}"/>'
        f'<rect width="{w1 + w2}" height="20" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        f'font-size="11">{texts}</g></svg>'
    )
