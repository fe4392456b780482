"""The fast ping path (ingest/fastpath.py) over real sockets: its answers are the aiohttp path's,
byte for byte but the date; pipelined pings are answered in order; a request that is not a
plain ping is handed to aiohttp at its first byte, wherever it falls in the stream; shutdown
lets pings in flight finish."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading

import pytest
from aiohttp import web

from ingest import fastpath
from ingest.app import create_app
from ingest.service import serve
from schemas.events import PingEvent

_DATE = re.compile(rb"(Date|Expires): [^\r]+\r\n")


@pytest.fixture
async def served(edge):
    app = create_app(edge.config, edge.log, edge.registry, clickhouse=None)
    runner, site = await serve(app, edge.config, "127.0.0.1", 0)
    try:
        yield edge, site
    finally:
        await runner.cleanup()


@pytest.fixture
async def aiohttp_only(edge):
    """The same app behind aiohttp's own site, to compare answers with."""
    runner = web.AppRunner(create_app(edge.config, edge.log, edge.registry, clickhouse=None), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()


async def _read_answers(reader: asyncio.StreamReader, heads: list[bool]) -> list[tuple[int, bytes, bytes]]:
    """Read one answer per request (True: it was a HEAD): (status, raw head, body)."""
    out = []
    for is_head in heads:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        body = b"" if is_head else await reader.readexactly(length)
        out.append((int(head.split(b" ", 2)[1]), head, body))
    return out


async def _talk(port: int, raw: bytes, heads: list[bool]) -> tuple[list, bool]:
    """Send raw bytes at once, read the answers; also whether the server closed the connection after."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        answers = await _read_answers(reader, heads)
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return answers, closed
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("method,extra", [("GET", ""), ("HEAD", ""), ("POST", "Content-Length: 5\r\n"),
                                          ("GET", "Connection: close\r\n")])
async def test_answers_are_the_aiohttp_paths_byte_for_byte(served, aiohttp_only, method, extra):
    edge, site = served
    check = await edge.add_check()
    raw = _get(f"/ping/{check.id}", extra, method) + (b"hello" if "Content-Length" in extra else b"")
    (fast,), fast_closed = await _talk(site.port, raw, [method == "HEAD"])
    (slow,), slow_closed = await _talk(aiohttp_only, raw, [method == "HEAD"])
    assert fast[0] == 200 and fast[2] == (b"" if method == "HEAD" else b"OK")
    assert _DATE.sub(b"", fast[1]) == _DATE.sub(b"", slow[1])
    assert fast[2] == slow[2]
    assert fast_closed == slow_closed == ("close" in extra)
    assert (site.fast.answered, site.fast.handed_off) == (1, 0)
    events = await edge.events()
    assert len(events) == 2
    assert {(e.method, e.user_agent, e.body, e.body_size) for e in events} == {
        (method, "test-agent", b"hello" if method == "POST" else b"", 5 if method == "POST" else 0)
    }


async def test_pipelined_pings_and_api_calls_are_answered_in_order(served):
    edge, site = served
    a, b = await edge.add_check(), await edge.add_check()
    unknown = "00000000-0000-4000-8000-000000000000"
    requests = [
        (_get(f"/ping/{a.id}"), 200, b"OK"),
        (_get(f"/ping/{b.id}/fail"), 200, b"OK"),
        (_get("/healthz"), 200, b"OK"),  # not a ping: aiohttp takes the rest of the connection here
        (_get(f"/ping/{a.id}/start"), 200, b"OK"),
        (_get(f"/ping/{unknown}"), 404, b"not found"),
        (_get(f"/ping/{b.id}/0"), 200, b"OK"),
    ]
    answers, closed = await _talk(site.port, b"".join(r for r, *_ in requests), [False] * len(requests))
    assert [(s, body) for s, _, body in answers] == [(s, body) for _, s, body in requests]
    assert not closed
    assert (site.fast.answered, site.fast.handed_off) == (2, 1)
    kinds = sorted((e.check_id, e.kind) for e in await edge.events())
    assert kinds == sorted([(a.id, "success"), (b.id, "fail"), (a.id, "start"), (b.id, "success")])


@pytest.mark.parametrize("first", ["/healthz", "/ping/not-a-key/no-such-slug"])
async def test_a_connection_that_starts_with_another_request_is_aiohttps_from_the_start(served, first):
    edge, site = served
    check = await edge.add_check()
    raw = _get(first) + _get(f"/ping/{check.id}") + _get(f"/ping/{check.id}", "Connection: close\r\n")
    answers, closed = await _talk(site.port, raw, [False] * 3)
    assert [s for s, *_ in answers] == [200 if first == "/healthz" else 404, 200, 200]
    assert closed
    assert (site.fast.answered, site.fast.handed_off) == (0, 1)
    assert len(await edge.events()) == 2


async def test_requests_split_anywhere_across_reads_are_handed_over_whole(served):
    """A ping, then an API call, sent a few bytes at a time: the handoff starts at the API call's
    first byte whichever read it falls in."""
    edge, site = served
    check = await edge.add_check()
    raw = _get(f"/ping/{check.id}") + _get("/api/v3/checks/", "X-Api-Key: nope\r\n") + _get(f"/ping/{check.id}")
    for step in (1, 7, 50):
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        try:
            for i in range(0, len(raw), step):
                writer.write(raw[i : i + step])
                await writer.drain()
                await asyncio.sleep(0)
            answers = await _read_answers(reader, [False] * 3)
        finally:
            writer.close()
        assert [s for s, *_ in answers] == [200, 401, 200], step
    assert (site.fast.answered, site.fast.handed_off) == (3, 3)


async def test_a_long_pipelined_stream_then_an_api_call(served):
    """More pipelined pings than the bytes kept for a handoff (and than the unanswered-ping cap),
    then a request for aiohttp: every one answered, in order."""
    edge, site = served
    check = await edge.add_check()
    ping = _get(f"/ping/{check.id}")
    n = fastpath._MAX_WINDOW // len(ping) + 3 * fastpath._MAX_QUEUED
    raw = ping * n + _get("/healthz") + ping
    answers, _ = await _talk(site.port, raw, [False] * (n + 2))
    assert [s for s, *_ in answers] == [200] * (n + 2)
    assert (site.fast.answered, site.fast.handed_off) == (n, 1)
    assert len(await edge.events()) == n + 1


async def test_malformed_requests_get_aiohttps_400_after_the_pings_before_them(served):
    edge, site = served
    check = await edge.add_check()
    raw = _get(f"/ping/{check.id}") + b"GET /ping/x HTTP/1.1\r\nBad Header\r\n\r\n"
    answers, closed = await _talk(site.port, raw, [False, False])
    assert [s for s, *_ in answers] == [200, 400]
    assert closed
    assert (site.fast.answered, site.fast.handed_off) == (1, 1)


async def test_shutdown_lets_pings_in_flight_finish(edge):
    """A ping waiting for its commit when the edge is told to stop still gets its 200, and the
    connection is then closed."""
    app = create_app(edge.config, edge.log, edge.registry, clickhouse=None)
    runner, site = await serve(app, edge.config, "127.0.0.1", 0)
    check = await edge.add_check()
    hold, held = threading.Event(), threading.Event()

    def block() -> None:
        held.set()
        hold.wait(10)

    loop = asyncio.get_running_loop()
    blocker = loop.run_in_executor(edge.log._writer, block)  # the writer thread is busy
    await loop.run_in_executor(None, held.wait, 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    try:
        writer.write(_get(f"/ping/{check.id}"))
        await writer.drain()
        await asyncio.sleep(0.2)
        cleanup = asyncio.ensure_future(runner.cleanup())
        await asyncio.sleep(0.2)
        assert not cleanup.done()  # waiting for the ping in flight
        hold.set()
        [(status, _, body)] = await _read_answers(reader, [False])
        assert (status, body) == (200, b"OK")
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        await asyncio.wait_for(cleanup, 10)
    finally:
        hold.set()
        await blocker
        writer.close()
    assert [e.check_id for e in await edge.events() if isinstance(e, PingEvent)] == [check.id]


async def test_idle_connection_is_closed_after_the_idle_timeout(edge):
    import dataclasses

    config = dataclasses.replace(edge.config, idle_timeout_s=0.5)
    runner, site = await serve(create_app(config, edge.log, edge.registry, None), config, "127.0.0.1", 0)
    check = await edge.add_check()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(_get(f"/ping/{check.id}"))
        [(status, _, _)] = await _read_answers(reader, [False])
        assert status == 200
        started = loop_time = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        loop_time = asyncio.get_running_loop().time()
        assert 0.3 < loop_time - started < 2.5
        writer.close()
    finally:
        await runner.cleanup()
