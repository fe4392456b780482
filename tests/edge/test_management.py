"""Management API v3 over HTTP: auth rules, validation, writes become registry events."""

from __future__ import annotations

import uuid

from runtime.registry import create_project
from schemas.events import TOPIC_CHECKS, TOPIC_PINGS, CheckDeleted, CheckUpserted, Paused, Resumed


def _key(edge, readonly=False):
    return {"X-Api-Key": edge.project.api_key_readonly if readonly else edge.project.api_key}


async def test_it_rejects_missing_api_key(edge):
    r = await edge.client.get("/api/v3/checks/")
    assert r.status == 401
    assert await r.json() == {"error": "missing api key"}


async def test_it_rejects_wrong_api_key(edge):
    r = await edge.client.get("/api/v3/checks/", headers={"X-Api-Key": "x" * 32})
    assert r.status == 401
    assert await r.json() == {"error": "wrong api key"}


async def test_it_accepts_api_key_in_json_body(edge):
    r = await edge.client.post("/api/v3/checks/", json={"api_key": edge.project.api_key, "name": "a"})
    assert r.status == 201


async def test_it_rejects_malformed_json(edge):
    r = await edge.client.post("/api/v3/checks/", data=b"{not json", headers=_key(edge))
    assert r.status == 400
    assert await r.json() == {"error": "could not parse request body"}


async def test_it_rejects_non_object_json(edge):
    r = await edge.client.post("/api/v3/checks/", json=[1, 2], headers=_key(edge))
    assert r.status == 400


async def test_it_creates_a_check(edge):
    r = await edge.client.post(
        "/api/v3/checks/", json={"name": "Backups", "slug": "backups", "tags": "prod db", "timeout": 3600, "grace": 60},
        headers=_key(edge),
    )
    assert r.status == 201
    doc = await r.json()
    assert (doc["name"], doc["slug"], doc["timeout"], doc["grace"], doc["status"], doc["n_pings"]) == (
        "Backups", "backups", 3600, 60, "new", 0)
    assert doc["ping_url"].endswith(f"/ping/{doc['uuid']}")
    [upsert] = await edge.events(TOPIC_CHECKS, (CheckUpserted,))
    assert upsert.check.id == doc["uuid"]
    # The new check is pingable at once on this edge.
    assert (await edge.client.get(f"/ping/{doc['uuid']}")).status == 200


async def test_it_creates_a_cron_check(edge):
    r = await edge.client.post("/api/v3/checks/", json={"schedule": "0 2 * * *", "tz": "Europe/Riga"}, headers=_key(edge))
    assert r.status == 201
    doc = await r.json()
    assert (doc["schedule"], doc["tz"]) == ("0 2 * * *", "Europe/Riga")
    assert "timeout" not in doc


async def test_it_validates_fields_with_upstream_messages(edge):
    cases = [
        ({"timeout": 10}, "json validation error: timeout is too small"),
        ({"timeout": 31536001}, "json validation error: timeout is too large"),
        ({"timeout": "60"}, "json validation error: timeout is not a number"),
        ({"grace": True}, "json validation error: grace is too small"),  # upstream: an int, 1 s
        ({"name": None}, "json validation error: name is not a string"),
        ({"name": "x" * 101}, "json validation error: name is too long"),
        ({"slug": "Not A Slug"}, "json validation error: slug does not match pattern"),
        ({"schedule": "bogus"}, "json validation error: schedule is not a valid cron or OnCalendar expression"),
        ({"tz": "Mars/Olympus"}, "json validation error: tz is not a valid timezone"),
        ({"methods": "GET"}, "json validation error: methods has unexpected value"),
        ({"manual_resume": "yes"}, "json validation error: manual_resume is not a boolean"),
        ({"unique": "name"}, "json validation error: unique is not an array"),
        ({"unique": ["color"]}, "json validation error: an item in 'unique' has unexpected value"),
    ]
    for body, message in cases:
        r = await edge.client.post("/api/v3/checks/", json=body, headers=_key(edge))
        assert r.status == 400, body
        assert (await r.json())["error"] == message


async def test_it_upserts_with_unique_without_touching_unnamed_fields(edge):
    r = await edge.client.post("/api/v3/checks/", json={"name": "nightly", "tags": "a", "desc": "keep me"}, headers=_key(edge))
    first = await r.json()
    r = await edge.client.post("/api/v3/checks/", json={"name": "nightly", "tags": "b", "unique": ["name"]}, headers=_key(edge))
    assert r.status == 200
    doc = await r.json()
    assert doc["uuid"] == first["uuid"]
    assert (doc["tags"], doc["desc"]) == ("b", "keep me")


