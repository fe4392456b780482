"""Issue 18's points 2, 3 and 6 over real loopback sockets, against the edge as served in production.

- Bodies: the key is looked at before any body is read; every body read has the ping path's time
  limit (408) and the size limit (413); one client address holds a bounded number of connections.
- Malformed requests: a fixed short answer, at most one short log line (throttled, never a
  traceback), counted in ``/metrics``; an unexpected exception stays loud.
- What an attacker learns: 400 answers never echo the request nor name Python modules; the
  ``Server`` header names no versions, on every kind of answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ingest import pings
from ingest.app import create_app
from ingest.service import serve
from tests.edge.server import serving

MAX_PER_CLIENT = 6


@pytest.fixture
async def served(edge, monkeypatch):
    """The edge on a real port, with a 1 s body time limit and a small per-address connection bound."""
    monkeypatch.setattr(pings, "BODY_TIMEOUT_S", 1.0)
    config = dataclasses.replace(edge.config, max_connections_per_client=MAX_PER_CLIENT)
    async with serving(edge, config) as site:
        yield edge, site.port


@contextlib.asynccontextmanager
async def _connection(port: int, host: str = "127.0.0.1"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _answer(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> tuple[int, dict, bytes]:
    """One answer: (status, headers with lower-case names, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout_s)
    return status, headers, body


async def _exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    async with _connection(port, host) as (reader, writer):
        writer.write(raw)
        return await _answer(reader)


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _metrics(port: int) -> dict:
    _, _, body = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return _samples(body.decode())


def _bad_requests(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "pingstream_http_bad_requests_total")


# --- point 2: the key before the body, every body read bounded, connections per address bounded ---


@pytest.mark.parametrize("auth", ["X-Api-Key: " + "w" * 32, "X-Api-Key: short", "Authorization: Bearer " + "w" * 32])
async def test_it_refuses_a_wrong_key_before_reading_the_body(served, auth):
    edge, port = served
    path = "/api/v1/monitors" if auth.startswith("Authorization") else "/api/v3/checks/"
    async with _connection(port) as (reader, writer):
        # 100,000 bytes announced, one sent: a wrong key is answered at once, not after the body.
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100000\r\n\r\n{{".encode())
        started = time.monotonic()
        status, _, body = await _answer(reader, timeout_s=0.9)  # under the 1 s body time limit
    assert status == 401 and time.monotonic() - started < 0.9
    assert len(body) < 100


@pytest.mark.parametrize("path,auth", [
    ("/api/v3/checks/", "X-Api-Key: {key}\r\n"),
    ("/api/v1/monitors", "Authorization: Bearer {key}\r\n"),
    ("/api/v3/checks/", ""),  # no key header: upstream takes api_key from the body, which is read, bounded
])
async def test_it_times_out_a_trickling_api_body_with_408(served, path, auth):
    edge, port = served
    async with _connection(port) as (reader, writer):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth.format(key=edge.project.api_key)}Content-Length: 1000\r\n\r\n"
        writer.write(head.encode())
        started = time.monotonic()
        answer = asyncio.ensure_future(_answer(reader, timeout_s=10))
        while not answer.done() and time.monotonic() - started < 5:
            writer.write(b" ")  # a byte every 0.1 s: each read makes progress, the body never ends
            await asyncio.wait([answer], timeout=0.1)
        status, headers, body = await asyncio.wait_for(answer, 5)
    assert status == 408 and time.monotonic() - started < 3
    assert len(body) < 100
    assert len(edge.registry.project_checks(edge.project.id)) == 0


@pytest.mark.parametrize("path,auth", [("/api/v3/checks/", "X-Api-Key"), ("/api/v1/monitors", "Authorization")])
async def test_it_refuses_an_announced_body_over_the_size_limit_without_reading_it(served, path, auth):
    edge, port = served
    key = edge.project.api_key if auth == "X-Api-Key" else f"Bearer {edge.project.api_key}"
    async with _connection(port) as (reader, writer):
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}: {key}\r\nContent-Length: 50000000\r\n\r\n".encode())
        status, _, body = await _answer(reader, timeout_s=0.9)  # nothing of the body was sent
    assert status == 413 and len(body) < 100


