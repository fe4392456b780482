"""A channel's specification: validating ``POST /api/v3/channels/`` input into a ChannelConfig.

Channels are pingstream's extension (Healthchecks creates integrations in its web UI); the
answers follow the Management API's style: ``json validation error: <field> <problem>`` for
the first bad field. Pure: whether a webhook's *resolved* address is private is decided by
the notifier when it connects (``notify.safety``); here only literal addresses and
``localhost`` are refused, so an obviously internal target fails at once.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from datetime import datetime
from email.utils import parseaddr
from urllib.parse import urlsplit

from schemas.events import ChannelConfig

from .spec import SpecError, has_control

KINDS = ("webhook", "email", "apprise")
EVENTS = ("down", "up", "started", "grace", "failure", "paused", "ingest_gap", "flapping", "broken", "ingest_anomaly")
DEFAULT_EVENTS = ("down", "up")
METHODS = ("GET", "POST", "PUT")
MAX_URL = 2000
MAX_TEMPLATE = 10_000


def is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, link-local, private, unspecified, reserved or multicast: not a place on the internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def literal_private_host(host: str) -> bool:
    """Whether ``host`` (as written in a URL) is ``localhost`` or a literal private address."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return is_private(ipaddress.ip_address(host))
    except ValueError:
        return False


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _str(name: str, value, max_len: int) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{name} is not a string")
    if len(value) > max_len:
        raise SpecError(f"{name} is too long")
    return value


def _http_url(name: str, value, allow_private: bool) -> str:
    url = _str(name, value, MAX_URL).strip()
    if not url:
        raise SpecError(f"{name} is missing")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise SpecError(f"{name} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in url for c in " \r\n\t"):
        raise SpecError(f"{name} is not a valid URL")
    if not allow_private and literal_private_host(parts.hostname):
        raise SpecError(f"{name} points to a private address")
    return url


def _apprise_url(name: str, value, allow_private: bool) -> str:
    url = _str(name, value, MAX_URL).strip()
    if not url:
        raise SpecError(f"{name} is missing")
    import apprise  # the library knows its ~100 services' URL forms

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise SpecError(f"{name} is not an Apprise URL")
    host = urlsplit(url).hostname
    if not allow_private and host and literal_private_host(host):
        raise SpecError(f"{name} points to a private address")
    return url


def _email(name: str, value) -> str:
    address = _str(name, value, 254).strip()
    _, parsed = parseaddr(address)
    if not parsed or parsed != address or "@" not in address or address.startswith("@") or address.endswith("@"):
        raise SpecError(f"{name} is not a valid address")
    return address


def _events(value) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise SpecError("events is not an array")
    for item in value:
        if item not in EVENTS:
            raise SpecError("an item in 'events' has unexpected value")
    return tuple(dict.fromkeys(value))


def _headers(value) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise SpecError("headers is not an object")
    out = []
    for key, item in value.items():
        if not isinstance(item, str) or not key or any(c in key + item for c in "\r\n") or ":" in key:
            raise SpecError("an item in 'headers' has unexpected value")
        out.append((key, item))
    return tuple(out)


def channel_from_spec(data: dict, *, id: str, project_id: str, created: datetime,
                      allow_private: bool = False) -> ChannelConfig:
    """A new channel from a request body; raises SpecError naming the first bad field."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise SpecError("kind has unexpected value" if "kind" in data else "kind is missing")
    name = _str("name", data.get("name", ""), 100)
    if has_control(name):
        raise SpecError("name contains a control character")
    fields: dict = {"name": name}
    fields["events"] = _events(data["events"]) if "events" in data else DEFAULT_EVENTS
    if kind == "webhook":
        fields["url"] = _http_url("url", data.get("url", ""), allow_private)
        method = data.get("method", "POST")
        if method not in METHODS:
            raise SpecError("method has unexpected value")
        fields["method"] = method
        if "headers" in data:
            fields["headers"] = _headers(data["headers"])
        if "body" in data:
            fields["body"] = _str("body", data["body"], MAX_TEMPLATE)
        fields["secret"] = new_secret()
    elif kind == "apprise":
        fields["url"] = _apprise_url("url", data.get("url", ""), allow_private)
    else:
        fields["email"] = _email("email", data.get("email", ""))
    return ChannelConfig(id=id, project_id=project_id, kind=kind, created=created, **fields)


def channel_document(channel: ChannelConfig) -> dict:
    """Healthchecks' ``Channel.to_dict``: what ``GET /api/v3/channels/`` lists (never a URL or secret)."""
    return {"id": channel.id, "name": channel.name, "kind": channel.kind}
