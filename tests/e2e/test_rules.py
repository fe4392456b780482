"""pingstream's rules end to end (issue #19): `pingstream up`, real HTTP, real time.

HTTP ping → log → monitor (thresholds, run time bounds) → transition → projector → API status,
/flips/ and a webhook carrying the rule that fired."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.e2e.test_system import FAST, _create_check, _flips, _get_check, _wait_for, _with_webhook


async def _settled(session, s, check_id, n_pings: int) -> dict:
    """The check's document once its pings are projected and the monitor had time to judge them."""
    await _wait_for(lambda: _get_check(session, s, check_id), lambda d: d["n_pings"] == n_pings, 5)
    await asyncio.sleep(1.0)
    return await _get_check(session, s, check_id)


async def _webhook_channel(session, s, rx) -> dict:
    """A webhook channel made over the API, posting to ``rx``'s /alerts."""
    r = await session.post(f"{s.url}/api/v3/channels/", headers={"X-Api-Key": s.keys["api_key"]},
                           json={"name": "ops", "kind": "webhook", "url": rx.url + "/alerts"})
    assert r.status == 201, await r.text()
    return await r.json()


async def test_two_fails_leave_the_check_up_and_the_third_takes_it_down(system, aiohttp_server):
    s, received = await _with_webhook(system, aiohttp_server)
    async with aiohttp.ClientSession() as session:
        check = await _create_check(session, s, name="flaky", timeout=3600, grace=60, failure_threshold=3,
                                    recovery_threshold=2)
        assert check["failure_threshold"] == 3
        url = f"{s.url}/ping/{check['uuid']}"
        assert (await session.get(url)).status == 200
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "up", 5)
        assert doc["status"] == "up"
        for _ in range(2):
            assert (await session.get(url + "/fail")).status == 200
        assert (await _settled(session, s, check["uuid"], 3))["status"] == "up"
        assert await _flips(session, s, check["uuid"]) == [1]
        assert (await session.get(url + "/fail")).status == 200
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "down", 5)
        assert doc["status"] == "down"
        # recovery_threshold 2: one success is not enough
        assert (await session.get(url)).status == 200
        assert (await _settled(session, s, check["uuid"], 5))["status"] == "down"
        assert (await session.get(url)).status == 200
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "up", 5)
        assert doc["status"] == "up"
        flips = await _wait_for(lambda: _flips(session, s, check["uuid"]), lambda f: f == [1, 0, 1], 5)
        assert flips == [1, 0, 1]
    deadline = time.monotonic() + 10
    while len([t for t in received if t.get("rule")]) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ruled = [(t["to_status"], t["rule"]) for t in received if t.get("rule")]
    assert ruled == [("down", "failure_threshold"), ("up", "recovery_threshold")]


async def test_a_run_too_long_goes_down_before_it_finishes(system):
    s = system(**FAST)
    async with aiohttp.ClientSession() as session:
        check = await _create_check(session, s, name="slow", timeout=3600, grace=3600, max_runtime=2)
        url = f"{s.url}/ping/{check['uuid']}"
        assert (await session.get(url)).status == 200
        started = time.monotonic()
        assert (await session.get(url + "/start")).status == 200
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "down", 8)
        assert doc["status"] == "down"
        assert 2.0 <= time.monotonic() - started < 6.0
        assert (await session.get(url)).status == 200  # the finish, late: a success brings it back up
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "up", 5)
        assert doc["status"] == "up"


async def test_a_snoozed_check_goes_down_and_the_webhook_sees_it_held(system, aiohttp_server):
    """Status still changes and is recorded inside a snooze; the transition says its notification is held."""
    s, received = await _with_webhook(system, aiohttp_server)
    headers = {"X-Api-Key": s.keys["api_key"]}
    async with aiohttp.ClientSession() as session:
        check = await _create_check(session, s, name="snoozed", timeout=1, grace=1)
        r = await session.post(f"{s.url}/api/v3/checks/{check['uuid']}/snooze", json={"duration": 600}, headers=headers)
        assert r.status == 201
        assert (await session.get(f"{s.url}/ping/{check['uuid']}")).status == 200
        doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "down", 8)
        assert doc["status"] == "down"
        flips = await _wait_for(lambda: _flips(session, s, check["uuid"]), lambda f: f == [0, 1], 5)
        assert flips == [0, 1]  # recorded as always
    deadline = time.monotonic() + 10
    while not any(t.get("to_status") == "down" for t in received) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    downs = [t for t in received if t.get("to_status") == "down"]
    assert downs and downs[0]["held"] == "snooze" and downs[0]["check_id"] == check["uuid"]


