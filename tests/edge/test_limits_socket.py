"""Limits over a real socket: a 100 MB body is cut at the limit without being read, a trickling body
or request head is timed out, a silent connection is closed, and the edge keeps serving."""

from __future__ import annotations

import asyncio
import time

import dataclasses

import aiohttp
import pytest

from ingest import pings
from tests.edge.server import serving

IDLE_TIMEOUT_S = 1.0


@pytest.fixture
async def served(edge):
    """The edge fixture's app on a real loopback port (raw sockets need one), with the edge's own
    runner settings and a short idle timeout."""
    async with serving(edge, dataclasses.replace(edge.config, idle_timeout_s=IDLE_TIMEOUT_S)) as site:
        yield edge, site.port


async def _status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1])


async def test_a_100_mb_body_is_cut_without_being_read(served):
    edge, port = served
    check = await edge.add_check()
    total = 100 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n".encode())
    chunk = b"\xff" + b"y" * (1024 * 1024 - 1)
    sent = 0
    answer = asyncio.ensure_future(_status(reader))
    try:
        while sent < total and not answer.done():
            writer.write(chunk)
            sent += len(chunk)
            await asyncio.wait([answer], timeout=0.01)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except (asyncio.TimeoutError, ConnectionError):
                break  # the edge stopped reading, as it should
        status = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    print(f"100 MB body: answered {status} after {sent / 2**20:.0f} MiB were sent")
    assert status == 200
    assert sent < 30 * 1024 * 1024, f"the edge read {sent} bytes before answering"
    [event] = await edge.events()
    assert event.body == (b"\xff" + b"y" * 99) and event.body_size == total
    async with aiohttp.ClientSession() as session:  # still serving
        async with session.get(f"http://127.0.0.1:{port}/ping/{check.id}") as r:
            assert r.status == 200


async def test_a_trickling_body_is_timed_out(served, monkeypatch):
    edge, port = served
    monkeypatch.setattr(pings, "BODY_TIMEOUT_S", 1.0)
    check = await edge.add_check()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
    started = time.monotonic()
    answer = asyncio.ensure_future(_status(reader))
    try:
        while not answer.done() and time.monotonic() - started < 10:
            writer.write(b"x")  # one byte every 0.2 s: slowloris
            await asyncio.wait([answer], timeout=0.2)
        status = await asyncio.wait_for(answer, 5)
    finally:
        writer.close()
    assert status == 408
    assert time.monotonic() - started < 5
    assert await edge.events() == []  # nothing recorded for a request that never finished


async def _closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit_s)
    return time.monotonic() - started, data


async def test_a_trickling_request_head_is_cut_off(served):
    edge, port = served
    check = await edge.add_check()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() + b"z" * 1000

    async def trickle():
        for i in range(len(head)):
            writer.write(head[i : i + 1])  # one byte every 0.1 s, the head never completes
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        elapsed, data = await _closed_after(reader, 10)
    finally:
        trickling.cancel()
        writer.close()
    print(f"trickled head: connection closed after {elapsed:.1f} s")
    assert data == b"" and elapsed < IDLE_TIMEOUT_S + 2
    assert await edge.events() == []
    async with aiohttp.ClientSession() as session:  # still serving
        async with session.get(f"http://127.0.0.1:{port}/ping/{check.id}") as r:
            assert r.status == 200


async def test_silent_connections_are_closed(served):
    """Connections that send nothing (or nothing after a response) do not pile up."""
    _edge, port = served
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
    kept_alive = conns[0]
    kept_alive[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _status(kept_alive[0]) == 200
    try:
        results = await asyncio.gather(*(_closed_after(r, 10) for r, _ in conns[1:]))
        after_answer, _rest_of_answer = await _closed_after(kept_alive[0], 10)  # read() returns at EOF
    finally:
        for _, w in conns:
            w.close()
    assert all(data == b"" and elapsed < IDLE_TIMEOUT_S + 2 for elapsed, data in results)
    assert after_answer < IDLE_TIMEOUT_S + 2


async def test_over_long_url_and_headers_are_refused(served):
    edge, port = served
    for request in (
        f"GET /ping/{'x' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {'y' * 20_000}\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request.encode())
        try:
            status = await asyncio.wait_for(_status(reader), 5)
        finally:
            writer.close()
        assert 400 <= status < 500
