"""The Pinging API over HTTP, one behaviour per test (Healthchecks' wire behaviour)."""

from __future__ import annotations

import uuid

from schemas.events import TOPIC_CHECKS, CheckUpserted, stable_id
from tests.edge.server import EdgeTestServer


async def test_it_records_a_success_ping(edge):
    check = await edge.add_check(name="backup")
    r = await edge.client.get(f"/ping/{check.id}")
    assert r.status == 200
    assert await r.text() == "OK"
    [event] = await edge.events()
    assert (event.check_id, event.kind, event.method, event.source) == (check.id, "success", "GET", "ping")


async def test_it_sets_upstream_headers(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/ping/{check.id}")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Ping-Body-Limit"] == "100"
    assert "no-cache" in r.headers["Cache-Control"]
    assert r.headers["Content-Type"].startswith("text/plain")


async def test_it_handles_head_and_post_and_other_methods(edge):
    check = await edge.add_check()
    for method in ("HEAD", "POST", "PUT"):
        r = await edge.client.request(method, f"/ping/{check.id}")
        assert r.status == 200, method
    assert [e.method for e in await edge.events()] == ["HEAD", "POST", "PUT"]


async def test_it_handles_start_fail_log(edge):
    check = await edge.add_check()
    for action in ("start", "fail", "log"):
        assert (await edge.client.get(f"/ping/{check.id}/{action}")).status == 200
    assert [e.kind for e in await edge.events()] == ["start", "fail", "log"]


async def test_it_handles_exit_status(edge):
    check = await edge.add_check()
    for code in ("0", "1", "255"):
        assert (await edge.client.get(f"/ping/{check.id}/{code}")).status == 200
    events = await edge.events()
    assert [(e.kind, e.exit_status) for e in events] == [("success", 0), ("fail", 1), ("fail", 255)]


async def test_it_rejects_exit_status_over_255(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/ping/{check.id}/256")
    assert r.status == 400
    assert await r.text() == "invalid url format"
    assert await edge.events() == []


async def test_it_handles_unknown_check(edge):
    r = await edge.client.get(f"/ping/{uuid.uuid4()}")
    assert r.status == 404
    assert await r.text() == "not found"


async def test_it_looks_up_check_before_validating_exit_status(edge):
    r = await edge.client.get(f"/ping/{uuid.uuid4()}/300")
    assert r.status == 404


async def test_it_rejects_uppercase_uuid(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/ping/{check.id.upper()}")
    assert r.status == 404


async def test_it_rejects_malformed_paths(edge):
    for path in ("/ping/", "/ping/not-a-uuid", "/ping/a/b/c/d", "/ping/%00/x", "/nope"):
        r = await edge.client.get(path)
        assert 400 <= r.status < 500, path


async def test_it_accepts_rid(edge):
    check = await edge.add_check()
    rid = str(uuid.uuid4())
    assert (await edge.client.get(f"/ping/{check.id}/start?rid={rid}")).status == 200
    [event] = await edge.events()
    assert event.rid == rid


async def test_it_rejects_bad_rid(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/ping/{check.id}?rid=123")
    assert r.status == 400
    assert await r.text() == "invalid uuid format"


async def test_it_cuts_the_body_at_the_limit_and_records_its_size(edge):
    check = await edge.add_check()
    body = b"\xff\x00binary" + b"x" * 500
    assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    [event] = await edge.events()
    assert event.body == body[:100]
    assert event.body_size == len(body)


async def test_it_handles_slug_ping(edge):
    check = await edge.add_check(slug="db-backup")
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/db-backup/start")
    assert r.status == 200
    [event] = await edge.events()
    assert (event.check_id, event.kind) == (check.id, "start")


async def test_it_handles_slug_exit_status(edge):
    await edge.add_check(slug="db-backup")
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/db-backup/3")
    assert r.status == 200
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/db-backup/999")
    assert r.status == 400


async def test_it_returns_404_for_unknown_slug_or_ping_key(edge):
    await edge.add_check(slug="db-backup")
    assert (await edge.client.get(f"/ping/{edge.project.ping_key}/other")).status == 404
    assert (await edge.client.get("/ping/wrong-ping-key/db-backup")).status == 404


async def test_it_returns_409_for_ambiguous_slug(edge):
    await edge.add_check(slug="dup")
    await edge.add_check(slug="dup")
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/dup")
    assert r.status == 409
    assert await r.text() == "ambiguous slug"


async def test_it_creates_check_on_create_1(edge):
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/new-job?create=1")
    assert r.status == 201
    assert await r.text() == "Created"
    expected_id = stable_id("check", edge.project.id, "new-job")
    [upsert] = [e for e in await edge.events(TOPIC_CHECKS, (CheckUpserted,))]
    assert (upsert.check.id, upsert.check.slug, upsert.check.name) == (expected_id, "new-job", "new-job")
    [event] = await edge.events()
    assert event.check_id == expected_id
    # The second ping finds it: 200, not another 201.
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/new-job?create=1")
    assert r.status == 200


async def test_it_ignores_get_to_post_only_check(edge):
    check = await edge.add_check(methods="POST")
    assert (await edge.client.get(f"/ping/{check.id}")).status == 200
    assert (await edge.client.post(f"/ping/{check.id}")).status == 200
    assert [e.kind for e in await edge.events()] == ["ign", "success"]


async def test_it_applies_body_keyword_filters(edge):
    check = await edge.add_check(filter_body=True, success_kw="SUCCESS", failure_kw="ERROR", start_kw="STARTING")
    for body in (b"all SUCCESS", b"an ERROR, not SUCCESS", b"STARTING now", b"nothing"):
        assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    assert [e.kind for e in await edge.events()] == ["success", "fail", "start", "ign"]


async def test_it_ignores_pings_to_paused_manual_resume_check(edge):
    check = await edge.add_check(manual_resume=True, paused=True)
    assert (await edge.client.get(f"/ping/{check.id}")).status == 200
    assert [e.kind for e in await edge.events()] == ["ign"]


async def test_it_answers_503_when_the_log_is_unavailable(edge):
    check = await edge.add_check()
    await edge.log.close()
    r = await edge.client.get(f"/ping/{check.id}")
    assert r.status == 503
    assert "Retry-After" in r.headers


async def test_it_rate_limits_a_runaway_check_but_not_others(tmp_path, aiohttp_client):
    from ingest.app import create_app
    from runtime.config import Config
    from runtime.eventlog.sqlite import SqliteEventLog
    from runtime.registry import Registry, create_project, save_check
    from schemas.events import CheckConfig, utcnow, uuid7

    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_RATE_LIMIT_CHECK": "1",
                              "PINGSTREAM_RATE_LIMIT_BURST": "3"})
    async with SqliteEventLog(config.sqlite_path) as log:
        registry = Registry()
        project = await create_project(log, "p", registry)
        checks = [CheckConfig(id=str(uuid7()), project_id=project.id, created=utcnow()) for _ in range(2)]
        for c in checks:
            await save_check(log, registry, c)
        client = await aiohttp_client(EdgeTestServer(create_app(config, log, registry, None)))
        statuses = [(await client.get(f"/ping/{checks[0].id}")).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        r = await client.get(f"/ping/{checks[0].id}")
        assert r.headers["Retry-After"] == "1"
        assert (await client.get(f"/ping/{checks[1].id}")).status == 200
