"""Channels through the Management API: Healthchecks' list shape, pingstream's create and remove,
and a check's ``channels`` field resolved as Healthchecks resolves it."""

from __future__ import annotations

import pytest

from ingest.app import create_app
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import Registry, create_project
from schemas.events import TOPIC_CHECKS, ChannelDeleted, ChannelUpserted, CheckUpserted
from tests.edge.conftest import Edge
from tests.edge.server import EdgeTestServer


def _key(edge) -> dict:
    return {"X-Api-Key": edge.project.api_key}


@pytest.fixture
async def private_ok(tmp_path, aiohttp_client):
    """An edge whose operator allows alert targets on private addresses (PINGSTREAM_WEBHOOK_ALLOW_PRIVATE=1)."""
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_WEBHOOK_ALLOW_PRIVATE": "1"})
    log = SqliteEventLog(config.sqlite_path, default_partitions=2)
    await log.start()
    registry = Registry()
    project = await create_project(log, "test", registry)
    client = await aiohttp_client(EdgeTestServer(create_app(config, log, registry, clickhouse=None)))
    try:
        yield Edge(client, log, registry, project, config)
    finally:
        await client.close()
        await log.close()


async def _add(edge, **body):
    r = await edge.client.post("/api/v3/channels/", json=body, headers=_key(edge))
    return r.status, await r.json()


async def test_it_creates_a_webhook_and_shows_its_secret_once(private_ok):
    edge = private_ok
    status, doc = await _add(edge, name="ops", kind="webhook", url="http://127.0.0.1:9/hook")
    assert status == 201
    assert doc["name"] == "ops" and doc["kind"] == "webhook" and doc["events"] == ["down", "up"]
    assert doc["secret"].startswith("whsec_")
    r = await edge.client.get("/api/v3/channels/", headers=_key(edge))
    assert await r.json() == {"channels": [{"id": doc["id"], "name": "ops", "kind": "webhook"}]}
    # The secret and the URL are in the log (for the notifier) but in no GET answer.
    text = await r.text()
    assert "whsec_" not in text and "127.0.0.1" not in text


async def test_it_lists_channels_in_healthchecks_shape_for_email_and_apprise(edge):
    status, mail = await _add(edge, name="me", kind="email", email="ops@example.com", events=["down", "failure"])
    assert (status, mail["events"]) == (201, ["down", "failure"]) and "secret" not in mail
    status, chat = await _add(edge, name="chat", kind="apprise", url="ntfy://ntfy.sh/pingstream-test")
    assert status == 201
    r = await edge.client.get("/api/v3/channels/", headers=_key(edge))
    assert [c["kind"] for c in (await r.json())["channels"]] == ["email", "apprise"]


@pytest.mark.parametrize("body, message", [
    ({}, "kind is missing"),
    ({"kind": "sms"}, "kind has unexpected value"),
    ({"kind": "webhook"}, "url is missing"),
    ({"kind": "webhook", "url": "ftp://example.com/x"}, "url is not a valid URL"),
    ({"kind": "webhook", "url": "http://127.0.0.1:8000/x"}, "url points to a private address"),
    ({"kind": "webhook", "url": "http://[::1]/x"}, "url points to a private address"),
    ({"kind": "webhook", "url": "http://169.254.169.254/latest"}, "url points to a private address"),
    ({"kind": "webhook", "url": "http://10.1.2.3/x"}, "url points to a private address"),
    ({"kind": "webhook", "url": "http://localhost/x"}, "url points to a private address"),
    ({"kind": "webhook", "url": "https://example.com/x", "method": "DELETE"}, "method has unexpected value"),
    ({"kind": "webhook", "url": "https://example.com/x", "headers": {"X": "a\r\nB: c"}},
     "an item in 'headers' has unexpected value"),
    ({"kind": "webhook", "url": "https://example.com/x", "events": ["down", "exploded"]},
     "an item in 'events' has unexpected value"),
    ({"kind": "webhook", "url": "https://example.com/x", "events": "down"}, "events is not an array"),
    ({"kind": "email", "email": "not an address"}, "email is not a valid address"),
    ({"kind": "apprise", "url": "nosuchservice://x"}, "url is not an Apprise URL"),
    ({"kind": "email", "email": "a@example.com", "name": 5}, "name is not a string"),
    ({"kind": "email", "email": "a@example.com", "name": "ops\u202e"}, "name contains a control character"),
])
async def test_it_refuses_a_bad_channel_with_a_short_400(edge, body, message):
    status, doc = await _add(edge, **body)
    assert (status, doc) == (400, {"error": f"json validation error: {message}"})
    r = await edge.client.get("/api/v3/channels/", headers=_key(edge))
    assert (await r.json())["channels"] == []


async def test_it_needs_the_read_write_key(edge):
    r = await edge.client.post("/api/v3/channels/", json={"kind": "email", "email": "a@example.com"},
                               headers={"X-Api-Key": edge.project.api_key_readonly})
    assert r.status == 401


