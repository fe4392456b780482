"""The API documents and the spec rules Healthchecks' recorded answers pin down (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from checks import badges
from checks.document import ping_document
from checks.spec import ChannelError, SpecError, apply_spec, resolve_channels, validate
from schemas.events import ChannelConfig, CheckConfig

ROW = {"kind": "success", "received_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "n": 3, "scheme": "http",
       "remote_addr": "10.0.0.1", "method": "GET", "user_agent": "curl", "rid": None, "duration_s": None,
       "exit_status": None, "body_size": 0}


def test_a_ping_without_body_or_duration_has_null_body_url_and_no_duration():
    doc = ping_document(ROW, "http://x/api/v1/checks/c/pings")
    assert doc["body_url"] is None and "duration" not in doc and "exitstatus" not in doc
    assert list(doc) == ["type", "date", "n", "scheme", "remote_addr", "method", "ua", "rid", "body_url"]


def test_a_ping_duration_is_rounded_to_two_decimals_and_the_exit_status_not_shown():
    doc = ping_document(dict(ROW, duration_s=1.23456, exit_status=3, body_size=5, kind="fail"), "http://x/p")
    assert (doc["duration"], doc["body_url"], doc["type"]) == (1.23, "http://x/p/3/body", "fail")
    assert "exitstatus" not in doc


def test_a_bool_period_is_a_one_second_period():
    for value in (True, False):
        try:
            validate({"timeout": value})
        except SpecError as exc:
            assert str(exc) == "json validation error: timeout is too small"
        else:
            raise AssertionError(value)


def test_filter_fields_are_validated_in_upstreams_order_and_applied():
    try:
        validate({"filter_default_fail": 1, "filter_http_body": "x", "filter_body": 0})
    except SpecError as exc:
        assert str(exc) == "json validation error: filter_body is not a boolean"
    check = CheckConfig(id="c", project_id="p", created=datetime(2026, 1, 1, tzinfo=timezone.utc))
    updated = apply_spec(check, validate({"filter_http_body": True, "filter_default_fail": True}), 3)
    assert (updated.filter_http_body, updated.filter_default_fail) == (True, True)


def test_legacy_time_zones_become_canonical():
    assert validate({"tz": "US/Eastern"})["tz"] == "America/New_York"
    assert validate({"tz": "Europe/Kyiv"})["tz"] == "Europe/Kyiv"


def test_channels_name_the_first_unknown_identifier():
    assert resolve_channels("*", []) == () and resolve_channels("", []) == ()
    for value, message in (("x,y", "invalid channel identifier: x"), (",x", "empty channel identifier")):
        with pytest.raises(ChannelError) as caught:
            resolve_channels(value, [])
        assert str(caught.value) == message


def test_channels_are_matched_by_id_or_name_and_stored_sorted():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    a = ChannelConfig(id="b-id", project_id="p", name="ops", kind="webhook", created=at)
    b = ChannelConfig(id="a-id", project_id="p", name="pager", kind="apprise", created=at)
    c = ChannelConfig(id="c-id", project_id="p", name="ops", kind="email", created=at)
    assert resolve_channels("*", [a, b]) == ("a-id", "b-id")
    assert resolve_channels("pager,b-id,a-id", [a, b]) == ("a-id", "b-id")
    with pytest.raises(ChannelError, match="non-unique channel identifier: ops"):
        resolve_channels("ops", [a, b, c])


def test_badge_keys_are_stable_and_reveal_nothing():
    key = badges.check_badge_key("0190a000-0000-7000-8000-000000000000")
    assert key == badges.check_badge_key("0190a000-0000-7000-8000-000000000000")
    assert "0190a000" not in key and len(key) == 36
    sig = badges.signature("k" * 32, "b", "prod")
    assert badges.signature_matches("k" * 32, "b", "prod", sig + "-2")
    assert not badges.signature_matches("j" * 32, "b", "prod", sig)


def test_a_badge_is_down_before_late_and_late_only_with_three_states():
    assert badges.badge_state(["up", "grace"], with_late=True) == ("late", 2, 1, 0)
    assert badges.badge_state(["up", "grace"], with_late=False) == ("up", 2, 1, 0)
    assert badges.badge_state(["grace", "down", "down"], with_late=True) == ("down", 3, 1, 2)
    assert badges.badge_state(["down", "down"], with_late=True, stop_at_down=True) == ("down", 1, 0, 1)
