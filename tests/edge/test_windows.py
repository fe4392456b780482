"""Maintenance windows and snooze over the Management API (pingstream's extension)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from schemas.events import TOPIC_CHECKS, CheckUpserted, ProjectUpserted


def _key(edge, readonly=False):
    return {"X-Api-Key": edge.project.api_key_readonly if readonly else edge.project.api_key}


def _iso(dt: datetime) -> str:
    return dt.isoformat()


NOW = datetime.now(timezone.utc)


async def test_it_adds_lists_and_deletes_a_one_off_window(edge):
    check = await edge.add_check(name="db")
    base = f"/api/v3/checks/{check.id}/windows/"
    start, end = NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    r = await edge.client.post(base, json={"start": _iso(start), "end": _iso(end)}, headers=_key(edge))
    assert r.status == 201
    window = await r.json()
    assert window["kind"] == "maintenance" and window["start"] == _iso(start) and window["end"] == _iso(end)
    upserts = await edge.events(TOPIC_CHECKS, (CheckUpserted,))
    assert [w.id for w in upserts[-1].check.windows] == [window["id"]]
    r = await edge.client.get(base, headers=_key(edge, readonly=True))
    assert (r.status, await r.json()) == (200, {"windows": [window]})
    r = await edge.client.delete(base + window["id"], headers=_key(edge))
    assert (r.status, await r.json()) == (200, window)
    assert (await (await edge.client.get(base, headers=_key(edge))).json()) == {"windows": []}
    r = await edge.client.delete(base + window["id"], headers=_key(edge))
    assert r.status == 404


async def test_it_adds_a_recurring_window_in_a_time_zone(edge):
    check = await edge.add_check()
    r = await edge.client.post(f"/api/v3/checks/{check.id}/windows/",
                               json={"cron": "0 2 * * 6", "duration": 3600, "tz": "Europe/Riga"}, headers=_key(edge))
    assert r.status == 201
    doc = await r.json()
    assert {k: doc[k] for k in ("kind", "cron", "duration", "tz")} == {
        "kind": "maintenance", "cron": "0 2 * * 6", "duration": 3600, "tz": "Europe/Riga"}


async def test_snooze_is_a_window_from_now(edge):
    check = await edge.add_check()
    r = await edge.client.post(f"/api/v3/checks/{check.id}/snooze", json={"duration": 600}, headers=_key(edge))
    assert r.status == 201
    doc = await r.json()
    start, end = datetime.fromisoformat(doc["start"]), datetime.fromisoformat(doc["end"])
    assert doc["kind"] == "snooze" and end - start == timedelta(seconds=600)
    assert abs((start - datetime.now(timezone.utc)).total_seconds()) < 5


async def test_project_windows(edge):
    r = await edge.client.post("/api/v3/windows/", json={"cron": "*/30 * * * *", "duration": 60}, headers=_key(edge))
    assert r.status == 201
    window = await r.json()
    [*_, upsert] = await edge.events(TOPIC_CHECKS, (ProjectUpserted,))
    assert [w.id for w in upsert.project.windows] == [window["id"]]
    assert upsert.project.api_key == edge.project.api_key  # the rest of the project as it was
    r = await edge.client.get("/api/v3/windows/", headers=_key(edge))
    assert (await r.json()) == {"windows": [window]}
    r = await edge.client.delete(f"/api/v3/windows/{window['id']}", headers=_key(edge))
    assert r.status == 200
    assert (await (await edge.client.get("/api/v3/windows/", headers=_key(edge))).json()) == {"windows": []}


async def test_a_read_only_key_cannot_add_windows(edge):
    check = await edge.add_check()
    r = await edge.client.post(f"/api/v3/checks/{check.id}/snooze", json={"duration": 60},
                               headers=_key(edge, readonly=True))
    assert r.status == 401


async def test_another_projects_check_is_forbidden(edge):
    other = await edge.add_check(project_id="00000000-0000-7000-8000-000000000000")
    r = await edge.client.get(f"/api/v3/checks/{other.id}/windows/", headers=_key(edge))
    assert r.status == 403


@pytest.mark.parametrize("body, message", [
    ({}, "a window needs start and end, or cron and duration"),
    ({"start": "yesterday", "end": "2030-01-01T00:00:00Z"}, "start is not an ISO 8601 date-time"),
    ({"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}, "end is not after start"),
    ({"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}, "end is in the past"),
    ({"start": "2030-01-01T00:00:00Z", "end": "2032-01-01T00:00:00Z"}, "the window is too long"),
    ({"cron": "not cron", "duration": 60}, "cron is not a valid cron expression"),
    ({"cron": "0 2 * * *"}, "duration is missing"),
    ({"cron": "0 2 * * *", "duration": 0}, "duration is too small"),
    ({"cron": "0 2 * * *", "duration": "1h"}, "duration is not a number"),
    ({"cron": "0 2 * * *", "duration": 60, "tz": "Mars/Olympus"}, "tz is not a valid timezone"),
])
async def test_it_rejects_bad_windows(edge, body, message):
    check = await edge.add_check()
    r = await edge.client.post(f"/api/v3/checks/{check.id}/windows/", json=body, headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": f"json validation error: {message}"})


async def test_a_check_document_does_not_show_windows(edge):
    check = await edge.add_check()
    await edge.client.post(f"/api/v3/checks/{check.id}/snooze", json={"duration": 60}, headers=_key(edge))
    doc = await (await edge.client.get(f"/api/v3/checks/{check.id}", headers=_key(edge))).json()
    assert "windows" not in doc
