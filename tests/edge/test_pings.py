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


async def test_it_applies_http_body_keyword_filters(edge):
    check = await edge.add_check(filter_http_body=True, success_kw="SUCCESS", failure_kw="ERROR", start_kw="STARTING")
    for body in (b"all SUCCESS", b"an ERROR, not SUCCESS", b"STARTING now", b"nothing"):
        assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    assert [e.kind for e in await edge.events()] == ["success", "fail", "start", "ign"]


async def test_it_fails_a_body_matching_no_keyword_with_filter_default_fail(edge):
    check = await edge.add_check(filter_http_body=True, filter_default_fail=True, success_kw="SUCCESS")
    assert (await edge.client.post(f"/ping/{check.id}", data=b"nothing")).status == 200
    assert [e.kind for e in await edge.events()] == ["fail"]


async def test_it_lets_keywords_override_the_urls_action(edge):
    check = await edge.add_check(filter_http_body=True, success_kw="SUCCESS")
    for path in ("/fail", "/log", "/start", "/7"):
        assert (await edge.client.post(f"/ping/{check.id}{path}", data=b"SUCCESS")).status == 200
    assert [(e.kind, e.exit_status) for e in await edge.events()] == [
        ("success", None), ("success", None), ("success", None), ("success", 7)]


async def test_it_matches_keywords_case_sensitively_as_a_stripped_comma_list(edge):
    check = await edge.add_check(filter_http_body=True, failure_kw=" ERROR , , FATAL ")
    for body in (b"error", b"a FATAL one", b""):
        assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    assert [e.kind for e in await edge.events()] == ["ign", "fail", "ign"]


async def test_it_ignores_http_body_keywords_when_only_the_email_filter_is_on(edge):
    check = await edge.add_check(filter_body=True, failure_kw="ERROR")
    assert (await edge.client.post(f"/ping/{check.id}", data=b"ERROR")).status == 200
    assert [e.kind for e in await edge.events()] == ["success"]


async def test_it_ignores_a_get_to_a_post_only_check_before_the_keywords(edge):
    check = await edge.add_check(methods="POST", filter_http_body=True, filter_default_fail=True)
    assert (await edge.client.get(f"/ping/{check.id}")).status == 200
    assert [e.kind for e in await edge.events()] == ["ign"]


async def test_it_matches_keywords_in_a_body_that_is_not_utf8_instead_of_failing(edge):
    """Deliberate difference (README): Healthchecks answers 500 and records nothing here."""
    check = await edge.add_check(filter_http_body=True, failure_kw="ERROR", success_kw="done")
    for body in (b"\xff\xfe ERROR \x80", b"caf\xe9 done"):
        assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    events = await edge.events()
    assert [(e.kind, e.body) for e in events] == [("fail", b"\xff\xfe ERROR \x80"), ("success", b"caf\xe9 done")]


async def test_it_creates_one_check_when_two_edges_race_on_create_1(edge):
    """Deliberate difference (README): the new check's uuid comes from project and slug, so two
    edges that both miss the slug create the same check, not two (Healthchecks: one per request)."""
    from aiohttp.test_utils import TestClient

    from ingest.app import create_app
    from runtime.registry import Registry
    from schemas.events import ProjectUpserted, uuid7
    from tests.edge.server import EdgeTestServer

    other = Registry()  # a second edge's registry: it knows the project, not the first edge's check
    for project in edge.registry.projects.values():
        other.apply(ProjectUpserted(event_id=str(uuid7()), project=project))
    client = TestClient(EdgeTestServer(create_app(edge.config, edge.log, other, clickhouse=None)))
    await client.start_server()
    try:
        url = f"/ping/{edge.project.ping_key}/raced?create=1"
        first, again = await edge.client.get(url), await client.get(url)
        assert (first.status, again.status) == (201, 201)
    finally:
        await client.close()
    upserts = [e for e in await edge.events(TOPIC_CHECKS, (CheckUpserted,))]
    assert len({e.check.id for e in upserts}) == 1 == len({e.check_id for e in await edge.events()})


