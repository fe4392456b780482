"""checks/rules.py: Healthchecks' ping routes (hc/api/urls.py) and its decision of what a ping counts as
(hc/api/views.py:ping, Check.ping), as pure functions."""

from __future__ import annotations

from datetime import datetime, timezone

from checks.rules import Route, checkin_kind, ping_kind, resumes, route
from schemas.events import CheckConfig

U = "01a22c7d-0e2d-7cee-afcd-0552f328377b"


def _check(**fields) -> CheckConfig:
    return CheckConfig(id=U, project_id=U, created=datetime(2024, 1, 1, tzinfo=timezone.utc), **fields)


def test_it_routes_the_uuid_forms():
    assert route(U) == Route(U, "", "success", None)
    assert route(f"{U}/") == Route(U, "", "success", None)
    assert route(f"{U}/start") == Route(U, "", "start", None)
    assert route(f"{U}/007") == Route(U, "", "success", 7)


def test_it_routes_a_word_after_a_uuid_as_a_slug():
    assert route(f"{U}/START") == Route(U, "START", "success", None)
    assert route(f"{U}/-1") == Route(U, "-1", "success", None)


def test_it_routes_the_slug_forms():
    assert route("key/job") == Route("key", "job", "success", None)
    assert route("key/job/fail") == Route("key", "job", "fail", None)
    assert route("key/job/300") == Route("key", "job", "success", 300)


def test_it_finds_no_route_for_other_shapes():
    for tail in ("key", "key/job/", "key/job/START", f"{U}/start/", f"{U}//fail", f"{U}/fail/x", "a/b/c/d", "k/j.b"):
        assert route(tail) is None, tail


def test_it_fails_a_non_zero_exit_status():
    assert ping_kind(_check(), "success", 3, "GET", b"") == "fail"


def test_it_ignores_other_methods_on_a_post_only_check_whatever_the_body():
    check = _check(methods="POST", filter_http_body=True, success_kw="ok")
    assert ping_kind(check, "success", None, "GET", b"ok") == "ign"


def test_it_lets_failure_keywords_win_over_success_and_start():
    check = _check(filter_http_body=True, failure_kw="x", success_kw="x", start_kw="x")
    assert ping_kind(check, "success", None, "POST", b"x") == "fail"


def test_it_lets_success_keywords_override_an_exit_status():
    check = _check(filter_http_body=True, success_kw="done")
    assert ping_kind(check, "success", 9, "POST", b"all done") == "success"


def test_it_ignores_or_fails_a_body_matching_no_keyword():
    assert ping_kind(_check(filter_http_body=True), "log", None, "POST", b"") == "ign"
    assert ping_kind(_check(filter_http_body=True, filter_default_fail=True), "log", None, "POST", b"") == "fail"


def test_it_leaves_the_email_filter_to_email():
    assert ping_kind(_check(filter_body=True, failure_kw="x"), "success", None, "POST", b"x") == "success"


def test_it_ignores_pings_and_checkins_to_a_paused_manual_resume_check():
    check = _check(paused=True, manual_resume=True)
    assert ping_kind(check, "fail", None, "GET", b"") == "ign"
    assert checkin_kind(check, failed=True) == "ign"


def test_it_counts_a_checkin_by_its_status_alone():
    check = _check(methods="POST", filter_http_body=True, filter_default_fail=True)
    assert (checkin_kind(check, failed=False), checkin_kind(check, failed=True)) == ("success", "fail")


def test_it_resumes_a_paused_check_on_success_or_failure_only():
    check = _check(paused=True)
    assert [resumes(check, k) for k in ("success", "fail", "start", "log", "ign")] == [True, True, False, False, False]
