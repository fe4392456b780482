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


# --- the surface Healthchecks' recorded answers pin down (tests/compat) ---

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "X-Api-Key", "Access-Control-Max-Age": "600"}


def _cors(r) -> dict:
    return {k: r.headers.get(k) for k in CORS}


async def test_it_answers_a_preflight_before_looking_at_any_key(edge):
    check = await edge.add_check()
    for path, methods in (("/api/v3/checks/", "GET, OPTIONS, POST"),
                          (f"/api/v1/checks/{check.id}", "DELETE, GET, OPTIONS, POST"),
                          (f"/api/v3/checks/{check.id}/pause", "OPTIONS, POST"),
                          (f"/api/v3/checks/{check.id}/pings/1/body", "GET, OPTIONS"),
                          ("/api/v3/badges/", "GET, OPTIONS")):
        r = await edge.client.options(path)
        assert (r.status, await r.read()) == (204, b""), path
        assert _cors(r) == CORS and r.headers["Access-Control-Allow-Methods"] == methods, path


async def test_it_puts_cors_headers_on_errors_too(edge):
    r = await edge.client.get("/api/v3/checks/")
    assert r.status == 401 and _cors(r) == CORS


async def test_it_answers_a_method_a_route_lacks_with_an_empty_405(edge):
    check = await edge.add_check()
    for method, path in (("PUT", f"/api/v3/checks/{check.id}"), ("DELETE", "/api/v3/checks/"),
                         ("HEAD", "/api/v3/checks/"), ("PUT", "/api/v3/channels/"), ("GET", f"/api/v3/checks/{check.id}/pause")):
        r = await edge.client.request(method, path, headers=_key(edge))
        assert (r.status, await r.read()) == (405, b""), (method, path)
        assert _cors(r) == CORS and "Allow" not in r.headers, (method, path)


async def test_it_answers_another_projects_check_and_an_unknown_unique_key_with_empty_bodies(edge):
    other = await create_project(edge.log, "other", edge.registry)
    theirs = await edge.add_check(project_id=other.id, name="theirs")
    r = await edge.client.get(f"/api/v3/checks/{theirs.id}", headers=_key(edge))
    assert (r.status, await r.read()) == (403, b"")
    r = await edge.client.get("/api/v3/checks/" + "0" * 40, headers=_key(edge))
    assert (r.status, await r.read()) == (404, b"")


