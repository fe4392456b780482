"""Idempotency-Key over real HTTP: a retried ping is stored once (one row in ClickHouse, one count),
through the projector on the edge's real SQLite log into real chdb, also across restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingest.app import create_app
from projector import service as projector_service
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import PingEvent
from tests.edge.server import EdgeTestServer, serving


class Projecting:
    """The projector service on the edge's log, as a task; stopped even when the test fails."""

    def __init__(self, edge) -> None:
        self.edge = edge
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(projector_service.run(edge.config, edge.log, edge.ch, self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


@pytest.fixture
async def projecting(projected):
    running = Projecting(projected)
    try:
        yield projected
    finally:
        await running.halt()


async def stored(edge, check_id: str, expected: int, timeout_s: float = 15.0) -> tuple[int, int]:
    """(rows in pings, the check's n_pings) once ``expected`` rows are in, or what is there at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        [(rows,)] = await edge.ch.query("SELECT count() FROM pings FINAL WHERE check_id = {c:UUID}", {"c": check_id})
        state = await edge.ch.query("SELECT n_pings FROM check_state FINAL WHERE check_id = {c:UUID}", {"c": check_id})
        n_pings = state[0][0] if state else 0
        if (rows >= expected and n_pings >= expected) or time.monotonic() > deadline:
            return rows, n_pings
        await asyncio.sleep(0.05)


async def get(client, path: str, key: str | None = None, **kw):
    headers = {"Idempotency-Key": key} if key is not None else {}
    r = await client.get(path, headers=headers, **kw)
    return r.status, await r.text()


async def test_it_stores_a_ping_retried_with_the_same_key_once(projecting):
    edge = projecting
    check = await edge.add_check(slug="backup")
    for path in (f"/ping/{check.id}", f"/ping/{check.id}", f"/ping/{edge.project.ping_key}/backup"):
        assert await get(edge.client, path, "retry-me") == (200, "OK")
    r = await edge.client.post(f"/ping/{check.id}", data=b"body", headers={"Idempotency-Key": "retry-me"})
    assert r.status == 200
    events = await edge.events()
    assert len(events) == 4 and len({e.event_id for e in events}) == 1  # every attempt is in the log, one id
    # A ping without a key afterwards, on the same partition: once it is in, the retries were read.
    assert await get(edge.client, f"/ping/{check.id}") == (200, "OK")
    assert await stored(edge, check.id, 2) == (2, 2)
    r = await edge.client.get(f"/api/v3/checks/{check.id}", headers={"X-Api-Key": edge.project.api_key})
    assert (await r.json())["n_pings"] == 2


async def test_it_stores_pings_with_different_keys_each(projecting):
    edge = projecting
    check = await edge.add_check()
    for key in ("run-1", "run-2"):
        assert await get(edge.client, f"/ping/{check.id}", key) == (200, "OK")
    assert await stored(edge, check.id, 2) == (2, 2)


async def test_the_same_key_on_two_checks_is_two_pings(projecting):
    edge = projecting
    first, second = await edge.add_check(), await edge.add_check()
    for check in (first, second):
        assert await get(edge.client, f"/ping/{check.id}", "nightly") == (200, "OK")
    assert await stored(edge, first.id, 1) == (1, 1)
    assert await stored(edge, second.id, 1) == (1, 1)


async def test_a_retried_checkin_is_stored_once(projecting):
    edge = projecting
    check = await edge.add_check()
    for _ in range(2):
        r = await edge.client.post(f"/api/v1/monitors/{check.id}/checkin?status=fail", headers={"Idempotency-Key": "c1"})
        assert await r.json() == {"recorded": "failure", "monitor": check.id}
    assert await get(edge.client, f"/ping/{check.id}/log") == (200, "OK")
    assert await stored(edge, check.id, 2) == (2, 2)
    kinds = await edge.ch.query("SELECT kind FROM pings FINAL WHERE check_id = {c:UUID} ORDER BY n", {"c": check.id})
    assert [k for (k,) in kinds] == ["fail", "log"]


@pytest.mark.parametrize("value, message", [
    ("k" * 256, "idempotency key too long"),
    ("", "invalid idempotency key"),
    ("tab\tinside", "invalid idempotency key"),
])
async def test_it_refuses_a_bad_key_with_a_short_400(edge, value, message):
    check = await edge.add_check()
    for path in (f"/ping/{check.id}", f"/ping/{check.id}/start", f"/api/v1/monitors/{check.id}/checkin"):
        status, text = await get(edge.client, path, value)
        assert status == 400 and message in text, (path, status, text)
    assert await edge.events() == []  # nothing was logged


@pytest.mark.parametrize("value", [b"a\x01b", b"a\x7fb", b"caf\xc3\xa9", b"\xff"])
async def test_it_refuses_control_characters_and_other_bytes_sent_raw(edge, value):
    # Over a bare socket: HTTP clients refuse to send such a header at all. Some bytes the HTTP
    # parser refuses itself (its own 400); the others get ours.
    check = await edge.add_check()
    async with serving(edge) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        try:
            writer.write(f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\n".encode() + b"Idempotency-Key: " + value
                         + b"\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer
    assert await edge.events() == []


async def test_a_retry_after_a_restart_of_the_edge_and_of_the_projector_is_stored_once(projected, aiohttp_client):
    edge = projected
    check = await edge.add_check()
    running = Projecting(edge)
    try:
        assert await get(edge.client, f"/ping/{check.id}/start", "job-7") == (200, "OK")
        assert await get(edge.client, f"/ping/{check.id}", "job-7-done") == (200, "OK")
        assert await stored(edge, check.id, 2) == (2, 2)
    finally:
        await running.halt()
    # A new edge on the same log file (the registry view is kept: the test is about the pings), and
    # a new projector, whose memory of keys comes back from ClickHouse.
    await edge.client.close()
    await edge.log.close()
    edge.log = SqliteEventLog(edge.config.sqlite_path, default_partitions=2)
    await edge.log.start()
    edge.client = await aiohttp_client(EdgeTestServer(create_app(edge.config, edge.log, edge.registry,
                                                                 clickhouse=edge.ch)))
    running = Projecting(edge)
    try:
        assert await get(edge.client, f"/ping/{check.id}/start", "job-7") == (200, "OK")  # retried late
        assert await get(edge.client, f"/ping/{check.id}", "job-7-done") == (200, "OK")
        assert await get(edge.client, f"/ping/{check.id}/log") == (200, "OK")
        assert await stored(edge, check.id, 3) == (3, 3)
        [(runs,)] = await edge.ch.query("SELECT count() FROM runs FINAL WHERE check_id = {c:UUID}", {"c": check.id})
        assert runs == 1
        started = await edge.ch.query("SELECT started FROM check_state FINAL WHERE check_id = {c:UUID}",
                                      {"c": check.id})
        assert started == [(0,)]  # the retried start did not open the run again
    finally:
        await running.halt()
    events = [e for e in await edge.events() if isinstance(e, PingEvent)]
    assert len(events) == 5 and len({e.event_id for e in events}) == 3

