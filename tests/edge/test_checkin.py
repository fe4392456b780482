"""The Overwatch-style monitor and checkin endpoints (seed 000): every check is a heartbeat, a
SCHEDULED monitor, with Overwatch's status words."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone


from runtime.registry import create_project
from schemas.events import PingEvent, stable_id


NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _bearer(edge, readonly=False):
    key = edge.project.api_key_readonly if readonly else edge.project.api_key
    return {"Authorization": f"Bearer {key}"}


async def _create(edge, **body):
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": "export", **body}, headers=_bearer(edge))
    assert r.status == 201, await r.text()
    return (await r.json())["data"]


async def _monitor(edge, check_id: str) -> dict:
    r = await edge.client.get(f"/api/v1/monitors/{check_id}", headers=_bearer(edge, readonly=True))
    assert r.status == 200, await r.text()
    return (await r.json())["data"]


async def test_it_creates_a_scheduled_monitor_with_checkin_url(edge):
    data = await _create(edge, interval=3600)
    assert data["type"] == "SCHEDULED"
    assert data["checkinUrl"] == f"{edge.config.public_url}/api/v1/monitors/{data['id']}/checkin"


async def test_it_gets_a_monitor(edge):
    data = await _create(edge, schedule="0 2 * * *")
    assert (await _monitor(edge, data["id"]))["id"] == data["id"]


async def test_it_requires_bearer_auth(edge):
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED"})
    assert r.status == 401
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED"}, headers=_bearer(edge, readonly=True))
    assert r.status == 401


async def test_it_rejects_other_monitor_types(edge):
    r = await edge.client.post("/api/v1/monitors", json={"type": "HTTP"}, headers=_bearer(edge))
    assert r.status == 400


async def test_it_records_checkins(edge):
    data = await _create(edge)
    r = await edge.client.get(f"/api/v1/monitors/{data['id']}/checkin")
    assert await r.json() == {"recorded": "ok", "monitor": data["id"]}
    r = await edge.client.post(f"/api/v1/monitors/{data['id']}/checkin?status=fail")
    assert await r.json() == {"recorded": "failure", "monitor": data["id"]}
    events = await edge.events(types=(PingEvent,))
    assert [(e.kind, e.source) for e in events] == [("success", "checkin"), ("fail", "checkin")]


async def test_it_returns_404_for_an_unknown_monitor(edge):
    r = await edge.client.get(f"/api/v1/monitors/{uuid.uuid4()}/checkin")
    assert r.status == 404
    r = await edge.client.get(f"/api/v1/monitors/{uuid.uuid4()}", headers=_bearer(edge))
    assert r.status == 404


async def test_it_rejects_unknown_status(edge):
    data = await _create(edge)
    r = await edge.client.get(f"/api/v1/monitors/{data['id']}/checkin?status=maybe")
    assert r.status == 400


async def test_it_accepts_checkins_for_checks_made_with_the_management_api(edge):
    r = await edge.client.post("/api/v3/checks/", json={"name": "nightly"}, headers={"X-Api-Key": edge.project.api_key})
    assert r.status == 201, await r.text()
    check_id = (await r.json())["uuid"]
    r = await edge.client.get(f"/api/v1/monitors/{check_id}/checkin")
    assert await r.json() == {"recorded": "ok", "monitor": check_id}
    [event] = await edge.events()
    assert (event.check_id, event.kind, event.source) == (check_id, "success", "checkin")


async def test_it_accepts_checkins_for_checks_made_by_create_1(edge):
    assert (await edge.client.get(f"/ping/{edge.project.ping_key}/auto-job?create=1")).status == 201
    check_id = stable_id("check", edge.project.id, "auto-job")
    r = await edge.client.post(f"/api/v1/monitors/{check_id}/checkin?status=fail")
    assert await r.json() == {"recorded": "failure", "monitor": check_id}


async def test_it_shows_any_check_as_a_scheduled_monitor(edge):
    check = await edge.add_check(name="hc-check", timeout_s=600, grace_s=60)
    data = await _monitor(edge, check.id)
    assert (data["type"], data["name"], data["interval"], data["gracePeriod"]) == ("SCHEDULED", "hc-check", 600, 60)
    assert data["checkinUrl"] == f"{edge.config.public_url}/api/v1/monitors/{check.id}/checkin"


async def test_it_shows_a_cron_check_with_its_schedule_and_timezone(edge):
    check = await edge.add_check(kind="cron", schedule="0 2 * * *", tz="Europe/Riga")
    data = await _monitor(edge, check.id)
    assert (data["schedule"], data["timezone"]) == ("0 2 * * *", "Europe/Riga")
    assert "interval" not in data


async def test_it_lists_the_projects_monitors(edge):
    first = await _create(edge, name="first")
    second = await edge.add_check(name="second")
    other = await create_project(edge.log, "other", edge.registry)
    await edge.add_check(project_id=other.id, name="theirs")
    r = await edge.client.get("/api/v1/monitors", headers=_bearer(edge, readonly=True))
    assert r.status == 200
    data = (await r.json())["data"]
    assert [m["id"] for m in data] == [first["id"], second.id]
    assert data[1] == await _monitor(edge, second.id)


async def test_it_requires_bearer_auth_to_list_monitors(edge):
    assert (await edge.client.get("/api/v1/monitors")).status == 401
    assert (await edge.client.get("/api/v1/monitors", headers={"Authorization": "Bearer nope"})).status == 401


async def test_it_records_a_checkin_whatever_the_checks_http_filters(edge):
    check = await edge.add_check(methods="POST", filter_http_body=True, filter_default_fail=True, success_kw="OK")
    assert (await edge.client.get(f"/api/v1/monitors/{check.id}/checkin")).status == 200
    [event] = await edge.events()
    assert event.kind == "success"


async def test_it_ignores_checkins_to_a_paused_manual_resume_check(edge):
    check = await edge.add_check(paused=True, manual_resume=True)
    r = await edge.client.get(f"/api/v1/monitors/{check.id}/checkin?status=fail")
    assert r.status == 200
    [event] = await edge.events()
    assert event.kind == "ign"


# --- status words, from the projected state in ClickHouse ---------------------------------------

STATE_COLUMNS = ["check_id", "project_id", "status", "last_ping", "n_pings", "started", "updated_at", "version"]
PING_COLUMNS = ["event_id", "check_id", "project_id", "n", "kind", "received_at", "source"]




async def _project(edge, check, status: str, completions: list[str]) -> None:
    """The projector's rows for ``check``: its state, and its success/fail pings in order."""
    naive = NOW.replace(tzinfo=None)
    pings = [[uuid.uuid4(), check.id, check.project_id, n, kind, naive - timedelta(minutes=len(completions) - n), "ping"]
             for n, kind in enumerate(completions, 1)]
    last_ping = naive if completions else None
    state = [[check.id, check.project_id, status, last_ping, len(completions), 0, naive, 1]]
    await edge.ch.run(lambda c: c.insert("check_state", state, column_names=STATE_COLUMNS))
    if pings:
        await edge.ch.run(lambda c: c.insert("pings", pings, column_names=PING_COLUMNS))


