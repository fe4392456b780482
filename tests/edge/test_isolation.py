"""Abuse and isolation: ping keys grant nothing else, keys of one project reach nothing of another,
CORS only where browsers ping."""

from __future__ import annotations

from pingstream.cli import create_project


async def test_a_ping_key_is_not_an_api_key(edge):
    key = edge.project.ping_key
    for headers in ({"X-Api-Key": key}, {"Authorization": f"Bearer {key}"}):
        assert (await edge.client.get("/api/v3/checks/", headers=headers)).status == 401
        assert (await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED"}, headers=headers)).status == 401


async def test_overwatch_monitors_of_another_project_are_invisible(edge):
    other = await create_project(edge.log, "other", edge.registry)
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": "theirs"},
                               headers={"Authorization": f"Bearer {other.api_key}"})
    theirs = (await r.json())["data"]["id"]
    mine = {"Authorization": f"Bearer {edge.project.api_key}"}
    assert (await edge.client.get(f"/api/v1/monitors/{theirs}", headers=mine)).status == 404


async def test_another_projects_check_cannot_be_reached_by_unique_key_or_slug(edge):
    other = await create_project(edge.log, "other", edge.registry)
    theirs = await edge.add_check(project_id=other.id, name="theirs", slug="theirs", unique_key="u" * 40)
    mine = {"X-Api-Key": edge.project.api_key_readonly}
    r = await edge.client.get(f"/api/v3/checks/{theirs.unique_key}", headers=mine)
    assert r.status in (403, 404)
    r = await edge.client.get("/api/v3/checks/?slug=theirs", headers=mine)
    assert (await r.json())["checks"] == []
    # and their slug is not pingable with our ping key
    assert (await edge.client.get(f"/ping/{edge.project.ping_key}/theirs")).status == 404


async def test_cors_only_on_ping_endpoints(edge):
    check = await edge.add_check()
    assert (await edge.client.get(f"/ping/{check.id}")).headers.get("Access-Control-Allow-Origin") == "*"
    headers = {"X-Api-Key": edge.project.api_key}
    for path in ("/api/v3/checks/", f"/api/v3/checks/{check.id}", "/api/openapi.json", "/metrics", "/healthz"):
        r = await edge.client.get(path, headers=headers)
        assert "Access-Control-Allow-Origin" not in r.headers, path