async def test_through_a_channel_the_alert_names_its_rule_and_a_snoozed_one_is_recorded_held(system):
    """`up` with the notifier: a channel made over the API hears the threshold's down with its rule,
    and the snoozed check's down is a `held` delivery, never sent."""
    from tests.notify.receivers import http_receiver

    s = system(PINGSTREAM_WEBHOOK_ALLOW_PRIVATE="1", **FAST)
    headers = {"X-Api-Key": s.keys["api_key"]}
    async with http_receiver() as rx, aiohttp.ClientSession() as session:
        hook = await _webhook_channel(session, s, rx)
        snoozed = await _create_check(session, s, name="snoozed", timeout=1, grace=1, channels="*")
        r = await session.post(f"{s.url}/api/v3/checks/{snoozed['uuid']}/snooze", json={"duration": 600},
                               headers=headers)
        assert r.status == 201
        flaky = await _create_check(session, s, name="flaky", timeout=3600, grace=60, failure_threshold=2,
                                    channels="*")
        assert (await session.get(f"{s.url}/ping/{snoozed['uuid']}")).status == 200
        url = f"{s.url}/ping/{flaky['uuid']}"
        for suffix in ("", "/fail", "/fail"):
            assert (await session.get(url + suffix)).status == 200
        await rx.wait_for(lambda: rx.at("/alerts"), timeout_s=20)

        async def notifications(check_id):
            r = await session.get(f"{s.url}/api/v3/checks/{check_id}/notifications/", headers=headers)
            return (await r.json())["notifications"]

        held = await _wait_for(lambda: notifications(snoozed["uuid"]), lambda n: len(n) == 1, 15)
        assert [(n["event"], n["status"], n["channel"]) for n in held] == [("down", "held", hook["id"])]
        sent = await _wait_for(lambda: notifications(flaky["uuid"]), lambda n: len(n) == 1, 15)
        assert [(n["event"], n["status"]) for n in sent] == [("down", "delivered")]
    docs = [json.loads(g.body) for g in rx.at("/alerts")]
    assert [(d["check"]["name"], d["event"], d["transition"]["rule"]) for d in docs] == [
        ("flaky", "down", "failure_threshold")]  # the snoozed check's down was not sent


async def test_a_check_still_down_when_its_snooze_ends_is_announced_as_a_down(system):
    """`up` with the notifier: the down inside the snooze is recorded and held; when the snooze ends
    with the check still down, the channel gets a normal down alert that says the snooze held it.
    A check that came back up inside its snooze gets nothing."""
    from tests.notify.receivers import http_receiver

    s = system(PINGSTREAM_WEBHOOK_ALLOW_PRIVATE="1", **FAST)
    headers = {"X-Api-Key": s.keys["api_key"]}
    async with http_receiver() as rx, aiohttp.ClientSession() as session:
        await _webhook_channel(session, s, rx)
        down = await _create_check(session, s, name="still-down", timeout=1, grace=1, channels="*")
        back = await _create_check(session, s, name="back-up", timeout=1, grace=1, channels="*")
        for check in (down, back):
            r = await session.post(f"{s.url}/api/v3/checks/{check['uuid']}/snooze", json={"duration": 8},
                                   headers=headers)
            assert r.status == 201
        snoozed_at = time.monotonic()
        for check in (down, back):
            assert (await session.get(f"{s.url}/ping/{check['uuid']}")).status == 200
        for check in (down, back):
            doc = await _wait_for(lambda: _get_check(session, s, check["uuid"]), lambda d: d["status"] == "down", 8)
            assert doc["status"] == "down"
        assert time.monotonic() - snoozed_at < 8, "the machine was too slow to go down inside the snooze"
        assert rx.at("/alerts") == []  # held
        # The second one keeps pinging through the end of the snooze: it is up when the snooze ends.
        while time.monotonic() - snoozed_at < 10:
            assert (await session.get(f"{s.url}/ping/{back['uuid']}")).status == 200
            await asyncio.sleep(0.5)
        await rx.wait_for(lambda: rx.at("/alerts"), timeout_s=20)
        await asyncio.sleep(1.0)  # nothing else is coming
    docs = [json.loads(g.body) for g in rx.at("/alerts")]
    assert [(d["check"]["name"], d["event"], d["status"], d["transition"]["rule"], d["transition"]["released_from"])
            for d in docs] == [("still-down", "down", "down", "window_end", "snooze")]
