"""The fast ping path (ingest/fastpath/) over real sockets: its answers are the aiohttp path's,
byte for byte but the date; pipelined pings are answered in order; a request that is not a
plain ping is handed to aiohttp at its first byte, wherever it falls in the stream; shutdown
lets pings in flight finish."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import re
import threading
import uuid

import pytest

from ingest.app import create_app
from ingest.fastpath import wire
from ingest.service import serve
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import CheckConfig, PingEvent
from tests.edge.server import serving

_DATE = re.compile(rb"(Date|Expires): [^\r]+\r\n")


@pytest.fixture
async def served(edge):
    async with serving(edge) as site:
        yield edge, site


@pytest.fixture
async def aiohttp_only(edge):
    """The same app behind aiohttp's own site, to compare answers with."""
    async with serving(edge, fast=False) as site:
        yield site.port


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


@contextlib.asynccontextmanager
async def _writer_held(log: SqliteEventLog):
    """The log's writer thread kept busy until the block ends or the yielded event is set: pings
    wait for their commit meanwhile."""
    hold, held = threading.Event(), threading.Event()

    def block() -> None:
        held.set()
        hold.wait(10)

    loop = asyncio.get_running_loop()
    blocker = loop.run_in_executor(log._writer, block)
    await loop.run_in_executor(None, held.wait, 5)
    try:
        yield hold
    finally:
        hold.set()
        await blocker


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
    n = wire.MAX_WINDOW // len(ping) + 3 * wire.MAX_QUEUED
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
    async with _writer_held(edge.log) as hold:
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
            writer.close()
    assert [e.check_id for e in await edge.events() if isinstance(e, PingEvent)] == [check.id]


async def test_idle_connection_is_closed_after_the_idle_timeout(edge):
    config = dataclasses.replace(edge.config, idle_timeout_s=0.5)
    check = await edge.add_check()
    async with serving(edge, config) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(_get(f"/ping/{check.id}"))
        [(status, _, _)] = await _read_answers(reader, [False])
        assert status == 200
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        assert 0.3 < asyncio.get_running_loop().time() - started < 2.5
        writer.close()


# --- differential fuzzing: the fast path against aiohttp alone ---------------------------------------

FUZZ_CONNECTIONS = int(os.environ.get("PINGSTREAM_FASTPATH_FUZZ", "3000"))
FUZZ_SEED = int(os.environ.get("PINGSTREAM_FUZZ_SEED", str(random.randrange(1 << 30))))


