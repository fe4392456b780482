"""Query parameters of the read views, parsed strictly: a bad one is a 400 whose message names it.

Functions take the request's query mapping (and nothing else of the request), so they are pure
apart from ``utcnow()`` as the default end of a time range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from reads import durations as queries
from schemas.events import utcnow

from .views import ApiError

DEFAULT_RANGE = {"1h": timedelta(days=7), "1d": timedelta(days=90)}
MAX_BUCKETS = 10000
EARLIEST, LATEST = datetime(1970, 1, 2, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc)
# A quantile level: 0..1 with at most six decimals (no exponents, signs, underscores or NaN).
_LEVEL = re.compile(r"(0(\.\d{1,6})?|1(\.0{1,6})?|\.\d{1,6})\Z")
# Upstream's FlipsFiltersForm bounds: timestamps up to 10,000,000,000 (year 2286), at most a year of seconds.
_FLIPS_PARAMS = {"start": 10_000_000_000, "end": 10_000_000_000, "seconds": 31_536_000}


class BadParam(ApiError):
    """A query parameter that cannot be served: a 400 whose message names it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


def time_param(query: Mapping[str, str], name: str, default: datetime) -> datetime:
    """ISO 8601 (naive means UTC) or unix seconds, in [1970-01-02, 2200-01-01)."""
    raw = query.get(name, "")
    if raw == "":
        return default
    try:
        if raw.isascii() and raw.isdigit() and len(raw) <= 12:
            value = datetime.fromtimestamp(int(raw), timezone.utc)
        else:
            value = datetime.fromisoformat(raw)
            value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise BadParam(f"invalid {name}: expected an ISO 8601 time") from None
    if not EARLIEST <= value < LATEST:
        raise BadParam(f"invalid {name}: out of range")
    return value


def time_range(query: Mapping[str, str], default: timedelta) -> tuple[datetime, datetime]:
    """``since`` and ``until``; until defaults to now, since to ``default`` before until."""
    until = time_param(query, "until", utcnow())
    since = time_param(query, "since", until - default)
    if since >= until:
        raise BadParam("invalid since: must be before until")
    return since, until


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
        raise BadParam(f"invalid {name}: expected an integer {low}..{high}")
    return int(raw)


def bucket_param(query: Mapping[str, str]) -> str:
    bucket = query.get("bucket", "1h")
    if bucket not in queries.BUCKETS:
        raise BadParam("invalid bucket: expected 1h or 1d")
    return bucket


def quantiles_param(query: Mapping[str, str]) -> list[float]:
    """``q``: comma-separated levels; the rollups' p50, p95, p99 by default."""
    raw = query.get("q", "")
    if raw == "":
        return list(queries.ROLLUP_QUANTILES)
    parts = raw.split(",")
    if len(parts) > queries.MAX_QUANTILES or not all(_LEVEL.match(p.strip()) for p in parts):
        raise BadParam(f"invalid q: expected 1..{queries.MAX_QUANTILES} comma-separated values in 0..1")
    return list(dict.fromkeys(float(p) for p in parts))  # duplicates once, order kept


def duration_range(query: Mapping[str, str], bucket: str) -> tuple[datetime, datetime]:
    """A time range of at most ``MAX_BUCKETS`` buckets."""
    since, until = time_range(query, DEFAULT_RANGE[bucket])
    if (until - queries.align(since, bucket)) / queries.BUCKETS[bucket][1] > MAX_BUCKETS:
        raise BadParam(f"invalid since: more than {MAX_BUCKETS} buckets")
    return since, until


def wants_csv(query: Mapping[str, str], accept: str) -> bool:
    """``?format=csv``, or no format and an ``Accept`` naming text/csv."""
    fmt = query.get("format", "")
    if fmt not in ("", "json", "csv"):
        raise BadParam("invalid format: expected json or csv")
    return fmt == "csv" or (fmt == "" and "text/csv" in accept)


def flips_window(query: Mapping[str, str]) -> tuple[int | None, int | None, int | None]:
    """The flips view's ``start``, ``end`` (unix seconds) and ``seconds``, each None when absent or 0
    (Healthchecks filters only by the values that are true: ``?seconds=0`` lists every flip). As its
    form, an empty ``seconds`` is absent but an empty ``start`` or ``end`` is not a timestamp."""
    return tuple(_flips_int(query, name) or None for name in _FLIPS_PARAMS)


def _flips_int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or (raw == "" and name == "seconds"):
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) > _FLIPS_PARAMS[name]:
        raise BadParam(f"invalid {name}")
    return int(raw)