async def test_it_bounds_the_connections_one_client_address_holds(served):
    edge, port = served
    check = await edge.add_check(name="held")
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(_connection(port, "127.0.0.2")) for _ in range(MAX_PER_CLIENT)]
        # half of them handed to aiohttp (an API request with a body still to come), half idle
        for _, writer in held[: MAX_PER_CLIENT // 2]:
            writer.write(f"POST /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {edge.project.api_key}\r\n"
                         "Content-Length: 10\r\n\r\n".encode())
        await asyncio.sleep(0.2)
        async with _connection(port, "127.0.0.2") as (reader, writer):
            status, headers, body = await _answer(reader)  # refused at once, before any request is sent
            assert (status, body) == (429, b"too many connections")
            assert headers["retry-after"] and headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 2) == b""
        # another address is not affected
        status, _, body = await _exchange(port, f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "127.0.0.3")
        assert (status, body) == (200, b"OK")
        # the slots come back as connections close, handed-off ones too
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.3)
    async with contextlib.AsyncExitStack() as stack:
        again = [await stack.enter_async_context(_connection(port, "127.0.0.2")) for _ in range(MAX_PER_CLIENT)]
        for reader, writer in again:
            writer.write(f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await _answer(reader))[0] == 200
    refused = (await _metrics(port)).get(("pingstream_http_connections_refused_total", ()), 0)
    assert refused == 1


# --- point 3: malformed requests: one short line at most, counted, never a traceback ---

MALFORMED = {
    "gzip body that is not gzip": b"POST /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n"
                                  b"Content-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
    "gzip body not read": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
    "brotli body": b"POST /ping/{check} HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 9\r\n\r\nnot brot!",
    "control byte in query": b"GET /ping/{check}?rid=\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "control byte in API query": b"GET /api/v3/checks/?tag=\x7f HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n",
    "negative content length": b"POST /ping/{check} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "non-ASCII path": b"GET /ping/\xff\xfe\xc3 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ASCII API path": b"GET /api/v3/checks/\xe9\x80 HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n",
    "bad request line": b"GET /ping/{check} HTTP/9.9 extra\r\nHost: x\r\n\r\n",
    "bad method": b"G@T /ping/{check} HTTP/1.1\r\nHost: x\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 SECRET-REQUEST-LINE\r\n\r\n",
    "bad chunk size": b"POST /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "two content lengths": b"POST /ping/{check} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "header without colon": b"GET /ping/{check} HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
}

# Answered before their body was looked at; the body fails as aiohttp drains it afterwards.
ANSWERED_FIRST = {"gzip body not read"}


def _fill(raw: bytes, edge, check) -> bytes:
    return raw.replace(b"{key}", edge.project.api_key.encode()).replace(b"{check}", check.id.encode())


