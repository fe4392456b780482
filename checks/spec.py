"""A check's specification: validating Management API and Overwatch input, applying it to a check.

Upstream validates strictly (an int is not a bool, null is an error), reports
only the first failing field, in declaration order, as
``json validation error: <field> <problem>``. Unknown keys are ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zoneinfo
from functools import lru_cache

import msgspec

from schemas.events import ChannelConfig, CheckConfig

from .extensions import ExtensionError, bounds_error, extension_changes, validate_extension
from .schedule import guess_kind, schedule_is_valid

MAX_PERIOD_S = 31_536_000
MAX_NAME = 100  # characters of a name or a slug
UNIQUE_FIELDS = ("name", "slug", "tags", "timeout", "grace")
_SLUG = re.compile(r"[a-z0-9\-_]*\Z")
UNIQUE_KEY = re.compile(r"[0-9a-f]{40}\Z")  # what unique_key() gives


class SpecError(ValueError):
    def __str__(self) -> str:
        return f"json validation error: {self.args[0]}"


@lru_cache(maxsize=1)
def all_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - {"Factory", "localtime", "posixrules"})


# Deprecated IANA names and the zones upstream (hc/lib/tz.py) stores instead.
LEGACY_TIMEZONES = {
    "Africa/Asmera": "Africa/Nairobi", "America/Argentina/ComodRivadavia": "America/Argentina/Catamarca",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires", "America/Catamarca": "America/Argentina/Catamarca",
    "America/Cordoba": "America/Argentina/Cordoba", "America/Fort_Wayne": "America/Indiana/Indianapolis",
    "America/Godthab": "America/Nuuk", "America/Indianapolis": "America/Indiana/Indianapolis",
    "America/Jujuy": "America/Argentina/Jujuy", "America/Knox_IN": "America/Indiana/Knox",
    "America/Louisville": "America/Kentucky/Louisville", "America/Mendoza": "America/Argentina/Mendoza",
    "America/Rosario": "America/Argentina/Cordoba", "Antarctica/South_Pole": "Pacific/Auckland",
    "Asia/Ashkhabad": "Asia/Ashgabat", "Asia/Calcutta": "Asia/Kolkata", "Asia/Choibalsan": "Asia/Ulaanbaatar",
    "Asia/Chungking": "Asia/Shanghai", "Asia/Dacca": "Asia/Dhaka", "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Macao": "Asia/Macau", "Asia/Rangoon": "Asia/Yangon", "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Asia/Thimbu": "Asia/Thimphu", "Asia/Ujung_Pandang": "Asia/Makassar", "Asia/Ulan_Bator": "Asia/Ulaanbaatar",
    "Atlantic/Faeroe": "Atlantic/Faroe", "Australia/ACT": "Australia/Sydney", "Australia/LHI": "Australia/Lord_Howe",
    "Australia/North": "Australia/Darwin", "Australia/NSW": "Australia/Sydney",
    "Australia/Queensland": "Australia/Brisbane", "Australia/South": "Australia/Adelaide",
    "Australia/Tasmania": "Australia/Hobart", "Australia/Victoria": "Australia/Melbourne",
    "Australia/West": "Australia/Perth", "Brazil/Acre": "America/Rio_Branco", "Brazil/DeNoronha": "America/Noronha",
    "Brazil/East": "America/Sao_Paulo", "Brazil/West": "America/Manaus", "Canada/Atlantic": "America/Halifax",
    "Canada/Central": "America/Winnipeg", "Canada/Eastern": "America/Toronto", "Canada/Mountain": "America/Edmonton",
    "Canada/Newfoundland": "America/St_Johns", "Canada/Pacific": "America/Vancouver",
    "Canada/Saskatchewan": "America/Regina", "Canada/Yukon": "America/Whitehorse", "CET": "Europe/Brussels",
    "Chile/Continental": "America/Santiago", "Chile/EasterIsland": "Pacific/Easter", "CST6CDT": "America/Chicago",
    "Cuba": "America/Havana", "EET": "Europe/Athens", "Egypt": "Africa/Cairo", "Eire": "Europe/Dublin",
    "EST": "America/Panama", "EST5EDT": "America/New_York", "Europe/Kiev": "Europe/Kyiv",
    "Europe/Uzhgorod": "Europe/Kyiv", "Europe/Zaporozhye": "Europe/Kyiv", "GB": "Europe/London",
    "GB-Eire": "Europe/London", "GMT+0": "Etc/GMT", "GMT-0": "Etc/GMT", "GMT0": "Etc/GMT", "Greenwich": "Etc/GMT",
    "Hongkong": "Asia/Hong_Kong", "HST": "Pacific/Honolulu", "Iceland": "Africa/Abidjan", "Iran": "Asia/Tehran",
    "Israel": "Asia/Jerusalem", "Jamaica": "America/Jamaica", "Japan": "Asia/Tokyo",
    "Kwajalein": "Pacific/Kwajalein", "Libya": "Africa/Tripoli", "MET": "Europe/Brussels",
    "Mexico/BajaNorte": "America/Tijuana", "Mexico/BajaSur": "America/Mazatlan",
    "Mexico/General": "America/Mexico_City", "MST": "America/Phoenix", "MST7MDT": "America/Denver",
    "Navajo": "America/Denver", "NZ": "Pacific/Auckland", "NZ-CHAT": "Pacific/Chatham",
    "Pacific/Enderbury": "Pacific/Kanton", "Pacific/Ponape": "Pacific/Guadalcanal",
    "Pacific/Truk": "Pacific/Port_Moresby", "Poland": "Europe/Warsaw", "Portugal": "Europe/Lisbon",
    "PRC": "Asia/Shanghai", "PST8PDT": "America/Los_Angeles", "ROC": "Asia/Taipei", "ROK": "Asia/Seoul",
    "Singapore": "Asia/Singapore", "Turkey": "Europe/Istanbul", "UCT": "Etc/UTC", "Universal": "Etc/UTC",
    "US/Alaska": "America/Anchorage", "US/Aleutian": "America/Adak", "US/Arizona": "America/Phoenix",
    "US/Central": "America/Chicago", "US/East-Indiana": "America/Indiana/Indianapolis",
    "US/Eastern": "America/New_York", "US/Hawaii": "Pacific/Honolulu", "US/Indiana-Starke": "America/Indiana/Knox",
    "US/Michigan": "America/Detroit", "US/Mountain": "America/Denver", "US/Pacific": "America/Los_Angeles",
    "US/Samoa": "Pacific/Pago_Pago", "W-SU": "Europe/Moscow", "WET": "Europe/Lisbon", "Zulu": "Etc/UTC",
}


def _str(name: str, value, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{name} is not a string")
    if max_len is not None and len(value) > max_len:
        raise SpecError(f"{name} is too long")
    return value


# Characters no name, tag or keyword may hold: C0 and C1 controls (NUL included) and DEL, and the
# bidirectional embeddings, overrides and isolates, which make text display in another order than
# it is stored ("Trojan Source"). A description may hold tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def has_control(text: str, multiline: bool = False) -> bool:
    """True when ``text`` holds a character ``_CONTROL`` names (tab, CR and LF allowed when multiline)."""
    return (_CONTROL_MULTILINE if multiline else _CONTROL).search(text) is not None


def _text(name: str, value, max_len: int | None = None, multiline: bool = False) -> str:
    """A string field people read: as ``_str``, and free of control characters."""
    value = _str(name, value, max_len)
    if has_control(value, multiline):
        raise SpecError(f"{name} contains a control character")
    return value


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} is not a boolean")
    return value


def _period(name: str, value, min_s: int) -> int:
    # Upstream turns any int into seconds before its strict checks, and a bool is an int there:
    # true is 1 second (too small), not "not a number".
    if not isinstance(value, int):
        raise SpecError(f"{name} is not a number")
    value = int(value)
    if value < min_s:
        raise SpecError(f"{name} is too small")
    if value > MAX_PERIOD_S:
        raise SpecError(f"{name} is too large")
    return value


def validate(data: dict, min_timeout_s: int = 60) -> dict:
    """The recognised fields of ``data``, validated; raises SpecError for the first bad one."""
    out: dict = {}

    def take(name: str, check) -> None:
        if name in data:
            out[name] = check(name, data[name])

    take("channels", _str)
    take("desc", lambda n, v: _text(n, v, multiline=True))
    take("failure_kw", lambda n, v: _text(n, v, 200))
    take("filter_subject", _bool)
    take("filter_body", _bool)
    take("filter_http_body", _bool)
    take("filter_default_fail", _bool)
    take("grace", lambda n, v: _period(n, v, min_timeout_s))
    take("manual_resume", _bool)
    if "methods" in data and data["methods"] not in ("", "POST"):
        raise SpecError("methods has unexpected value")
    take("methods", _str)
    take("name", lambda n, v: _text(n, v, MAX_NAME))
    if "schedule" in data:
        schedule = _str("schedule", data["schedule"], 100)
        if not schedule_is_valid(schedule):
            raise SpecError("schedule is not a valid cron or OnCalendar expression")
        out["schedule"] = schedule
    if "slug" in data:
        slug = _str("slug", data["slug"], MAX_NAME)
        if not _SLUG.match(slug):
            raise SpecError("slug does not match pattern")
        out["slug"] = slug
    take("start_kw", lambda n, v: _text(n, v, 200))
    take("subject", lambda n, v: _text(n, v, 200))
    take("subject_fail", lambda n, v: _text(n, v, 200))
    take("success_kw", lambda n, v: _text(n, v, 200))
    take("tags", _text)
    take("timeout", lambda n, v: _period(n, v, min_timeout_s))
    if "tz" in data:
        out["tz"] = _tz("tz", data["tz"])
    if "unique" in data:
        unique = data["unique"]
        if not isinstance(unique, list):
            raise SpecError("unique is not an array")
        for item in unique:
            if item not in UNIQUE_FIELDS:
                raise SpecError("an item in 'unique' has unexpected value")
        out["unique"] = unique
    try:
        out.update(validate_extension(data))  # pingstream's own fields, after Healthchecks'
    except ExtensionError as exc:
        raise SpecError(str(exc)) from None
    return out


def _tz(name: str, value) -> str:
    """A time zone name; a legacy alias becomes its canonical zone (Europe/Kiev -> Europe/Kyiv)."""
    tz = LEGACY_TIMEZONES.get(_str(name, value), value)
    if tz not in all_timezones():
        raise SpecError(f"{name} is not a valid timezone")
    return tz


class ChannelError(ValueError):
    """A check's ``channels`` names a channel the project has not (upstream's BadChannelException)."""


def resolve_channels(channels: str, available: list[ChannelConfig]) -> tuple[str, ...]:
    """The sorted channel ids ``channels`` means, as Healthchecks' ``_update`` reads it: ``"*"`` every
    channel of the project, ``""`` none, else comma-separated channel ids or names, each matching
    exactly one channel. Raises ChannelError with upstream's message for the first bad item."""
    if channels == "*":
        return tuple(sorted(c.id for c in available))
    if channels == "":
        return ()
    chosen: set[str] = set()
    for item in channels.split(","):
        if item == "":
            raise ChannelError("empty channel identifier")
        matches = [c for c in available if c.id == item or c.name == item]
        if not matches:
            raise ChannelError(f"invalid channel identifier: {item}")
        if len(matches) > 1:
            raise ChannelError(f"non-unique channel identifier: {item}")
        chosen.add(matches[0].id)
    return tuple(sorted(chosen))


