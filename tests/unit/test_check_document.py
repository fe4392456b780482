"""The check document's state fields as Healthchecks computes them: ``get_status``, ``get_grace_start``,
``started``, ``last_duration``, and the registry's pause/resume over a lagging projection."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from checks.document import check_document, next_ping, status
from schemas.events import CheckConfig

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
BASE = "http://localhost"


def check(**kw) -> CheckConfig:
    kw.setdefault("timeout_s", 3600)
    kw.setdefault("grace_s", 60)
    return CheckConfig(id="c", project_id="p", created=T0, **kw)


def state(status="new", last_ping=None, last_start=None, last_duration_s=None, status_at=None, n_pings=1) -> dict:
    return {"status": status, "last_ping": last_ping, "last_start": last_start, "last_duration_s": last_duration_s,
            "status_at": status_at, "n_pings": n_pings, "started": int(last_start is not None)}


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def doc(c, st, now, v=3):
    return check_document(c, st, False, BASE, v=v, now=now)


def test_it_keeps_new_for_a_running_new_check_and_says_started():
    d = doc(check(), state("new", last_start=s(0)), s(10))
    assert (d["status"], d["started"]) == ("new", True)


def test_it_shows_started_as_a_status_in_v1_only():
    st = state("up", last_ping=s(0), last_start=s(5))
    assert doc(check(), st, s(10), v=1)["status"] == "started"
    assert doc(check(), st, s(10), v=3)["status"] == "up"


def test_it_reports_down_when_a_run_outlasts_the_grace_time():
    assert status(check(), state("new", last_start=s(0)), s(60)) == "down"
    assert status(check(), state("new", last_start=s(0)), s(60), v=1) == "down"


def test_it_reports_grace_then_down_from_the_time():
    st = state("up", last_ping=s(0))
    assert [status(check(), st, s(t)) for t in (3599, 3600, 3660)] == ["up", "grace", "down"]


def test_it_keeps_a_paused_check_paused_while_it_runs():
    d = doc(check(), state("paused", last_start=s(0)), s(10))
    assert (d["status"], d["started"], d["next_ping"]) == ("paused", True, s(0).isoformat())


def test_it_has_no_next_ping_for_new_paused_and_down_checks():
    for base in ("new", "paused", "down"):
        assert next_ping(check(), state(base, last_ping=s(0)), s(1)) is None


def test_it_expects_an_up_check_after_its_timeout():
    assert next_ping(check(), state("up", last_ping=s(0)), s(1)) == s(3600)


def test_its_next_ping_is_the_last_start_while_a_run_is_open():
    assert next_ping(check(), state("new", last_start=s(5)), s(10)) == s(5)
    assert next_ping(check(), state("up", last_ping=s(0), last_start=s(5)), s(10)) == s(5)


def test_its_next_ping_ignores_a_run_of_a_down_check():
    assert next_ping(check(), state("down", last_ping=s(0), last_start=s(5)), s(10)) is None


def test_its_next_ping_is_gone_once_the_check_is_down_by_time():
    # sendalerts stores "down" as soon as the time is up
    assert next_ping(check(), state("up", last_ping=s(0)), s(3660)) is None


def test_its_cron_next_ping_is_the_next_match():
    c = check(kind="cron", schedule="30 * * * *")
    assert next_ping(c, state("up", last_ping=s(0)), s(1)) == s(1800)


def test_it_leaves_out_a_zero_last_duration():
    assert "last_duration" not in doc(check(), state("up", last_ping=s(0), last_duration_s=0.0), s(1))
    assert doc(check(), state("up", last_ping=s(0), last_duration_s=0.4), s(1))["last_duration"] == 0
    assert doc(check(), state("up", last_ping=s(0), last_duration_s=61.9), s(1))["last_duration"] == 61


def test_it_reads_a_projection_behind_the_pause_as_paused():
    c = check(paused=True, paused_at=s(10))
    d = doc(c, state("up", last_ping=s(0), last_start=s(5), status_at=s(0)), s(11))
    assert (d["status"], d["started"], d["next_ping"], d["last_ping"]) == ("paused", False, None, s(0).isoformat())


def test_it_reads_a_projection_behind_the_resume_as_resumed():
    c = check(paused_at=s(10), resumed_at=s(20))
    d = doc(c, state("paused", last_ping=s(0), status_at=s(10), n_pings=3), s(21))
    assert (d["status"], d["last_ping"], d["n_pings"]) == ("new", None, 3)


def test_a_ping_after_the_pause_wins_over_the_registry():
    c = check(paused=True, paused_at=s(10))
    assert doc(c, state("up", last_ping=s(15), status_at=s(15)), s(16))["status"] == "up"
