"""Reference alerting consumers: the tail and the webhook sink, on a real SQLite log and a loopback HTTP server."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

from aiohttp import web
from aiohttp.test_utils import TestServer

from notify.tail import tail
from notify.webhooks import run_webhooks
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import TOPIC_TRANSITIONS, IngestGap, Transition, encode, utcnow, uuid7


def transition(project: str, check: str = "c1", frm: str = "up", to: str = "down") -> Transition:
    return Transition(
        event_id=uuid7(), check_id=check, project_id=project, from_status=frm, to_status=to, at=utcnow(), reason="test"
    )


async def produce(log, event) -> None:
    await log.produce(TOPIC_TRANSITIONS, encode(event), key=getattr(event, "check_id", "").encode() or None)


async def test_tail_prints_new_transitions_and_gaps(tmp_path):
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    await log.start()
    await produce(log, transition("p", frm="new", to="up"))  # history: not shown by default
    out, stop = io.StringIO(), asyncio.Event()
    task = asyncio.create_task(tail(log, stop, out))
    await asyncio.sleep(0.3)
    await produce(log, transition("p"))
    now = utcnow()
    await produce(log, IngestGap(event_id=uuid7(), start=now - timedelta(seconds=20), end=now, partition=0))
    await asyncio.sleep(0.5)
    stop.set()
    await task
    await log.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "up → down" in lines[0] and "c1" in lines[0]
    assert "INGEST GAP on partition 0" in lines[1] and "20.0s" in lines[1]


async def test_a_failing_webhook_does_not_block_other_projects(tmp_path):
    received: dict[str, list] = {"a": [], "b": []}
    failures = {"a": 3}

    async def hook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            return web.Response(status=503)
        received[name].append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    urls = {"pa": str(server.make_url("/hook/a")), "pb": str(server.make_url("/hook/b"))}
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    await log.start()
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhooks(log, urls.get, stop, first_backoff_s=0.2, max_backoff_s=0.4))
    await produce(log, transition("pa", check="ca"))
    await produce(log, transition("pb", check="cb"))
    await asyncio.sleep(0.5)
    assert [t["check_id"] for t in received["b"]] == ["cb"] and received["a"] == []  # b delivered while a retries
    for _ in range(40):
        if received["a"]:
            break
        await asyncio.sleep(0.1)
    assert [t["check_id"] for t in received["a"]] == ["ca"]
    await asyncio.sleep(0.3)  # let the commit point move past both
    stop.set()
    await task
    # at least once and not more than needed: a new sink in the same group sees nothing old
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(run_webhooks(log, urls.get, stop2))
    await asyncio.sleep(0.5)
    stop2.set()
    await task2
    assert len(received["a"]) == 1 and len(received["b"]) == 1
    await log.close()
    await server.close()