class _PingGrammar:
    """Requests around the ping routes, valid and broken, for both servers to answer alike."""

    def __init__(self, rng: random.Random, checks: dict[str, CheckConfig], ping_key: str, limit: int) -> None:
        self.r = rng
        self.checks = checks
        self.ping_key = ping_key
        self.limit = limit

    def pick(self, *options):
        return self.r.choice(options)

    def path(self) -> str:
        check = self.r.choice(list(self.checks.values()))
        if self.r.random() < 0.6:  # a valid ping URL
            return self.pick(f"/ping/{check.id}", f"/ping/{self.ping_key}/job") + self.pick(
                "", "", "/start", "/fail", "/log", "/0", "/1", "/255") + self.pick("", "", f"?rid={uuid.uuid4()}")
        suffix = self.pick("", "", "", "/start", "/fail", "/log", "/0", "/1", "/255", "/256", "/-1", "/abc",
                           "/%73tart", "/", "/start/x", "/1e3", "/START", "/Fail", "/007")
        base = self.pick(
            f"/ping/{check.id}", f"/ping/{check.id}", f"/ping/{check.id.upper()}",
            f"/ping/{self.ping_key}/{check.slug or 'none'}", f"/ping/{self.ping_key}/dup",
            f"/ping/{self.ping_key}/missing", f"/ping/nokey/{check.slug or 'x'}", f"/ping//{check.id}",
            f"/ping/{self.ping_key}/Job", "/ping/nokey/UPPER",
            f"/ping/{check.id[:-1]}", f"/ping/./{check.id}", "/ping/", "/healthz", "/api/v3/checks/",
        )
        query = self.pick("", "", "", f"?rid={uuid.uuid4()}", f"?rid={str(uuid.uuid4()).upper()}", "?rid=bad",
                          "?rid=", "?x=1", f"?rid={uuid.uuid4()}&rid=bad", "?create=0", "?rid=%41")
        return base + suffix + query

    def request(self, first: bool, last: bool) -> bytes:
        # A request llhttp refuses (unknown method, broken header) only opens a connection: when one
        # follows others in the same read, aiohttp answers the whole read with one 400, dropping the
        # valid requests before it, while the fast path answers those and then hands the broken one to
        # aiohttp (test_malformed_requests_get_aiohttps_400_after_the_pings_before_them).
        method = self.pick("GET", "GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                           "FOO" if first else "PATCH")
        # HTTP/1.0 closes after the answer: only as the last request (aiohttp fails the whole read
        # with "Data after Connection: close", earlier valid requests in it too; the fast path answers those).
        version = self.pick("1.1", "1.1", "1.1", "1.1", "1.0") if last else "1.1"
        headers = [b"Host: x"]
        if self.r.random() < 0.3:
            headers.append(self.pick(b"User-Agent: curl/8", b"User-Agent: \xff\xfe", b"User-Agent: caf\xc3\xa9",
                                     b"User-Agent: " + "\u00e9".encode() * 150 + b"x" * 100))
        if self.r.random() < 0.2:
            headers.append(self.pick(b"X-Forwarded-For: 10.1.2.3, 10.0.0.1", b"X-Forwarded-For: 10.1.2.3:999",
                                     b"X-Forwarded-Proto: https"))
        if self.r.random() < 0.05:
            headers.append(self.pick(b"Expect: 100-continue", b"Content-Encoding: gzip", b"Upgrade: h2c"))
        if first and self.r.random() < 0.05:
            headers.append(self.pick(b"Transfer-Encoding: gzip", b"Bad Header", b"Content-Length: -1"))
        body = b""
        if method in ("POST", "PUT") or self.r.random() < 0.1:
            # Over the limit only last: whether such a body was all read when the limit was passed
            # (then the connection stays open) depends, on both paths, on how the reads fell.
            body = self.pick(b"", b"hello", b"all good", b"ERROR in job", b"starting", b"\xff\x00" * 10,
                             b"x" * (self.limit - 1), *((b"y" * (self.limit + 1), b"z" * (self.limit * 3)) * last))
        chunked = body and self.r.random() < 0.3
        if chunked:
            headers.append(b"Transfer-Encoding: chunked")
            cut = self.r.randrange(len(body) + 1)
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:cut], body[cut:]) if p) + b"0\r\n\r\n"
        elif body or method == "POST":
            headers.append(b"Content-Length: %d" % len(body))
        if last:
            headers.append(b"Connection: close")
        head = f"{method} {self.path()} HTTP/{version}".encode()
        return head + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


