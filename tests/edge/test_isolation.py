"""Isolation: ping keys grant nothing else, keys of one project reach nothing of another."""

from __future__ import annotations

from checks.spec import unique_key
from runtime.registry import create_project


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
    theirs = await edge.add_check(project_id=other.id, name="theirs", slug="theirs")
    key = unique_key(theirs.id)
    # Their own read-only key reaches the check by its unique key: the same request with ours must not.
    owner = {"X-Api-Key": other.api_key_readonly}
    assert (await edge.client.get(f"/api/v3/checks/{key}", headers=owner)).status == 200
    assert (await edge.client.get(f"/api/v3/checks/{key}/flips/", headers=owner)).status == 200
    mine = {"X-Api-Key": edge.project.api_key_readonly}
    assert (await edge.client.get(f"/api/v3/checks/{key}", headers=mine)).status == 404
    assert (await edge.client.get(f"/api/v3/checks/{key}/flips/", headers=mine)).status == 404
    r = await edge.client.get("/api/v3/checks/?slug=theirs", headers=owner)
    assert [c["name"] for c in (await r.json())["checks"]] == ["theirs"]
    r = await edge.client.get("/api/v3/checks/?slug=theirs", headers=mine)
    assert (await r.json())["checks"] == []
    # and their slug is not pingable with our ping key
    assert (await edge.client.get(f"/ping/{other.ping_key}/theirs")).status == 200
    assert (await edge.client.get(f"/ping/{edge.project.ping_key}/theirs")).status == 404
