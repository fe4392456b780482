"""Limits of the HTTP edge over a real loopback socket (the edge served in-process as in production).

A 100 MB ping body is cut at the limit without being buffered (answered long before
the client is done sending, server memory flat); URLs and headers are bounded (4xx,
never 5xx); bytes that are not UTF-8, in bodies or headers, never break a ping; and
after all of it the edge still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import PingEvent
from tests.edge.server import serving

MB = 1024 * 1024


@pytest.fixture
async def served(edge):
    """The edge fixture's log and registry behind a real TCP port; torn down even when a test fails."""
    async with serving(edge) as site:
        yield edge, site.port


async def _exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read one answer: (status, headers, body; none for a HEAD)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(_read_response(reader, is_head=raw.startswith(b"HEAD ")), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, is_head: bool = False) -> tuple[int, dict, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = b"" if is_head else await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


async def _still_serving(port: int, check_id: str) -> None:
    status, _, body = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"OK")
    status, _, body = await _exchange(port, f"GET /ping/{check_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert (status, body) == (200, b"OK")


async def _stream_big_body(port: int, head: bytes, total: int, framing: str) -> tuple[int, int, int, bytes]:
    """Send ``head`` then ``total`` bytes of body in 1 MiB chunks while watching for the answer.

    Returns (status, bytes sent before the answer came, peak RSS growth of this process,
    which is also the server's, while sending) and the answer's body."""
    chunk = b"\xff\x00" + b"z" * (MB - 2)  # one buffer, reused: the client allocates nothing per chunk
    rss0 = peak = _rss_bytes() or 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(_read_response(reader))
    sent = 0
    try:
        writer.write(head)
        while sent < total and not answer.done():
            data = chunk[: total - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if framing == "chunked" else data)
            sent += len(data)
            try:
                await asyncio.wait_for(writer.drain(), 2.0)
            except (TimeoutError, ConnectionError):
                break  # the edge stopped reading: it has (or is about to have) answered
            peak = max(peak, _rss_bytes() or 0)
        if framing == "chunked" and sent >= total and not answer.done():
            writer.write(b"0\r\n\r\n")
        status, _, body = await asyncio.wait_for(answer, 15)
        peak = max(peak, _rss_bytes() or 0)
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return status, sent, peak - rss0, body


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_100_mb_ping_body_is_cut_at_the_limit_without_buffering(served, framing):
    edge, port = served
    check = await edge.add_check(name="big")
    total = 100 * MB
    head = f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\n".encode()
    head += b"Transfer-Encoding: chunked\r\n\r\n" if framing == "chunked" else b"Content-Length: %d\r\n\r\n" % total
    started = time.monotonic()
    status, sent, rss_growth, body = await _stream_big_body(port, head, total, framing)
    elapsed = time.monotonic() - started
    print(f"\n100 MB {framing} body: {status} after {sent / MB:.0f} MiB sent, {elapsed:.2f}s, "
          f"RSS growth {rss_growth / MB:.1f} MiB")
    assert (status, body) == (200, b"OK")
    # Answered long before the client was done: the edge did not wait for (or keep) the rest.
    assert sent <= 32 * MB, f"{sent / MB:.0f} MiB were sent before the answer"
    if _rss_bytes() is not None:
        assert rss_growth < 40 * MB, f"the process grew by {rss_growth / MB:.0f} MiB while the body was sent"
    [event] = await edge.events()
    limit = edge.config.ping_body_limit
    assert event.body == (b"\xff\x00" + b"z" * (limit - 2))  # the first `limit` bytes, exactly, as bytes
    if framing == "content-length":
        assert event.body_size == total  # the size the client declared
    else:
        assert limit < event.body_size < total  # no declared size: at least "more than the limit"
    await _still_serving(port, check.id)


async def test_a_body_at_and_under_the_limit_is_kept_whole_as_bytes(served):
    edge, port = served
    check = await edge.add_check(name="bin")
    limit = edge.config.ping_body_limit
    bodies = [bytes(range(256))[:limit], b"\x80\xff\xfe\x00" * (limit // 4), b"caf\xe9 \xc3\x28", b""]
    for body in bodies:
        raw = f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        status, _, _ = await _exchange(port, raw + body)
        assert status == 200
    events = await edge.events()
    assert [(e.body, e.body_size) for e in events] == [(b, len(b)) for b in bodies]
    # one byte over: cut to the limit, the true size recorded
    body = bytes(range(limit + 1))
    raw = f"POST /ping/{check.id} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    assert (await _exchange(port, raw + body))[0] == 200
    last = (await edge.events())[-1]
    assert (last.body, last.body_size) == (body[:limit], limit + 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /ping/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/v3/checks/?slug=" + b"s" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"y" * 20_000 + b"\r\n\r\n",
        b"GET /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + b"k" * 1_000_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-" + b"n" * 20_000 + b": v\r\n\r\n",
    ],
    ids=["long-url", "huge-query", "long-header", "1mb-api-key", "500-headers", "long-header-name"],
)
async def test_over_long_urls_and_headers_get_a_short_4xx(served, raw):
    edge, port = served
    check = await edge.add_check(name="alive")
    try:
        status, _, body = await _exchange(port, raw)
    except ConnectionError:
        pytest.fail("the edge dropped the connection instead of answering")
    assert 400 <= status < 500, status
    assert b"Traceback" not in body and b'File "' not in body
    assert len(body) < 300, body[:300]
    await _still_serving(port, check.id)


async def test_header_bytes_that_are_not_utf8_do_not_break_a_ping(served):
    edge, port = served
    check = await edge.add_check(name="hdr")
    raw = (
        f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"User-Agent: curl \xff\xfe\x80 caf\xc3\xa9\r\n"
        + b"X-Forwarded-For: 10.0.0.\xff\r\n"
        + b"X-Forwarded-Proto: htt\xe9ps\r\n\r\n"
    )
    status, headers, body = await _exchange(port, raw)
    assert (status, body) == (200, b"OK")
    [event] = await edge.events()
    assert isinstance(event, PingEvent)
    assert event.user_agent == "curl \ufffd\ufffd\ufffd caf\u00e9"  # valid UTF-8 kept, the rest marked
    assert event.remote_addr == "10.0.0.\ufffd" and event.scheme == "htt\ufffdps"
    # and to the APIs: no key matches such bytes
    for raw in (
        b"GET /api/v3/checks/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: " + b"\xff" * 32 + b"\r\n\r\n",
        b"GET /api/v1/monitors/" + check.id.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + b"\xe9" * 32 + b"\r\n\r\n",
    ):
        status, headers, body = await _exchange(port, raw)
        assert status == 401 and len(body) < 300, body


async def test_cors_header_on_pings_and_the_management_api_over_the_wire(served):
    edge, port = served
    check = await edge.add_check(name="cors")
    key = edge.project.api_key
    _, headers, _ = await _exchange(port, f"GET /ping/{check.id} HTTP/1.1\r\nHost: x\r\nOrigin: https://o.example\r\nConnection: close\r\n\r\n".encode())
    assert headers["access-control-allow-origin"] == "*"
    for path, cors in (("/api/v3/checks/", True), (f"/api/v3/checks/{check.id}", True), ("/api/openapi.json", False),
                       ("/api/v1/monitors/x", False)):
        status, headers, _ = await _exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nOrigin: https://o.example\r\nConnection: close\r\n\r\n".encode())
        assert status < 500 and ("access-control-allow-origin" in headers) == cors, path


_HEADER_NAMES = ["User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "X-Api-Key", "Authorization", "Content-Type",
                 "Content-Encoding", "Origin", "Accept"]


@pytest.mark.skipif(os.environ.get("PINGSTREAM_FUZZ_CASES") == "0", reason="fuzzing switched off")
async def test_raw_header_bytes_never_get_a_5xx(served):
    """What the in-process client cannot send: arbitrary bytes (but no CR/LF) in header values."""
    edge, port = served
    check = await edge.add_check(name="raw", slug="raw")
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    targets = [f"/ping/{check.id}", f"/ping/{edge.project.ping_key}/raw", "/api/v3/checks/", f"/api/v3/checks/{check.id}",
               "/api/v1/monitors", f"/api/v1/monitors/{check.id}/checkin"]
    value = st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

    async def one(method: str, target: str, headers: list[tuple[str, bytes]], body: bytes) -> None:
        raw = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n".encode()
        raw += b"".join(name.encode() + b": " + v + b"\r\n" for name, v in headers) + b"\r\n" + body
        status, _, text = await _exchange(port, raw)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (method, target, headers, text[:200])
        assert b"Traceback" not in text

    @settings(max_examples=int(os.environ.get("PINGSTREAM_FUZZ_RAW_CASES", "300")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(method=st.sampled_from(["GET", "POST", "HEAD", "PUT"]), target=st.sampled_from(targets),
           headers=st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), value), max_size=4), body=st.binary(max_size=200))
    def fuzz(method, target, headers, body):
        asyncio.run_coroutine_threadsafe(one(method, target, headers, body), loop).result(timeout=30)

    await asyncio.to_thread(fuzz)
    print(f"\nraw header bytes: statuses {dict(sorted(statuses.items()))}")
    await _still_serving(port, check.id)


async def test_a_100_mb_api_body_is_refused_at_the_size_limit(served):
    edge, port = served
    check = await edge.add_check(name="alive")
    total = 100 * MB
    for path, auth in (("/api/v3/checks/", f"X-Api-Key: {edge.project.api_key}"),
                       ("/api/v1/monitors", f"Authorization: Bearer {edge.project.api_key}")):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: {total}\r\n\r\n".encode()
        status, sent, rss_growth, body = await _stream_big_body(port, head, total, "content-length")
        print(f"\n100 MB to {path}: {status} {body[:80]!r} after {sent / MB:.0f} MiB, RSS growth {rss_growth / MB:.1f} MiB")
        assert status == 413 and len(body) < 300
        assert sent <= 32 * MB
    await _still_serving(port, check.id)
