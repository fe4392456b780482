"""``next_ping`` in the API: what upstream shows for simple, cron and OnCalendar checks."""

from datetime import datetime, timezone

from checks.document import expected_after as next_ping
from schemas.events import CheckConfig

T0 = datetime(2026, 3, 1, 10, 15, 30, tzinfo=timezone.utc)


def check(**kw) -> CheckConfig:
    return CheckConfig(id="c", project_id="p", created=T0, **kw)


def test_no_ping_yet_means_no_next_ping():
    assert next_ping(check(), None) is None


def test_next_ping_of_a_simple_check_is_last_ping_plus_timeout():
    assert next_ping(check(timeout_s=3600), T0) == datetime(2026, 3, 1, 11, 15, 30, tzinfo=timezone.utc)


def test_cron_is_the_next_match_in_its_zone():
    c = check(kind="cron", schedule="0 * * * *", tz="Europe/Riga")
    assert next_ping(c, T0) == datetime(2026, 3, 1, 11, 0, tzinfo=timezone.utc)
    daily = check(kind="cron", schedule="30 2 * * *", tz="America/New_York")
    assert next_ping(daily, T0) == datetime(2026, 3, 2, 7, 30, tzinfo=timezone.utc)


def test_oncalendar():
    c = check(kind="oncalendar", schedule="*-*-* 12:00:00", tz="UTC")
    assert next_ping(c, T0) == datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
