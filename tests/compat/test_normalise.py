"""The comparison's own rules (tests/compat/normalise.py), on answers made up here."""

from __future__ import annotations

import json
import time

import pytest

from . import normalise


def _answer(doc: dict, t_req: float) -> dict:
    return normalise.Normaliser("http://127.0.0.1:1", "tok", {}).response(
        200, {"content-type": "application/json"}, json.dumps(doc).encode(), t_req)


@pytest.fixture(autouse=True)
def _fresh_count(monkeypatch):
    monkeypatch.setattr(normalise, "WHOLE_SECONDS", {})


def _iso(t: float, micro: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + (f".{micro:06d}" if micro else "") + "+00:00"


def test_a_time_on_a_whole_second_matches_one_with_microseconds_and_is_counted():
    now = time.time()
    hc = _answer({"pings": [{"date": _iso(now, 123456)}]}, now)
    ps = _answer({"pings": [{"date": _iso(now, 0)}]}, now)
    assert hc["json"]["pings"][0]["date"] != ps["json"]["pings"][0]["date"]  # <ts[us]:now> against <ts[s]:now>
    assert normalise.compare(hc, ps) == []
    assert normalise.compare(hc, ps) == []  # the same answer compared again (a repeated read) counts once
    assert list(normalise.WHOLE_SECONDS.values()) == [
        "body.pings[0].date: healthchecks <ts[us]:now>, pingstream <ts[s]:now>"]


@pytest.mark.parametrize("other", [
    lambda now: _iso(now + 3600, 0),  # another time
    lambda now: _iso(now, 0).replace("+00:00", "Z"),  # another suffix
    lambda now: "not a time",
])
def test_anything_else_about_a_timestamp_is_still_a_difference(other):
    now = time.time()
    hc = _answer({"last_ping": _iso(now, 123456)}, now)
    ps = _answer({"last_ping": other(now)}, now)
    assert [d["where"] for d in normalise.compare(hc, ps)] == ["body.last_ping"]
    assert normalise.WHOLE_SECONDS == {}


@pytest.mark.parametrize("late_s, same", [(20, True), (-25, True), (40, False), (-70, False)])
def test_now_and_under_half_a_minute_from_it_are_the_same(late_s, same):
    """``<ts:now>`` (15 s) against ``<ts:now+0m>`` (30 s): a read slowed by a loaded machine, not another time."""
    now = time.time()
    hc = _answer({"pings": [{"date": _iso(now - 2, 123456)}]}, now)
    ps = _answer({"pings": [{"date": _iso(now + late_s, 123456)}]}, now)
    assert (normalise.compare(hc, ps) == []) is same


@pytest.mark.parametrize("ago_s, late_s, same", [(70, 60, True), (70, 10, False), (130, 60, False), (130, 120, True),
                                                 (-70, 600, False)])
def test_a_time_of_an_earlier_step_may_be_as_old_as_the_scenario_has_run_longer(ago_s, late_s, same):
    """Healthchecks' ``<ts:now>`` against pingstream's ``<ts:now-Nm>``: the same step's time when pingstream's
    run of the scenario so far (less the waits it asks for) took that long, on a loaded machine; a time
    ahead of the request never is."""
    now = time.time()
    hc = _answer({"flips": [{"timestamp": _iso(now - 2, 0)}]}, now)
    ps = _answer({"flips": [{"timestamp": _iso(now - ago_s, 0)}]}, now)
    assert (normalise.compare(hc, ps, late_s=late_s) == []) is same
