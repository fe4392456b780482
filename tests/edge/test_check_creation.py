"""Every way a check is made is validated alike and counted against the project's check limit:
the Management API, ``?create=1`` auto-provisioning, Overwatch's create, the CLI's project names."""

from __future__ import annotations

import contextlib
import dataclasses

import aiohttp

from pingstream import cli
from schemas.events import TOPIC_CHECKS, CheckUpserted, PingEvent
from tests.edge.server import serving


def _key(edge) -> dict:
    return {"X-Api-Key": edge.project.api_key}


@contextlib.asynccontextmanager
async def limited(edge, check_limit: int):
    """The edge's registry and log served with PINGSTREAM_CHECK_LIMIT=check_limit; yields a session
    whose relative URLs go to it."""
    config = dataclasses.replace(edge.config, check_limit=check_limit)
    async with serving(edge, config) as site:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{site.port}") as session:
            yield session


# --- ?create=1 ----------------------------------------------------------------------------------


async def test_it_refuses_to_provision_a_slug_longer_than_the_api_allows(edge):
    for slug in ("a" * 8000, "b" * 101):
        r = await edge.client.get(f"/ping/{edge.project.ping_key}/{slug}?create=1")
        assert (r.status, await r.text()) == (400, "invalid url format")
    assert edge.registry.project_checks(edge.project.id) == []
    assert await edge.events(TOPIC_CHECKS, (CheckUpserted,)) == []
    assert await edge.events() == []  # and no ping was recorded


async def test_it_provisions_a_slug_of_the_longest_length_the_api_allows(edge):
    slug = "c" * 100
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/{slug}?create=1")
    assert (r.status, await r.text()) == (201, "Created")
    [check] = edge.registry.project_checks(edge.project.id)
    assert (check.name, check.slug) == (slug, slug)


async def test_a_too_long_slug_without_create_is_just_not_found(edge):
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/{'d' * 500}")
    assert (r.status, await r.text()) == (404, "not found")


async def test_auto_provisioning_may_take_a_project_to_twice_its_check_limit(edge):
    """As upstream: a project may exceed its limit up to twice by ?create=1, then gets not found."""
    await edge.add_check(name="existing")
    async with limited(edge, check_limit=2) as session:
        for n in range(3):  # 1 existing + 3 = 4 = twice the limit
            r = await session.get(f"/ping/{edge.project.ping_key}/job-{n}?create=1")
            assert (r.status, await r.text()) == (201, "Created")
        r = await session.get(f"/ping/{edge.project.ping_key}/job-3?create=1")
        assert (r.status, await r.text()) == (404, "not found")
        r = await session.get(f"/ping/{edge.project.ping_key}/job-0")  # the ones made still take pings
        assert r.status == 200
    assert edge.registry.project_check_count(edge.project.id) == 4
    assert len(await edge.events(types=(PingEvent,))) == 4


# --- the Management API and Overwatch -----------------------------------------------------------


async def test_the_api_refuses_a_new_check_over_the_limit_as_healthchecks_does(edge):
    async with limited(edge, check_limit=2) as session:
        for name in ("a", "b"):
            r = await session.post("/api/v3/checks/", json={"name": name}, headers=_key(edge))
            assert r.status == 201
        r = await session.post("/api/v3/checks/", json={"name": "c"}, headers=_key(edge))
        assert (r.status, await r.read()) == (403, b"")  # upstream's HttpResponseForbidden()
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        # at the limit, a create that matches an existing check by "unique" updates it
        r = await session.post("/api/v3/checks/", json={"name": "a", "tags": "t", "unique": ["name"]},
                               headers=_key(edge))
        assert r.status == 200 and (await r.json())["tags"] == "t"
        # Overwatch's create counts the same checks
        r = await session.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": "d"},
                               headers={"Authorization": f"Bearer {edge.project.api_key}"})
        assert (r.status, await r.json()) == (403, {"error": "checks limit exceeded"})
    assert sorted(c.name for c in edge.registry.project_checks(edge.project.id)) == ["a", "b"]


async def test_the_limit_is_per_project(edge):
    from runtime.registry import create_project

    other = await create_project(edge.log, "other", edge.registry)
    await edge.add_check(name="theirs", project_id=other.id)
    async with limited(edge, check_limit=1) as session:
        r = await session.post("/api/v3/checks/", json={"name": "mine"}, headers=_key(edge))
        assert r.status == 201
        r = await session.post("/api/v3/checks/", json={"name": "more"}, headers={"X-Api-Key": other.api_key})
        assert r.status == 403


async def test_a_limit_of_zero_refuses_every_new_check(edge):
    async with limited(edge, check_limit=0) as session:
        r = await session.post("/api/v3/checks/", json={}, headers=_key(edge))
        assert r.status == 403
        r = await session.get(f"/ping/{edge.project.ping_key}/x?create=1")
        assert r.status == 404


async def test_overwatch_create_validates_the_name_as_the_api_does(edge):
    bearer = {"Authorization": f"Bearer {edge.project.api_key}"}
    for name, error in (("x" * 101, "name must be a string of at most 100 characters"),
                        ("a\x00b", "name contains a control character"),
                        ("evil\u202egnp.exe", "name contains a control character")):
        r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": name}, headers=bearer)
        assert (r.status, await r.json()) == (400, {"error": error})
    assert edge.registry.project_checks(edge.project.id) == []


# --- the CLI --------------------------------------------------------------------------------------


def test_the_cli_refuses_a_project_name_with_control_characters(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PINGSTREAM_DATA", str(tmp_path / "data"))
    for name in ("a\x00b", "right\u202eleft", "x" * 61, " "):
        assert cli.main(["project", "create", name]) == 2
        assert "project name" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing was written
    assert cli.main(["project", "create", "acme"]) == 0
    out = capsys.readouterr().out
    assert "project 'acme'" in out and "/metrics/" in out
