"""Next expected times: simple, cron (with DST), OnCalendar."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.schedule import ScheduleError, compile_schedule, next_expected

NY = ZoneInfo("America/New_York")


def ts(*args, tz=timezone.utc) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def local(t: float, tz=NY) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def test_simple_is_last_ping_plus_timeout():
    assert next_expected("simple", 60, "", "UTC", 1000.0) == 1060.0


def test_cron_is_strictly_after_the_last_ping():
    t = ts(2025, 6, 1, 12, 0)
    assert next_expected("cron", 0, "0 12 * * *", "UTC", t) == ts(2025, 6, 2, 12, 0)
    assert next_expected("cron", 0, "0 12 * * *", "UTC", t - 0.5) == t
    assert next_expected("cron", 0, "0 12 * * *", "UTC", t + 0.5) == ts(2025, 6, 2, 12, 0)


def test_cron_uses_the_check_time_zone():
    t = ts(2025, 6, 1, 0, 0)
    n = next_expected("cron", 0, "0 5 * * *", "Europe/Riga", t)  # 00:00 UTC is 03:00 there
    assert local(n, ZoneInfo("Europe/Riga")) == "2025-06-01T05:00:00+03:00"


def test_cron_job_in_the_skipped_hour_fires_right_after_the_change():
    # 2025-03-09 02:00 EST -> 03:00 EDT: 02:30 does not exist that day
    n = next_expected("cron", 0, "30 2 * * *", "America/New_York", ts(2025, 3, 8, 12, 0, tz=NY))
    assert local(n) == "2025-03-09T03:00:00-04:00"
    n2 = next_expected("cron", 0, "30 2 * * *", "America/New_York", n)
    assert local(n2) == "2025-03-10T02:30:00-04:00"


def test_cron_fixed_hour_job_fires_once_in_the_repeated_hour():
    # 2025-11-02 02:00 EDT -> 01:00 EST: 01:30 happens twice; a daily job runs once
    first = next_expected("cron", 0, "30 1 * * *", "America/New_York", ts(2025, 11, 1, 12, 0, tz=NY))
    assert local(first) == "2025-11-02T01:30:00-04:00"
    assert local(next_expected("cron", 0, "30 1 * * *", "America/New_York", first)) == "2025-11-03T01:30:00-05:00"


def test_cron_hourly_job_fires_in_both_copies_of_the_repeated_hour():
    first = next_expected("cron", 0, "30 * * * *", "America/New_York", ts(2025, 11, 2, 1, 0, tz=NY))
    second = next_expected("cron", 0, "30 * * * *", "America/New_York", first)
    assert second - first == 3600
    assert local(second) == "2025-11-02T01:30:00-05:00"


def test_cron_macros():
    t = ts(2025, 6, 1, 12, 10)
    assert next_expected("cron", 0, "@hourly", "UTC", t) == ts(2025, 6, 1, 13, 0)


def test_oncalendar_with_several_lines_takes_the_earliest():
    t = ts(2025, 6, 1, 10, 0)
    n = next_expected("oncalendar", 0, "*-*-* 12:00\n*-*-* 11:00", "UTC", t)
    assert n == ts(2025, 6, 1, 11, 0)


def test_oncalendar_uses_the_default_zone_and_an_explicit_one():
    t = ts(2025, 6, 1, 0, 0)
    assert next_expected("oncalendar", 0, "*-*-* 12:00", "Europe/Riga", t) == ts(2025, 6, 1, 9, 0)
    assert next_expected("oncalendar", 0, "*-*-* 12:00 UTC", "Europe/Riga", t) == ts(2025, 6, 1, 12, 0)


def test_invalid_expressions_fall_back_to_the_timeout():
    assert next_expected("cron", 60, "not cron", "UTC", 100.0) == 160.0
    assert next_expected("cron", 60, "0 2 * * *", "Mars/Olympus", 100.0) == 160.0
    assert next_expected("oncalendar", 60, "whenever", "UTC", 100.0) == 160.0
    try:
        compile_schedule("cron", "61 * * * *", "UTC")
    except ScheduleError:
        pass
    else:
        raise AssertionError("61 minutes accepted")


exprs = st.sampled_from(["*/5 * * * *", "0 2 * * *", "30 1 * * *", "15 */3 * * 1-5", "0 0 1 * *", "30 * * * *"])
zones = st.sampled_from(["UTC", "America/New_York", "Europe/Riga", "Australia/Lord_Howe", "Asia/Kolkata"])
times = st.floats(min_value=ts(2024, 1, 1), max_value=ts(2027, 1, 1), allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(exprs, zones, times)
def test_cron_next_is_after_and_matches_uncached(expr, tz, t):
    n = next_expected("cron", 0, expr, tz, t)
    assert n > t
    # the interval cache answers like a fresh computation
    fresh = type(compile_schedule("cron", expr, tz))(expr, tz)._compute(t)
    assert n == fresh
    assert n - t <= 32 * 86400


@settings(max_examples=200, deadline=None)
@given(exprs, zones, times, st.floats(min_value=0, max_value=7200))
def test_cron_cache_is_monotonic(expr, tz, t, dt):
    a = next_expected("cron", 0, expr, tz, t)
    b = next_expected("cron", 0, expr, tz, t + dt)
    assert b >= a
    if t + dt < a:
        assert a == b


def test_cron_just_before_a_fire_is_not_rounded_past_it():
    # fromtimestamp rounds to the microsecond: 10:04:59.9999996 must still expect 10:05
    t = ts(2026, 1, 1, 10, 4, 59) + 0.9999996
    assert next_expected("cron", 0, "*/5 * * * *", "UTC", t) == ts(2026, 1, 1, 10, 5)