def spec_kind(spec: dict) -> str | None:
    """The schedule kind a spec asks for: from its schedule, else simple when it names a timeout."""
    if spec.get("schedule"):
        return guess_kind(spec["schedule"])
    if spec.get("timeout"):
        return "simple"
    return None


def load_json(raw: bytes):
    """A request body as JSON; ``ValueError`` (with upstream's message) for anything that is not.

    Deeply nested input fails here as malformed instead of exhausting the parser's stack,
    and so does a lone surrogate escape (``"\\ud800"``): JSON takes it, but no text
    containing it can be encoded as UTF-8 again (into an event, a response).
    """
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, UnicodeError, RecursionError):
        raise ValueError("could not parse request body") from None
    return body


def slugify(name: str) -> str:
    """Django's slugify, as v1/v2 use it to derive a slug from a name."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")


def unique_key(check_id: str) -> str:
    """Healthchecks' stable read-only identifier: sha1 of the uuid's hex form."""
    return hashlib.sha1(check_id.replace("-", "").encode()).hexdigest()


def apply_spec(check: CheckConfig, spec: dict, version: int) -> CheckConfig:
    """Healthchecks' _update: only the fields the (validated) spec names change.

    Raises SpecError when the extension's run time bounds end up crossed."""
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
        ("filter_http_body", "filter_http_body"),
        ("filter_default_fail", "filter_default_fail"),
        ("grace", "grace_s"),
        ("channels", "channels"),  # resolved to ids by the caller (resolve_channels)
    ):
        if key in spec:
            changes[field] = spec[key]
    changes.update(extension_changes(spec))
    check = msgspec.structs.replace(check, **changes)
    problem = bounds_error(check)
    if problem is not None:
        raise SpecError(problem)
    return check


