"""The status board's HTTP side over a real edge and chdb: the page and its files, the 404 of an
unknown check's page, and the read-only ping log (the page itself is tested in a browser:
tests/e2e/test_board_browser.py)."""

from __future__ import annotations

import uuid

from checks.spec import unique_key
from projector.replay import batch_token
from runtime.consumer import ranges_of
from projector.service import Projector
from runtime.registry import create_project
from schemas.events import TOPIC_PINGS, PingEvent, encode, utcnow, uuid7


async def project_pings(edge, check, kinds) -> None:
    """Ping events through the real projector into ClickHouse."""
    for kind in kinds:
        event = PingEvent(event_id=uuid7(), check_id=check.id, project_id=check.project_id, kind=kind,
                          received_at=utcnow(), remote_addr="203.0.113.9", user_agent="curl/8", body=b"secret",
                          body_size=6)
        await edge.log.produce(TOPIC_PINGS, encode(event), key=check.id.encode())
    consumer = edge.log.consumer([TOPIC_PINGS], group=None)
    await consumer.start()
    records = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    await Projector(edge.ch, edge.log).process(records, batch_token(ranges_of(records)))


async def test_it_serves_the_page_with_a_strict_policy(projected):
    r = await projected.client.get("/board/")
    assert r.status == 200 and r.content_type == "text/html"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert '<script src="/board/static/board.js"' in await r.text()
    for name, kind in (("board.js", "text/javascript"), ("board.css", "text/css")):
        r = await projected.client.get(f"/board/static/{name}")
        assert r.status == 200 and r.content_type == kind
    assert (await projected.client.get("/board/static/../board.py")).status == 404
    assert (await projected.client.get("/board/static/nothing.js")).status == 404
    r = await projected.client.get("/board", allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == "/board/"


async def test_a_checks_page_is_404_for_an_unknown_check(projected):
    check = await projected.add_check(name="nightly")
    assert (await projected.client.get(f"/board/checks/{check.id}")).status == 200
    assert (await projected.client.get(f"/board/checks/{unique_key(check.id)}")).status == 200
    for code in (str(uuid.uuid4()), "f" * 40, "not-a-check"):
        r = await projected.client.get(f"/board/checks/{code}")
        assert r.status == 404 and r.content_type == "text/html"  # the page, in its not-found state


async def test_the_ping_log_opens_to_a_read_only_key_without_bodies_or_addresses(projected):
    check = await projected.add_check(name="nightly")
    await project_pings(projected, check, ["start", "success"])
    headers = {"X-Api-Key": projected.project.api_key_readonly}
    for code in (check.id, unique_key(check.id)):
        r = await projected.client.get(f"/api/v3/checks/{code}/ping-log", headers=headers)
        assert r.status == 200, await r.text()
        pings = (await r.json())["pings"]
        assert [(p["n"], p["type"], p["body_size"]) for p in pings] == [(2, "success", 6), (1, "start", 6)]
        assert "duration" in pings[0] and not {"remote_addr", "ua", "body_url"} & set(pings[0])
    r = await projected.client.get(f"/api/v3/checks/{check.id}/ping-log?limit=1", headers=headers)
    assert len((await r.json())["pings"]) == 1


async def test_the_ping_log_refuses_bad_keys_other_projects_and_bad_limits(projected):
    check = await projected.add_check(name="nightly")
    other = await create_project(projected.log, "other", projected.registry)
    theirs = await projected.add_check(project_id=other.id, name="theirs")
    headers = {"X-Api-Key": projected.project.api_key_readonly}
    assert (await projected.client.get(f"/api/v3/checks/{check.id}/ping-log")).status == 401
    assert (await projected.client.get(f"/api/v3/checks/{theirs.id}/ping-log", headers=headers)).status == 403
    assert (await projected.client.get(f"/api/v3/checks/{uuid.uuid4()}/ping-log", headers=headers)).status == 404
    r = await projected.client.get(f"/api/v3/checks/{check.id}/ping-log?limit=0", headers=headers)
    assert r.status == 400 and "limit" in (await r.json())["error"]
