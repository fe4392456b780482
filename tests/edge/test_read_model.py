"""Reads never lie: without a reachable read model, every answer that needs projected state is a 503
naming what is missing (never ``status: new``, ``n_pings: 0``); what needs no state still works."""

from __future__ import annotations

import pytest

from runtime.clickhouse import ClickHouse
from runtime.kafkabroker import free_port
from schemas.events import TOPIC_CHECKS, CheckUpserted
from tests.edge.conftest import _edge

OFF = {"error": "read model unavailable: PINGSTREAM_CLICKHOUSE=off"}


def _key(edge, readonly=False):
    return {"X-Api-Key": edge.project.api_key_readonly if readonly else edge.project.api_key}


async def _badge_paths(edge) -> list[str]:
    r = await edge.client.get("/api/v3/badges/", headers=_key(edge, readonly=True))
    assert r.status == 200  # the badge list is made from the registry alone
    badges = (await r.json())["badges"]
    return ["/" + badges["*"][fmt].split("/", 3)[3] for fmt in ("svg", "json", "shields")]


async def _state_reads(edge, check_id: str) -> list[tuple[str, str, dict]]:
    """Every (method, path, headers) whose answer carries projected state."""
    key, ro = _key(edge), _key(edge, readonly=True)
    bearer = {"Authorization": f"Bearer {edge.project.api_key}"}
    check = f"/api/v3/checks/{check_id}"
    reads = [("GET", "/api/v3/checks/", key), ("GET", check, key), ("GET", check + "/pings/", key),
             ("GET", check + "/pings/1/body", key), ("GET", check + "/flips/", key),
             ("GET", check + "/ping-log", ro), ("GET", check + "/runs", ro), ("GET", check + "/durations", ro), ("GET", check + "/durations.svg", ro),
             ("GET", "/api/v3/analytics/slowest", ro), ("GET", "/api/v3/analytics/failure-rate", ro),
             ("GET", "/api/v3/analytics/p95-growth", ro),
             ("GET", "/api/v1/monitors", bearer), ("GET", f"/api/v1/monitors/{check_id}", bearer),
             ("GET", f"/projects/{edge.project.id}/metrics/{edge.project.api_key_readonly}", {})]
    reads += [("GET", path, {}) for path in await _badge_paths(edge)]
    return reads


async def test_it_answers_503_naming_the_missing_read_model_for_every_state_read(edge_without_read_model):
    edge = edge_without_read_model
    check = await edge.add_check(name="nightly", tags="prod")
    for method, path, headers in await _state_reads(edge, check.id):
        r = await edge.client.request(method, path, headers=headers)
        assert r.status == 503, (path, r.status, await r.text())
        assert await r.json() == OFF, path


async def test_it_writes_nothing_when_the_state_an_answer_needs_cannot_be_read(edge_without_read_model):
    edge = edge_without_read_model
    check = await edge.add_check(name="nightly")
    before = await edge.events(TOPIC_CHECKS, types=(CheckUpserted,))
    check_url = f"/api/v3/checks/{check.id}"
    for method, path, body in (("POST", check_url, {"name": "renamed"}), ("DELETE", check_url, None),
                               ("POST", check_url + "/pause", None),
                               ("POST", "/api/v3/checks/", {"name": "nightly", "unique": ["name"], "tags": "t"})):
        r = await edge.client.request(method, path, json=body, headers=_key(edge))
        assert r.status == 503 and await r.json() == OFF, path
    assert await edge.events(TOPIC_CHECKS, types=(CheckUpserted,)) == before
    assert edge.registry.checks[check.id].name == "nightly"


async def test_it_takes_pings_and_creates_checks_without_a_read_model(edge_without_read_model):
    edge = edge_without_read_model
    r = await edge.client.post("/api/v3/checks/", json={"name": "fresh"}, headers=_key(edge))
    doc = await r.json()
    assert r.status == 201 and doc["status"] == "new" and doc["n_pings"] == 0  # a new check has no pings: true
    r = await edge.client.get(f"/ping/{doc['ping_url'].rsplit('/', 1)[1]}")
    assert r.status == 200
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "name": "m", "interval": 3600},
                               headers={"Authorization": f"Bearer {edge.project.api_key}"})
    assert r.status == 201


@pytest.fixture
async def edge_on_a_server_that_is_down(tmp_path, aiohttp_client):
    port = free_port()
    ch = ClickHouse(f"http://default:secret@127.0.0.1:{port}", "pingstream", migrate=False)
    await ch.start()  # a reader starts without it, and tries again on each read
    edge = await _edge(tmp_path, aiohttp_client, ch, {"PINGSTREAM_CLICKHOUSE": ch.dsn})
    edge.port = port
    try:
        yield edge
    finally:
        await edge.client.close()
        await edge.log.close()
        await ch.close()


async def test_it_names_a_clickhouse_server_that_is_down_without_its_password(edge_on_a_server_that_is_down):
    edge = edge_on_a_server_that_is_down
    check = await edge.add_check(name="nightly", tags="prod")
    expected = {"error": f"read model unavailable: ClickHouse at http://127.0.0.1:{edge.port} is unreachable"}
    for method, path, headers in await _state_reads(edge, check.id):
        r = await edge.client.request(method, path, headers=headers)
        assert r.status == 503 and await r.json() == expected, (path, r.status, await r.text())