def find_unique(checks: list[CheckConfig], spec: dict) -> CheckConfig | None:
    """The check whose fields named in ``spec["unique"]`` all equal the spec's, if any."""
    unique = spec.get("unique") or []
    if not unique or any(field not in spec for field in unique):
        return None
    for check in checks:
        values = {"name": check.name, "slug": check.slug, "tags": check.tags,
                  "timeout": check.timeout_s, "grace": check.grace_s}
        if all(values[field] == spec[field] for field in unique):
            return check
    return None


def monitor_spec(body: dict, min_timeout_s: int) -> dict:
    """CheckConfig fields for a new Overwatch SCHEDULED monitor; raises SpecError naming the bad field."""
    if body.get("type") != "SCHEDULED":
        raise SpecError("type must be SCHEDULED")
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise SpecError(f"name must be a string of at most {MAX_NAME} characters")
    if has_control(name):
        raise SpecError("name contains a control character")
    out: dict = {"name": name}
    for field, target in (("interval", "timeout_s"), ("gracePeriod", "grace_s")):
        if field in body:
            value = body[field]
            if isinstance(value, bool) or not isinstance(value, int) or not min_timeout_s <= value <= MAX_PERIOD_S:
                raise SpecError(f"{field} must be a number of seconds from {min_timeout_s} to {MAX_PERIOD_S}")
            out[target] = value
    if "schedule" in body:
        schedule = body["schedule"]
        if not isinstance(schedule, str) or len(schedule) > 100 or not schedule_is_valid(schedule):
            raise SpecError("schedule is not a valid cron or OnCalendar expression")
        out.update(schedule=schedule, kind=guess_kind(schedule))
    if "timezone" in body:
        if not isinstance(body["timezone"], str):
            raise SpecError("timezone is not a valid timezone")
        out["tz"] = _tz("timezone", body["timezone"])
    return out


MAX_PROJECT_NAME = 60  # upstream's ProjectNameForm


def project_name_error(name: str) -> str | None:
    """Why ``name`` cannot be a project's name, or None: 1 to 60 characters, no control characters."""
    if not name.strip() or len(name) > MAX_PROJECT_NAME:
        return f"a project name is 1 to {MAX_PROJECT_NAME} characters"
    if has_control(name):
        return "a project name may not contain control characters"
    return None


def provision_spec(slug: str) -> dict:
    """The spec of the check ``?create=1`` makes for an unknown slug (its name is the slug, as
    upstream), validated as the Management API validates a name and a slug."""
    return validate({"name": slug, "slug": slug})


def may_create(checks_in_project: int, check_limit: int, auto_provision: bool = False) -> bool:
    """Whether a project holding ``checks_in_project`` checks may have one more. As upstream,
    auto-provisioning (``?create=1``) may take a project up to twice its limit."""
    return checks_in_project < check_limit * (2 if auto_provision else 1)