async def _answers_until_close(port: int, raw: bytes, splits: list[int]) -> list[tuple[int, bytes]]:
    """Send ``raw`` in pieces cut at ``splits``; every answer (status, body) until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for a, b in zip([0, *splits], [*splits, len(raw)]):
            writer.write(raw[a:b])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0)
        data = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(65536), 3):
                data += chunk
    finally:
        writer.close()
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"(?i)content-length: (\d+)", head)
        length = int(match.group(1)) if match else 0
        if status == 100:
            continue
        # A HEAD's answer has no body: the next bytes start the next answer.
        body = b"" if data[:5] == b"HTTP/" else data[:length]
        data = data[len(body):]
        out.append((status, body))
    return out


def _comparable(event: PingEvent) -> tuple:
    return (event.check_id, event.kind, event.exit_status, event.rid, event.method, event.scheme, event.remote_addr,
            event.user_agent, event.body, event.body_size if event.body_size <= len(event.body) else "cut")


async def test_fast_path_and_aiohttp_answer_and_log_generated_requests_alike(edge, tmp_path):
    """Each connection's requests (several, pipelined, sent in random pieces) go to the edge as served
    and to the same app behind aiohttp alone, each with a log of its own: the answers and the logged
    events must be the same (the seed is printed: PINGSTREAM_FUZZ_SEED replays it)."""
    checks = {}
    for fields in ({"slug": "job"}, {"slug": "dup"}, {"slug": "dup"}, {"methods": "POST", "slug": "post-only"},
                   {"filter_http_body": True, "success_kw": "good", "failure_kw": "ERROR", "start_kw": "starting"},
                   {"filter_http_body": True, "filter_default_fail": True, "success_kw": "good", "slug": "strict"},
                   {"paused": True, "manual_resume": True, "slug": "held"}, {"paused": True, "slug": "resumable"}):
        check = await edge.add_check(**fields)
        checks[check.id] = check
    other_log = SqliteEventLog(tmp_path / "aiohttp-only.db", default_partitions=2)
    await other_log.start()
    rng = random.Random(FUZZ_SEED)
    grammar = _PingGrammar(rng, checks, edge.project.ping_key, edge.config.ping_body_limit)
    fast_events_before = len(await edge.events())
    requests = 0
    try:
        async with serving(edge) as fast_site, serving(edge, log=other_log, fast=False) as slow_site:
            for i in range(FUZZ_CONNECTIONS):
                n = rng.choice((1, 1, 2, 3, 5))
                raw = b"".join(grammar.request(first=j == 0, last=j == n - 1) for j in range(n))
                splits = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.choice((0, 0, 1, 3)))))
                fast = await _answers_until_close(fast_site.port, raw, splits)
                slow = await _answers_until_close(slow_site.port, raw, splits)
                assert fast == slow, f"connection {i} (seed {FUZZ_SEED}): {raw[:600]!r}"
                requests += n
            fast_events = [_comparable(e) for e in (await edge.events())[fast_events_before:]]
            slow_events = [_comparable(e) for e in await edge.events(log=other_log)]
            # Per check, in order (the partitions interleave checks differently).
            assert sorted(fast_events, key=lambda e: e[0]) == sorted(slow_events, key=lambda e: e[0]), FUZZ_SEED
            print(f"\nfast path vs aiohttp: {FUZZ_CONNECTIONS} connections, {requests} requests, "
                  f"{len(fast_events)} pings logged alike, {fast_site.fast.answered} answered on the fast path, "
                  f"{fast_site.fast.handed_off} connections handed to aiohttp (seed {FUZZ_SEED})")
            assert fast_site.fast.answered > FUZZ_CONNECTIONS // 10  # the fast path did take part
    finally:
        await other_log.close()


async def test_a_handoff_waiting_for_earlier_answers_reads_nothing_meanwhile(served):
    """A ping, then the first bytes of an API call: the handoff waits for the ping's commit. A
    resume_writing from flow control in that wait must not resume reading (what arrives then is
    aiohttp's); the rest of the API call, sent meanwhile, reaches aiohttp whole."""
    edge, site = served
    check = await edge.add_check()
    async with _writer_held(edge.log) as hold:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        try:
            writer.write(_get(f"/ping/{check.id}") + b"GET /heal")
            await writer.drain()
            for _ in range(100):
                waiting = [c for c in site.fast.connections if c.handoff is not None]
                if waiting:
                    break
                await asyncio.sleep(0.01)
            [conn] = waiting
            conn.resume_writing()  # as the transport does when its buffer drains
            writer.write(b"thz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            hold.set()
            answers = await _read_answers(reader, [False, False])
            assert [(s, body) for s, _, body in answers] == [(200, b"OK"), (200, b"OK")]
            assert (site.fast.answered, site.fast.handed_off) == (1, 1)
        finally:
            writer.close()