async def test_it_ignores_pings_to_paused_manual_resume_check(edge):
    check = await edge.add_check(manual_resume=True, paused=True)
    assert (await edge.client.get(f"/ping/{check.id}")).status == 200
    assert [e.kind for e in await edge.events()] == ["ign"]
    assert edge.registry.checks[check.id].paused


async def test_it_keeps_a_paused_check_paused_on_a_start_or_log_ping(edge):
    check = await edge.add_check(paused=True)
    for action in ("start", "log"):
        assert (await edge.client.get(f"/ping/{check.id}/{action}")).status == 200
    assert [e.kind for e in await edge.events()] == ["start", "log"]
    assert edge.registry.checks[check.id].paused


async def test_it_takes_a_paused_check_out_of_its_pause_on_a_failure(edge):
    check = await edge.add_check(paused=True)
    assert (await edge.client.get(f"/ping/{check.id}/fail")).status == 200
    assert not edge.registry.checks[check.id].paused


async def test_it_cuts_the_user_agent_at_200_characters(edge):
    check = await edge.add_check()
    assert (await edge.client.get(f"/ping/{check.id}", headers={"User-Agent": "u" * 300})).status == 200
    [event] = await edge.events()
    assert event.user_agent == "u" * 200


async def test_it_answers_400_to_an_upper_case_action_word(edge):
    check = await edge.add_check()
    for word in ("START", "Fail"):
        r = await edge.client.get(f"/ping/{check.id}/{word}")
        assert (r.status, await r.text()) == (400, "invalid url format")
    assert await edge.events() == []


async def test_it_answers_400_to_an_upper_case_slug_before_looking_it_up(edge):
    await edge.add_check(slug="db-backup")
    for path in ("DB-BACKUP", "Db-backup/start", "Nowhere/fail"):
        r = await edge.client.get(f"/ping/{edge.project.ping_key}/{path}")
        assert (r.status, await r.text()) == (400, "invalid url format"), path
    r = await edge.client.get("/ping/wrong-key/Upper")
    assert r.status == 400
    assert await edge.events() == []


async def test_it_does_not_create_a_check_for_an_upper_case_slug(edge):
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/New-job?create=1")
    assert r.status == 400
    assert await edge.events(TOPIC_CHECKS, (CheckUpserted,)) == []


async def test_it_answers_404_to_an_upper_case_action_word_after_a_slug(edge):
    await edge.add_check(slug="db-backup")
    assert (await edge.client.get(f"/ping/{edge.project.ping_key}/db-backup/START")).status == 404


async def test_it_takes_a_trailing_slash_after_the_uuid_as_a_success_ping(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/ping/{check.id}/")
    assert (r.status, await r.text()) == (200, "OK")
    assert r.headers["Ping-Body-Limit"] == "100"
    [event] = await edge.events()
    assert (event.kind, event.exit_status) == ("success", None)


async def test_it_answers_404_to_a_trailing_slash_after_a_slug_or_an_action(edge):
    check = await edge.add_check(slug="db-backup")
    for path in (f"{edge.project.ping_key}/db-backup/", f"{check.id}/start/", f"{check.id}//fail"):
        assert (await edge.client.get(f"/ping/{path}")).status == 404, path
    assert await edge.events() == []


async def test_it_sends_never_cache_headers_on_the_ping_views_errors(edge):
    check = await edge.add_check()
    for path in (f"/ping/{uuid.uuid4()}", f"/ping/{uuid.uuid4()}/fail", f"/ping/{check.id}/256", f"/ping/{check.id}?rid=x"):
        r = await edge.client.get(path)
        assert r.status in (400, 404), path
        assert r.headers["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private", path
        assert r.headers["Expires"] == r.headers["Date"], path
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_it_sends_no_cache_headers_on_the_slug_routes_own_refusals(edge):
    await edge.add_check(slug="dup")
    await edge.add_check(slug="dup")
    for path in ("Upper", "missing", "dup"):
        r = await edge.client.get(f"/ping/{edge.project.ping_key}/{path}")
        assert r.status in (400, 404, 409), path
        assert "Cache-Control" not in r.headers, path


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
