"""The Overwatch-style monitor and checkin endpoints (seed 000)."""

from __future__ import annotations

import uuid

from schemas.events import PingEvent


def _bearer(edge, readonly=False):
    key = edge.project.api_key_readonly if readonly else edge.project.api_key
    return {"Authorization": f"Bearer {key}"}


async def _create(edge, **body):
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": "export", **body}, headers=_bearer(edge))
    assert r.status == 201, await r.text()
    return (await r.json())["data"]


async def test_it_creates_a_scheduled_monitor_with_checkin_url(edge):
    data = await _create(edge, interval=3600)
    assert data["type"] == "SCHEDULED"
    assert data["checkinUrl"] == f"{edge.config.public_url}/api/v1/monitors/{data['id']}/checkin"


async def test_it_gets_a_monitor(edge):
    data = await _create(edge, schedule="0 2 * * *")
    r = await edge.client.get(f"/api/v1/monitors/{data['id']}", headers=_bearer(edge, readonly=True))
    assert r.status == 200
    assert (await r.json())["data"]["id"] == data["id"]


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


async def test_it_returns_404_for_unknown_or_non_scheduled(edge):
    r = await edge.client.get(f"/api/v1/monitors/{uuid.uuid4()}/checkin")
    assert r.status == 404
    plain = await edge.add_check(name="hc-check")
    r = await edge.client.get(f"/api/v1/monitors/{plain.id}/checkin")
    assert r.status == 404


async def test_it_rejects_unknown_status(edge):
    data = await _create(edge)
    r = await edge.client.get(f"/api/v1/monitors/{data['id']}/checkin?status=maybe")
    assert r.status == 400
