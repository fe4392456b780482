"""Maintenance windows and snoozes (pingstream's extension): validation, documents, and whether a
moment falls inside one. Pure.

A window is one-off, ``{"start": ..., "end": ...}`` (ISO 8601 date-times; without an offset
they are UTC), or recurring, ``{"cron": "0 2 * * 6", "duration": 3600, "tz": "Europe/Riga"}``:
it opens at every fire of the cron expression in that zone and stays open ``duration``
seconds. A snooze is a one-off window from now, for ``duration`` seconds. Inside a window
a check's status still changes and every transition is recorded; its notifications
are held (``Transition.held``: ``maintenance`` or ``snooze``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemas.events import Window, uuid7

from .schedule import ScheduleError, compile_schedule, guess_kind, schedule_is_valid
from .spec import SpecError, all_timezones

MAX_WINDOWS = 100  # per check, and per project
MAX_WINDOW_S = 366 * 86400


def _when(name: str, value) -> datetime:
    if not isinstance(value, str):
        raise SpecError(f"{name} is not a string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise SpecError(f"{name} is not an ISO 8601 date-time") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _seconds(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} is not a number")
    if value < 1:
        raise SpecError(f"{name} is too small")
    if value > MAX_WINDOW_S:
        raise SpecError(f"{name} is too large")
    return value


def validate_window(data, now: datetime) -> Window:
    """A new maintenance window from a request body; SpecError for the first bad field."""
    if not isinstance(data, dict):
        raise SpecError("window is not an object")
    if "cron" in data:
        cron = data["cron"]
        if not isinstance(cron, str) or len(cron) > 100 or guess_kind(cron) != "cron" or not schedule_is_valid(cron):
            raise SpecError("cron is not a valid cron expression")
        if "duration" not in data:
            raise SpecError("duration is missing")
        duration = _seconds("duration", data["duration"])
        tz = data.get("tz", "UTC")
        if not isinstance(tz, str) or tz not in all_timezones():
            raise SpecError("tz is not a valid timezone")
        return Window(id=uuid7(), cron=cron, duration_s=duration, tz=tz)
    if "start" not in data or "end" not in data:
        raise SpecError("a window needs start and end, or cron and duration")
    start, end = _when("start", data["start"]), _when("end", data["end"])
    if end <= start:
        raise SpecError("end is not after start")
    if (end - start).total_seconds() > MAX_WINDOW_S:
        raise SpecError("the window is too long")
    if end <= now:
        raise SpecError("end is in the past")
    return Window(id=uuid7(), start=start, end=end)


def snooze(data, now: datetime) -> Window:
    """A snooze from ``now`` for the body's ``duration`` seconds."""
    if not isinstance(data, dict) or "duration" not in data:
        raise SpecError("duration is missing")
    duration = _seconds("duration", data["duration"])
    return Window(id=uuid7(), kind="snooze", start=now, end=now + timedelta(seconds=duration))


def window_document(w: Window) -> dict:
    doc: dict = {"id": w.id, "kind": w.kind}
    if w.cron is not None:
        doc.update(cron=w.cron, duration=w.duration_s, tz=w.tz)
    else:
        doc.update(start=w.start.isoformat(), end=w.end.isoformat())
    return doc


def inside(w: Window, t: float) -> bool:
    """Whether the moment ``t`` (POSIX seconds) is inside the window: [start, end), or
    [fire, fire + duration) for a fire of the cron expression."""
    return end_of(w, t) is not None


def end_of(w: Window, t: float) -> float | None:
    """When the occurrence of ``w`` that covers the moment ``t`` ends; None: ``t`` is outside ``w``."""
    if w.cron is None:
        return w.end.timestamp() if w.start.timestamp() <= t < w.end.timestamp() else None
    try:
        fire = compile_schedule("cron", w.cron, w.tz).next_after(t - w.duration_s)
    except ScheduleError:
        return None
    return fire + w.duration_s if fire <= t else None


_CHAINED = 1000  # occurrences followed at most (back-to-back windows): beyond that, the hold is open-ended


def hold_ends(windows, t: float) -> float | None:
    """The first moment from ``t`` on that no window covers (overlapping and back-to-back windows
    count as one hold); ``t`` itself when none covers it, None when they chain on too long."""
    for _ in range(_CHAINED):
        ends = [e for e in (end_of(w, t) for w in windows) if e is not None]
        if not ends:
            return t
        t = max(ends)
    return None


def held_by(windows, t: float) -> str | None:
    """The kind of the first window (maintenance before snooze) that holds a transition at ``t``."""
    kinds = {w.kind for w in windows if inside(w, t)}
    for kind in ("maintenance", "snooze"):
        if kind in kinds:
            return kind
    return None


def expired(windows, now: datetime) -> tuple[Window, ...]:
    """The windows that can never hold anything again (one-off ones that have ended)."""
    return tuple(w for w in windows if w.end is not None and w.end <= now)