async def test_it_redirects_a_path_without_its_trailing_slash(edge):
    r = await edge.client.get("/api/v3/checks?tag=a%20b", headers=_key(edge), allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (301, "/api/v3/checks/?tag=a%20b")


async def test_it_answers_status_to_anyone_and_metrics_to_no_one(edge):
    for method in ("GET", "OPTIONS", "POST"):
        r = await edge.client.request(method, "/api/v1/status/")
        assert (r.status, await r.text(), r.headers["Content-Type"]) == (200, "OK", "text/plain; charset=utf-8")
        assert "Access-Control-Allow-Origin" not in r.headers
    r = await edge.client.get("/api/v3/metrics/", headers={"X-Metrics-Key": "x"})
    assert (r.status, await r.read()) == (403, b"")


async def test_it_shows_filters_and_badge_url_in_documents(edge):
    r = await edge.client.post("/api/v3/checks/", json={"name": "f", "filter_http_body": True, "filter_default_fail": True},
                               headers=_key(edge))
    doc = await r.json()
    assert (doc["filter_http_body"], doc["filter_default_fail"]) == (True, True)
    assert doc["badge_url"].endswith(".svg") and "/b/2/" in doc["badge_url"] and doc["uuid"] not in doc["badge_url"]
    assert (await edge.events(TOPIC_CHECKS, (CheckUpserted,)))[-1].check.filter_http_body is True


async def test_it_links_documents_to_the_api_version_asked(edge):
    check = await edge.add_check(name="v")
    for v in (1, 2, 3):
        doc = await (await edge.client.get(f"/api/v{v}/checks/{check.id}", headers=_key(edge))).json()
        assert doc["update_url"].endswith(f"/api/v{v}/checks/{check.id}") and f"/api/v{v}/" in doc["pause_url"]


async def test_it_refuses_non_boolean_filters(edge):
    for body, field in (({"filter_http_body": "yes"}, "filter_http_body"), ({"filter_default_fail": 1}, "filter_default_fail")):
        r = await edge.client.post("/api/v3/checks/", json=body, headers=_key(edge))
        assert (r.status, await r.json()) == (400, {"error": f"json validation error: {field} is not a boolean"})


async def test_it_stores_the_canonical_name_of_a_legacy_time_zone(edge):
    r = await edge.client.post("/api/v3/checks/", json={"schedule": "0 0 * * *", "tz": "Europe/Kiev"}, headers=_key(edge))
    doc = await r.json()
    assert doc["tz"] == "Europe/Kyiv"
    r = await edge.client.post(f"/api/v3/checks/{doc['uuid']}", json={"tz": "Asia/Calcutta"}, headers=_key(edge))
    assert (await r.json())["tz"] == "Asia/Kolkata"


async def test_it_refuses_channels_it_does_not_have_and_creates_nothing(edge):
    for channels, message in (("my-slack", "invalid channel identifier: my-slack"),
                              ("a,,b", "invalid channel identifier: a"), (",a", "empty channel identifier")):
        r = await edge.client.post("/api/v3/checks/", json={"name": "c", "channels": channels}, headers=_key(edge))
        assert (r.status, await r.json()) == (400, {"error": message}), channels
    assert await edge.events(TOPIC_CHECKS, (CheckUpserted,)) == []
    for channels in ("*", ""):
        r = await edge.client.post("/api/v3/checks/", json={"name": "c", "channels": channels}, headers=_key(edge))
        assert r.status == 201, channels


async def test_it_refuses_an_empty_flips_start(edge):
    check = await edge.add_check()
    r = await edge.client.get(f"/api/v3/checks/{check.id}/flips/?start=", headers=_key(edge))
    assert (r.status, await r.read()) == (400, b"")
    r = await edge.client.get(f"/api/v3/checks/{check.id}/flips/?seconds=", headers=_key(edge))
    assert (r.status, await r.json()) == (200, {"flips": []})


async def test_it_lists_signed_badges_per_tag_and_serves_them(edge):
    await edge.add_check(name="web", tags="prod web")
    r = await edge.client.get("/api/v3/badges/", headers=_key(edge, readonly=True))
    badges = (await r.json())["badges"]
    assert list(badges) == ["prod", "web", "*"]
    assert list(badges["web"]) == ["svg", "svg3", "json", "json3", "shields", "shields3"]
    path = "/" + badges["web"]["json"].split("/", 3)[3]
    r = await edge.client.get(path)
    assert await r.json() == {"status": "up", "total": 1, "grace": 0, "down": 0}
    assert r.headers["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    r = await edge.client.get("/" + badges["*"]["shields3"].split("/", 3)[3])
    assert (await r.json())["message"] == "up"
    forged = path.replace("/web.json", "/prod.json")  # web's signature does not sign prod
    assert (await edge.client.get(forged)).status == 404


async def test_it_serves_a_checks_badge_by_its_badge_url(edge):
    check = await edge.add_check(name="nightly")
    doc = await (await edge.client.get(f"/api/v3/checks/{check.id}", headers=_key(edge))).json()
    path = "/" + doc["badge_url"].split("/", 3)[3]
    r = await edge.client.get(path)
    assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
    assert ">nightly<" in await r.text() and ">up<" in await r.text()
    r = await edge.client.get(path.replace(".svg", ".json").replace("/b/2/", "/b/3/"))
    assert await r.json() == {"status": "up", "total": 1, "grace": 0, "down": 0}
    assert (await edge.client.get(path.replace(".svg", ".png"))).status == 404


async def test_it_answers_plain_text_and_empty_bodies_as_text_plain(edge):
    """Deliberate (README, Differences from Healthchecks): Healthchecks sends text/html."""
    check = await edge.add_check()
    for method, path, status in (("GET", "/api/v3/status/", 200), ("OPTIONS", "/api/v3/checks/", 204),
                                 ("PUT", f"/api/v3/checks/{check.id}", 405), ("POST", f"/api/v3/checks/{check.id}/resume", 409)):
        r = await edge.client.request(method, path, headers=_key(edge))
        assert (r.status, r.headers["Content-Type"]) == (status, "text/plain; charset=utf-8"), path
