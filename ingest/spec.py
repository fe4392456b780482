"""Validation of Management API check specs, with Healthchecks' rules and messages.

Upstream validates strictly (an int is not a bool, null is an error), reports
only the first failing field, in declaration order, as
``json validation error: <field> <problem>``. Unknown keys are ignored.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import datetime, timezone
from functools import lru_cache

from croniter import croniter
from oncalendar import OnCalendar

MAX_PERIOD_S = 31_536_000
UNIQUE_FIELDS = ("name", "slug", "tags", "timeout", "grace")
_SLUG = re.compile(r"[a-z0-9\-_]*\Z")


class SpecError(ValueError):
    def __str__(self) -> str:
        return f"json validation error: {self.args[0]}"


@lru_cache(maxsize=1)
def all_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def guess_kind(schedule: str) -> str:
    """A single line of five fields is cron; anything else is OnCalendar (as upstream)."""
    if "\n" not in schedule.strip() and len(schedule.split()) == 5:
        return "cron"
    return "oncalendar"


def schedule_is_valid(schedule: str) -> bool:
    try:
        if guess_kind(schedule) == "cron":
            if not croniter.is_valid(schedule):
                return False
            croniter(schedule, datetime(2000, 1, 1)).get_next(datetime)
        else:
            next(OnCalendar(schedule, datetime(2000, 1, 1, tzinfo=timezone.utc)))
    except Exception:  # both libraries raise assorted errors for bad input
        return False
    return True


def _str(name: str, value, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{name} is not a string")
    if max_len is not None and len(value) > max_len:
        raise SpecError(f"{name} is too long")
    return value


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} is not a boolean")
    return value


def _period(name: str, value, min_s: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} is not a number")
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
    take("desc", _str)
    take("failure_kw", lambda n, v: _str(n, v, 200))
    take("filter_body", _bool)
    take("filter_subject", _bool)
    take("grace", lambda n, v: _period(n, v, min_timeout_s))
    take("manual_resume", _bool)
    if "methods" in data and data["methods"] not in ("", "POST"):
        raise SpecError("methods has unexpected value")
    take("methods", _str)
    take("name", lambda n, v: _str(n, v, 100))
    if "schedule" in data:
        schedule = _str("schedule", data["schedule"], 100)
        if not schedule_is_valid(schedule):
            raise SpecError("schedule is not a valid cron or OnCalendar expression")
        out["schedule"] = schedule
    if "slug" in data:
        slug = _str("slug", data["slug"], 100)
        if not _SLUG.match(slug):
            raise SpecError("slug does not match pattern")
        out["slug"] = slug
    take("start_kw", lambda n, v: _str(n, v, 200))
    take("subject", lambda n, v: _str(n, v, 200))
    take("subject_fail", lambda n, v: _str(n, v, 200))
    take("success_kw", lambda n, v: _str(n, v, 200))
    take("tags", _str)
    take("timeout", lambda n, v: _period(n, v, min_timeout_s))
    if "tz" in data:
        tz = _str("tz", data["tz"])
        if tz not in all_timezones():
            raise SpecError("tz is not a valid timezone")
        out["tz"] = tz
    if "unique" in data:
        unique = data["unique"]
        if not isinstance(unique, list):
            raise SpecError("unique is not an array")
        for item in unique:
            if item not in UNIQUE_FIELDS:
                raise SpecError("an item in 'unique' has unexpected value")
        out["unique"] = unique
    return out


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
