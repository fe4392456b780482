"""Schedules: which kind an expression is, whether it is valid, and when the next ping is due.

Pure functions of (schedule, time of the last ping); the edge validates with
the same parser the monitor evaluates with.

Times are POSIX seconds (floats, UTC): the monitor keeps a million of them in
memory, and a float is a third of a datetime.

- ``simple``: last ping + timeout.
- ``cron``: 5 fields (croniter), evaluated in the check's IANA time zone.
  DST as Debian cron and Healthchecks' cronsim do it: a time skipped by the
  spring-forward change fires right after the change (croniter does that), and
  in the repeated autumn hour a job with a fixed hour fires once (croniter
  would fire it twice; we drop the second one, or a daily job pinging at the
  first 01:30 would be expected again an hour later and go down falsely).
  A job whose hour field is a wildcard fires in both copies of the hour.
- ``oncalendar``: systemd OnCalendar expressions, one per line (the
  ``oncalendar`` package, which Healthchecks itself uses); ``tz`` is the
  default zone, an expression may name its own.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from oncalendar import OnCalendar, OnCalendarError


class ScheduleError(ValueError):
    pass


_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {tz!r}") from exc


def _second_of_repeated_hour(dt: datetime) -> bool:
    """True for a wall time that exists twice and ``dt`` is its later copy."""
    first, second = dt.replace(fold=0).utcoffset(), dt.replace(fold=1).utcoffset()
    return first != second and dt.utcoffset() == second


class _Cached:
    """Remembers the last answer as an interval: if ``next_after(a) == n`` then no
    fire lies in (a, n), so every t in [a, n) has the same answer. Thousands of
    checks sharing a schedule and pinging in the same slot cost one computation."""

    __slots__ = ("_lo", "_hi")

    def __init__(self) -> None:
        self._lo = self._hi = 0.0

    def next_after(self, t: float) -> float:
        if self._lo <= t < self._hi:
            return self._hi
        n = self._compute(t)
        self._lo, self._hi = t, n
        return n

    def _compute(self, t: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class CronSchedule(_Cached):
    __slots__ = ("expr", "zone", "_fixed_hour")

    def __init__(self, expr: str, tz: str) -> None:
        super().__init__()
        expr = _CRON_MACROS.get(expr.strip().lower(), expr.strip())
        fields = expr.split()
        if len(fields) != 5 or not croniter.is_valid(expr):
            raise ScheduleError(f"invalid cron expression {expr!r}")
        self.expr = expr
        self.zone = _zone(tz)
        self._fixed_hour = not fields[1].startswith("*")

    def _compute(self, t: float) -> float:
        # Whole seconds: fromtimestamp rounds to microseconds, and 10:04:59.9999996 must not
        # become 10:05:00 (croniter would then skip the 10:05 fire, which is still ahead of t).
        it = croniter(self.expr, datetime.fromtimestamp(math.floor(t), self.zone))
        while True:
            n = it.get_next(datetime)
            if self._fixed_hour and _second_of_repeated_hour(n):
                continue
            return n.timestamp()


class OnCalendarSchedule(_Cached):
    __slots__ = ("expr", "zone")

    def __init__(self, expr: str, tz: str) -> None:
        super().__init__()
        self.expr = expr
        self.zone = _zone(tz)
        try:  # parse once now, so a bad expression fails here and not on a ping
            next(OnCalendar(expr, datetime(2000, 1, 1, tzinfo=self.zone)))
        except (OnCalendarError, StopIteration) as exc:
            raise ScheduleError(f"invalid OnCalendar expression {expr!r}: {exc}") from exc

    def _compute(self, t: float) -> float:
        try:
            return next(OnCalendar(self.expr, datetime.fromtimestamp(t, self.zone))).timestamp()
        except StopIteration:  # no more occurrences (a past fixed date): never expected again
            return float("inf")


@functools.lru_cache(maxsize=65536)
def compile_schedule(kind: str, schedule: str, tz: str) -> CronSchedule | OnCalendarSchedule:
    """The parsed schedule (cached: checks share a handful of expressions)."""
    if kind == "cron":
        return CronSchedule(schedule, tz)
    if kind == "oncalendar":
        return OnCalendarSchedule(schedule, tz)
    raise ScheduleError(f"kind {kind!r} has no expression")


def next_expected(kind: str, timeout_s: float, schedule: str, tz: str, last_ping: float) -> float:
    """When the ping after one at ``last_ping`` is due (the grace period starts then).

    A cron/OnCalendar expression this version cannot parse (the edge validates,
    so it comes from a newer edge) falls back to the timeout: the check stays
    watched rather than silently never going down.
    """
    if kind == "simple":
        return last_ping + timeout_s
    try:
        return compile_schedule(kind, schedule, tz).next_after(last_ping)
    except ScheduleError:
        return last_ping + timeout_s


def guess_kind(schedule: str) -> str:
    """A single line of five fields is cron; anything else is OnCalendar (as Healthchecks)."""
    if "\n" not in schedule.strip() and len(schedule.split()) == 5:
        return "cron"
    return "oncalendar"


_Y2K = 946684800.0  # 2000-01-01T00:00:00Z


def schedule_is_valid(schedule: str) -> bool:
    """True when the expression parses and fires at least once after 2000-01-01 (UTC)."""
    try:
        return compile_schedule(guess_kind(schedule), schedule, "UTC").next_after(_Y2K) != math.inf
    except Exception:  # croniter and oncalendar raise assorted errors for bad input
        return False


def to_datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)