async def test_it_says_new_before_the_first_checkin(projected):
    check = await projected.add_check()
    assert (await _monitor(projected, check.id))["status"] == "new"


async def test_it_says_up_after_a_successful_checkin(projected):
    check = await projected.add_check()
    await _project(projected, check, "up", ["success"])
    data = await _monitor(projected, check.id)
    assert data["status"] == "up"
    assert data["lastCheckinAt"] == NOW.isoformat()


async def test_it_says_up_within_the_grace_period(projected):
    check = await projected.add_check()
    await _project(projected, check, "grace", ["success"])
    assert (await _monitor(projected, check.id))["status"] == "up"


async def test_it_says_havent_heard_when_a_check_missed_its_deadline(projected):
    check = await projected.add_check()
    await _project(projected, check, "down", ["fail", "success"])
    assert (await _monitor(projected, check.id))["status"] == "havent_heard"


async def test_it_says_down_after_a_failed_checkin(projected):
    check = await projected.add_check()
    await _project(projected, check, "down", ["success", "fail"])
    assert (await _monitor(projected, check.id))["status"] == "down"


async def test_it_says_paused_for_a_paused_check(projected):
    check = await projected.add_check(paused=True)
    await _project(projected, check, "paused", ["success"])
    assert (await _monitor(projected, check.id))["status"] == "paused"


async def test_it_lists_each_monitors_status(projected):
    missed, failed, _fresh = [await projected.add_check(name=n) for n in ("missed", "failed", "fresh")]
    await _project(projected, missed, "down", ["success"])
    await _project(projected, failed, "down", ["fail"])
    r = await projected.client.get("/api/v1/monitors", headers=_bearer(projected))
    assert [(m["name"], m["status"]) for m in (await r.json())["data"]] == [
        ("missed", "havent_heard"), ("failed", "down"), ("fresh", "new")]