async def test_it_lists_checks_filtered_by_slug_and_tag(edge):
    for body in ({"name": "a", "slug": "a", "tags": "prod web"}, {"name": "b", "slug": "b", "tags": "dev"}):
        await edge.client.post("/api/v3/checks/", json=body, headers=_key(edge))
    names = lambda doc: sorted(c["name"] for c in doc["checks"])  # noqa: E731
    assert names(await (await edge.client.get("/api/v3/checks/", headers=_key(edge))).json()) == ["a", "b"]
    assert names(await (await edge.client.get("/api/v3/checks/?slug=b", headers=_key(edge))).json()) == ["b"]
    assert names(await (await edge.client.get("/api/v3/checks/?tag=prod", headers=_key(edge))).json()) == ["a"]


async def test_it_hides_uuid_from_read_only_keys(edge):
    check = await edge.add_check(name="x")
    r = await edge.client.get("/api/v3/checks/", headers=_key(edge, readonly=True))
    [doc] = (await r.json())["checks"]
    assert "uuid" not in doc and "ping_url" not in doc
    # ... and lets them read by unique_key.
    r = await edge.client.get(f"/api/v3/checks/{doc['unique_key']}", headers=_key(edge, readonly=True))
    assert r.status == 200
    assert (await r.json())["name"] == "x"
    assert check.id not in await r.text()


async def test_it_refuses_writes_with_read_only_key(edge):
    check = await edge.add_check()
    headers = _key(edge, readonly=True)
    assert (await edge.client.post("/api/v3/checks/", json={"name": "x"}, headers=headers)).status == 401
    assert (await edge.client.post(f"/api/v3/checks/{check.id}", json={"name": "x"}, headers=headers)).status == 401
    assert (await edge.client.delete(f"/api/v3/checks/{check.id}", headers=headers)).status == 401
    assert (await edge.client.post(f"/api/v3/checks/{check.id}/pause", headers=headers)).status == 401


async def test_it_isolates_projects(edge):
    other = await create_project(edge.log, "other", edge.registry)
    theirs = await edge.add_check(project_id=other.id, name="theirs")
    for method, path in (("GET", ""), ("POST", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume"),
                         ("GET", "/pings/"), ("GET", "/flips/"), ("GET", "/pings/1/body")):
        r = await edge.client.request(method, f"/api/v3/checks/{theirs.id}{path}", headers=_key(edge))
        assert r.status == 403, (method, path)
    r = await edge.client.get("/api/v3/checks/", headers=_key(edge))
    assert (await r.json())["checks"] == []


async def test_it_updates_and_deletes(edge):
    check = await edge.add_check(name="old")
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={"name": "new", "grace": 120}, headers=_key(edge))
    assert r.status == 200
    assert ((await r.json())["name"], (await r.json())["grace"]) == ("new", 120)
    r = await edge.client.delete(f"/api/v3/checks/{check.id}", headers=_key(edge))
    assert r.status == 200
    assert (await edge.events(TOPIC_CHECKS, (CheckDeleted,)))[0].check_id == check.id
    assert (await edge.client.get(f"/api/v3/checks/{check.id}", headers=_key(edge))).status == 404
    assert (await edge.client.get(f"/ping/{check.id}")).status == 404


async def test_it_returns_404_for_unknown_check(edge):
    r = await edge.client.get(f"/api/v3/checks/{uuid.uuid4()}", headers=_key(edge))
    assert r.status == 404


async def test_it_pauses_and_resumes(edge):
    check = await edge.add_check()
    r = await edge.client.post(f"/api/v3/checks/{check.id}/resume", headers=_key(edge))
    assert r.status == 409
    assert await r.text() == "check is not paused"
    r = await edge.client.post(f"/api/v3/checks/{check.id}/pause", headers=_key(edge))
    assert r.status == 200
    assert (await r.json())["status"] == "paused"
    r = await edge.client.post(f"/api/v3/checks/{check.id}/resume", headers=_key(edge))
    assert r.status == 200
    assert (await r.json())["status"] == "new"
    controls = await edge.events(TOPIC_PINGS, (Paused, Resumed))
    assert [type(e) for e in controls] == [Paused, Resumed]


async def test_it_lists_no_channels(edge):
    r = await edge.client.get("/api/v3/channels/", headers=_key(edge))
    assert await r.json() == {"channels": []}


async def test_it_publishes_openapi(edge):
    r = await edge.client.get("/api/openapi.json")
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v3/checks/{uuid}" in doc["paths"]
    assert "/api/v1/monitors/{id}/checkin" in doc["paths"]