async def test_malformed_requests_get_a_short_answer_one_log_line_at_most_and_a_count(served, caplog):
    edge, port = served
    check = await edge.add_check(name="m")
    caplog.set_level(logging.DEBUG)
    before = _bad_requests(await _metrics(port))
    caplog.clear()
    statuses = {}
    for name, raw in MALFORMED.items():
        for _ in range(20):  # the same bad request again and again: the log says it once
            try:
                status, _, body = await _exchange(port, _fill(raw, edge, check))
            except (ConnectionError, asyncio.IncompleteReadError):
                pytest.fail(f"{name}: the connection was dropped without an answer")
            assert 400 <= status < 500 or name in ANSWERED_FIRST, (name, status, body)
            assert len(body) < 100 and b"Traceback" not in body, (name, body)
        statuses[name] = status
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    print("\nmalformed requests:", statuses, "\nlog:", [r.getMessage() for r in records])
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info][:3]
    assert "Traceback" not in caplog.text
    assert len(records) <= len(MALFORMED), [r.getMessage() for r in records]
    assert all(len(r.getMessage()) < 200 for r in records)
    counted = _bad_requests(await _metrics(port)) - before
    assert counted >= 20 * len(MALFORMED) - 20  # every one counted (the plain 404 of a control byte aside)
    # and the edge still serves
    status, _, body = await _exchange(port, f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (status, body) == (200, b"OK")


async def test_a_client_leaving_mid_body_is_no_error(served, caplog):
    edge, port = served
    fives = lambda m: sum(v for (n, labels), v in m.items() if n == "pingstream_http_responses_total"  # noqa: E731
                          and dict(labels)["code"].startswith("5"))
    before = fives(await _metrics(port))
    for path, auth in (("/api/v3/checks/", f"X-Api-Key: {edge.project.api_key}"), ("/api/v3/checks/", ""),
                       ("/api/v1/monitors", f"Authorization: Bearer {edge.project.api_key}")):
        async with _connection(port) as (reader, writer):
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100\r\n\r\n{{".encode())
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert fives(await _metrics(port)) == before


async def test_an_unexpected_exception_stays_loud(edge, caplog):
    app = create_app(edge.config, edge.log, edge.registry, clickhouse=None)

    async def broken(request):
        raise RuntimeError("a bug of ours")

    app.router.add_get("/broken", broken)
    runner, site = await serve(app, edge.config, "127.0.0.1", 0)
    try:
        status, headers, body = await _exchange(site.port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert status == 500 and b"a bug of ours" not in body and headers["server"] == "pingstream"
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.levelno == logging.ERROR and isinstance(record.exc_info[1], RuntimeError)


# --- point 6: fixed short texts, a Server header without versions ---


async def test_bad_request_answers_are_fixed_texts_that_echo_nothing(served):
    edge, port = served
    check = await edge.add_check(name="t")
    for name, raw in MALFORMED.items():
        raw = _fill(raw, edge, check)
        status, headers, body = await _exchange(port, raw)
        request_line = raw.split(b"\r\n", 1)[0]
        assert request_line not in body and b"SECRET" not in body, (name, body)
        assert not any(word in body.lower() for word in (b"module", b"install", b"brotli", b"python", b"aiohttp",
                                                          b"b'", b"http/")), (name, body)
        assert body in (b"OK" if name in ANSWERED_FIRST else b"bad request", b"could not read request body", b"not found",
                        b"invalid uuid format", b"request header fields too large"), (name, body)
        assert headers["server"] == "pingstream", (name, headers)


async def test_every_answer_carries_a_server_header_without_versions(served):
    edge, port = served
    check = await edge.add_check(name="s")
    key = edge.project.api_key
    requests = {
        "fast ping": f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\n\r\n",
        "fast ping 408": f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
        "ping via aiohttp": f"GET /ping/{check.id}?create=0 HTTP/1.1\r\nHost: x\r\n\r\n",
        "API": f"GET /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n",
        "API 401": "GET /api/v3/checks/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "API 408": f"POST /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Length: 5\r\n\r\n{{",
        "404": "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        "405": "PATCH /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
        "metrics": "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "parser 400": "GET /ping/x HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n",
        "431": "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + "y" * 20_000 + "\r\n\r\n",
    }
    for name, raw in requests.items():
        status, headers, _ = await _exchange(port, raw.encode())
        assert headers.get("server") == "pingstream", (name, status, headers.get("server"))


async def test_a_service_metrics_port_says_server_pingstream_too():
    from runtime import metrics
    from runtime.kafkabroker import free_port

    port, stop = free_port(), asyncio.Event()
    serving_metrics = asyncio.create_task(metrics.serve("127.0.0.1", port, stop))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                status, headers, _ = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                break
            await asyncio.sleep(0.05)
        assert status == 200 and headers["server"] == "pingstream"
    finally:
        stop.set()
        await serving_metrics