async def test_it_assigns_a_new_channel_to_every_check_and_resolves_check_channels(edge):
    check = await edge.add_check(name="nightly")
    _, a = await _add(edge, name="ops", kind="email", email="ops@example.com")
    r = await edge.client.get(f"/api/v3/checks/{check.id}", headers=_key(edge))
    assert (await r.json())["channels"] == a["id"]
    _, b = await _add(edge, name="pager", kind="email", email="pager@example.com")
    both = ",".join(sorted([a["id"], b["id"]]))
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={"channels": "pager"}, headers=_key(edge))
    assert (r.status, (await r.json())["channels"]) == (200, b["id"])
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={"channels": "*"}, headers=_key(edge))
    assert (await r.json())["channels"] == both
    r = await edge.client.post("/api/v3/checks/", json={"name": "new", "channels": f"{a['id']},pager"},
                               headers=_key(edge))
    assert (r.status, (await r.json())["channels"]) == (201, both)
    r = await edge.client.post("/api/v3/checks/", json={"name": "quiet"}, headers=_key(edge))
    assert (await r.json())["channels"] == ""  # as upstream: an API-created check has none unless asked
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={"channels": ""}, headers=_key(edge))
    assert (await r.json())["channels"] == ""


async def test_it_refuses_unknown_and_ambiguous_channel_identifiers(edge):
    await _add(edge, name="ops", kind="email", email="a@example.com")
    await _add(edge, name="ops", kind="email", email="b@example.com")
    for channels, message in (("ops", "non-unique channel identifier: ops"),
                              ("nope", "invalid channel identifier: nope"),
                              ("ops,", "non-unique channel identifier: ops")):
        r = await edge.client.post("/api/v3/checks/", json={"name": "c", "channels": channels}, headers=_key(edge))
        assert (r.status, await r.json()) == (400, {"error": message}), channels


async def test_a_check_made_by_a_ping_gets_every_channel(edge):
    _, a = await _add(edge, name="ops", kind="email", email="ops@example.com")
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/auto?create=1")
    assert r.status == 201
    (check,) = edge.registry.checks_by_slug(edge.project.id, "auto")
    assert check.channels == (a["id"],)


async def test_it_removes_a_channel_and_the_checks_stop_listing_it(edge):
    check = await edge.add_check(name="nightly")
    _, a = await _add(edge, name="ops", kind="email", email="ops@example.com")
    r = await edge.client.delete(f"/api/v3/channels/{a['id']}", headers=_key(edge))
    assert (r.status, await r.json()) == (200, {"id": a["id"], "name": "ops", "kind": "email"})
    r = await edge.client.get(f"/api/v3/checks/{check.id}", headers=_key(edge))
    assert (await r.json())["channels"] == ""
    r = await edge.client.delete(f"/api/v3/channels/{a['id']}", headers=_key(edge))
    assert r.status == 404


async def test_it_keeps_projects_apart(edge):
    other = await create_project(edge.log, "other", edge.registry)
    r = await edge.client.post("/api/v3/channels/", json={"kind": "email", "email": "x@example.com"},
                               headers={"X-Api-Key": other.api_key})
    theirs = await r.json()
    r = await edge.client.get("/api/v3/channels/", headers=_key(edge))
    assert (await r.json())["channels"] == []
    r = await edge.client.delete(f"/api/v3/channels/{theirs['id']}", headers=_key(edge))
    assert r.status == 403
    r = await edge.client.post("/api/v3/checks/", json={"name": "c", "channels": theirs["id"]}, headers=_key(edge))
    assert r.status == 400


async def test_channels_survive_a_restart_through_the_registry_topic(edge):
    _, a = await _add(edge, name="ops", kind="email", email="ops@example.com")
    _, b = await _add(edge, name="gone", kind="email", email="gone@example.com")
    await edge.client.delete(f"/api/v3/channels/{b['id']}", headers=_key(edge))
    fresh = Registry()
    events = await edge.events(TOPIC_CHECKS, types=(ChannelUpserted, ChannelDeleted, CheckUpserted))
    for event in events:
        fresh.apply(event)
    assert list(fresh.channels) == [a["id"]]
    assert fresh.channels[a["id"]].email == "ops@example.com"


async def test_the_openapi_document_lists_the_channel_and_notification_paths(edge):
    paths = (await (await edge.client.get("/api/openapi.json")).json())["paths"]
    assert set(paths["/api/v3/channels/"]) == {"get", "post"}
    assert "delete" in paths["/api/v3/channels/{channel}"]
    assert any(p.endswith("/{uuid}/notifications/") for p in paths)


async def test_a_check_without_deliveries_lists_no_notifications(edge):
    check = await edge.add_check(name="job")
    r = await edge.client.get(f"/api/v3/checks/{check.id}/notifications/", headers=_key(edge))
    assert (r.status, await r.json()) == (200, {"notifications": []})
    r = await edge.client.get(f"/api/v3/checks/{check.id}/notifications", headers=_key(edge), allow_redirects=False)
    assert r.status == 301
