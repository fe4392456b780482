"""Property-based fuzzing of the HTTP edge with hypothesis: no input gets a 5xx or a traceback.

Requests are built by hypothesis strategies from valid and broken pieces: methods,
paths of the Pinging API (uuid and ping-key/slug forms, actions, exit statuses),
the Management API (v1/v2/v3 checks, pause/resume/pings/flips/channels), the
Overwatch endpoints and the OpenAPI document; query strings (rid, create, flips
bounds, junk); headers (API keys and bearer tokens valid, read-only, wrong,
non-ASCII, Content-Encoding, Origin, User-Agent, ...); bodies (binary, non-UTF-8
text, JSON of random shapes and types incl. lone surrogates, check specs with
random fields, malformed and deeply nested JSON, large bodies, gzip, chunked).

Every answer must be below 500; an error must be short (< 300 bytes) and carry
no traceback; ping answers carry CORS, and Management API answers carry exactly
Healthchecks' @cors headers where they carry any; no request may raise an unhandled
exception in the server; and the edge still serves afterwards.

PINGSTREAM_FUZZ_CASES sets the number of generated requests (default 10,000), and
PINGSTREAM_FUZZ_CH_CASES that of a second run on an edge reading state from ClickHouse
(default 1,000); PINGSTREAM_FUZZ_SEED replays a run. Hypothesis runs in a worker thread and hands
each request to the test's event loop, where the in-process edge serves it.

The 10,000 are shared between PINGSTREAM_FUZZ_SHARDS processes (by default one per core this process
may run on, at most 2): this test fuzzes its share, and each other share runs in a pytest of its own
(this same test, with its own edge, one shard and the seed after the one before), at the same time.
Each process serves and generates on one core, so two of them take about half the time. A shard's
failure prints its output with its seed: ``PINGSTREAM_FUZZ_SHARDS=1 PINGSTREAM_FUZZ_CASES=<its share>
PINGSTREAM_FUZZ_SEED=<its seed>`` runs it alone again.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import random
import re
import sys
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from aiohttp.web import RequestPayloadError
from yarl import URL

from ingest.app import create_app
from runtime.config import usable_cores
from checks.spec import unique_key
from schemas.events import CheckConfig, CheckUpserted, PingEvent, uuid7
from tests.edge.server import EdgeTestServer

CASES = int(os.environ.get("PINGSTREAM_FUZZ_CASES", "10000"))
CH_CASES = int(os.environ.get("PINGSTREAM_FUZZ_CH_CASES", "1000"))  # on top, against ClickHouse-backed reads
SEED = int(os.environ.get("PINGSTREAM_FUZZ_SEED", str(random.randrange(1 << 32))))
SHARDS = max(int(os.environ.get("PINGSTREAM_FUZZ_SHARDS", str(min(2, usable_cores())))), 1)
SHARD_TIMEOUT_S = 1800
ROOT = Path(__file__).resolve().parents[2]
MAX_ERROR_BODY = 300

SPEC_FIELDS = [
    "name", "slug", "tags", "desc", "timeout", "grace", "schedule", "tz", "manual_resume", "methods", "channels",
    "unique", "subject", "subject_fail", "start_kw", "success_kw", "failure_kw", "filter_subject", "filter_body",
    "api_key", "type", "interval", "gracePeriod", "timezone", "status",
]
SPECIAL_STRINGS = [
    "", " ", "x", "name", "slug", "tags", "timeout", "grace", "SCHEDULED", "POST", "Europe/Riga", "Mars/Olympus",
    "UTC", "* * * * *", "0 2 * * *", "0 0 30 2 *", "0 0 31 4 *", "*/0 * * * *", "61 * * * *", "* * * * 8", "@reboot",
    "*-*-* 12:00:00", "Mon *-*-* 00:00:00", "*-02-30 00:00", "1999-01-01", "2999-01-01", "\x00", "\ud800", "\udfff",
    "a\ud83d", "\ud83d\ude00", "caf\u00e9", "\u202e", "a" * 101, "a" * 201, "a" * 5000,
]
SPECIAL_INTS = [0, 1, -1, 59, 60, 61, 3600, 86400, 31_536_000, 31_536_001, 2**31, 2**63, -(2**63), 10**30]


class Fixture:
    """Ids and keys the strategies draw valid pieces from."""

    def __init__(self, edge, checks: list[CheckConfig]) -> None:
        project = edge.project
        self.keys = [project.api_key, project.api_key_readonly]
        self.ping_key = project.ping_key
        self.check_ids = [c.id for c in checks]
        self.monitor_ids = [c.id for c in checks if c.monitor_type == "SCHEDULED"]
        self.unique_keys = [unique_key(c.id) for c in checks]
        self.slugs = sorted({c.slug for c in checks if c.slug})


def mostly(valid, other, percent: int = 70) -> st.SearchStrategy:
    """``valid`` about ``percent`` % of the time, else ``other``: most requests get deep enough into
    a handler to meet its validation, the rest try the routing and the first checks."""
    return st.integers(0, 99).flatmap(lambda n: valid if n < percent else other)


def pieces(fx: Fixture):
    """The request strategy for a given fixture."""
    junk_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
    segment = st.one_of(
        st.sampled_from(["", ".", "..", "%", "%zz", "%00", "%ff%fe", "%2F", "%2e%2e", "%e9", "null", "-1", "1e9",
                         "256", "00", "x" * 300, "%C3%A9", "*", ";", "%20"]),
        junk_text.map(lambda s: quote(s, safe="")),
    )
    check_id = mostly(st.sampled_from(fx.check_ids), st.one_of(
        st.sampled_from(fx.check_ids).map(str.upper),
        st.sampled_from(fx.check_ids).map(lambda s: s.replace("-", "")),
        st.uuids().map(str),
        st.sampled_from(fx.unique_keys),
        segment,
    ))
    ping_key = mostly(st.just(fx.ping_key), st.one_of(st.just(fx.ping_key.upper()), segment), 80)
    slug = mostly(st.sampled_from(fx.slugs), st.one_of(st.sampled_from(["new-job", "New_Job", "a" * 101]), segment))
    action = mostly(st.sampled_from(["", "/start", "/fail", "/log", "/0", "/1", "/255"]), st.one_of(
        st.sampled_from(["/256", "/-1", "/01", "/x", "/start/x", "/99999999999999999999", "/"]),
        st.integers(0, 1000).map(lambda n: f"/{n}"),
        segment.map(lambda s: "/" + s),
    ))
    version = mostly(st.sampled_from(["1", "2", "3", "3"]), st.sampled_from(["0", "4", "x", "33", ""]), 85)
    api_tail = st.one_of(
        st.just(""),
        check_id,
        check_id.map(lambda c: c + "/"),
        check_id.map(lambda c: c + "/pause"),
        check_id.map(lambda c: c + "/resume"),
        check_id.map(lambda c: c + "/pings/"),
        st.tuples(check_id, st.one_of(st.integers(0, 10**20).map(str), segment)).map(lambda t: f"{t[0]}/pings/{t[1]}/body"),
        check_id.map(lambda c: c + "/flips/"),
        segment,
    )
    ping_path = st.one_of(
        st.tuples(check_id, action).map(lambda t: f"/ping/{t[0]}{t[1]}"),
        st.tuples(ping_key, slug, action).map(lambda t: f"/ping/{t[0]}/{t[1]}{t[2]}"),
    )
    api_path = st.one_of(
        st.tuples(version, api_tail).map(lambda t: f"/api/v{t[0]}/checks/{t[1]}"),
        st.tuples(version, api_tail).map(lambda t: f"/api/v{t[0]}/checks/{t[1]}"),
        st.tuples(version, st.sampled_from(["channels/", "channels", "channels/x"])).map(lambda t: f"/api/v{t[0]}/{t[1]}"),
        st.sampled_from(["/api/openapi.json", "/api/openapi.json/x", "/api/", "/api/v3/"]),
    )
    monitor_id = mostly(st.sampled_from(fx.monitor_ids), check_id)
    monitor_path = st.one_of(
        st.sampled_from(["/api/v1/monitors", "/api/v1/monitors", "/api/v1/monitors/"]),
        monitor_id.map(lambda c: f"/api/v1/monitors/{c}"),
        st.tuples(monitor_id, st.sampled_from(["/checkin", "/checkin", "/checkin/", "/checkin/x"])).map(lambda t: f"/api/v1/monitors/{t[0]}{t[1]}"),
    )
    path = st.one_of(
        ping_path, api_path, monitor_path,
        st.sampled_from(["/healthz", "/", "/ping", "/ping/", "/metrics"]),
        st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    )
    query_value = st.one_of(
        st.sampled_from(["1", "0", "fail", "ok", "", "-5", "1e9", "9" * 30, "99999999999", "10000000001", "31536001",
                         "\u00b2", "%ff", "%00", "true", "2026-01-01T00:00:00Z"]),
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.sampled_from(fx.check_ids),
        st.integers(-(10**13), 10**13).map(str),
        junk_text.map(lambda s: quote(s, safe="")),
    )
    query_key = st.one_of(
        st.sampled_from(["rid", "create", "slug", "tag", "start", "end", "seconds", "status", "api_key"]),
        junk_text.map(lambda s: quote(s, safe="")),
    )
    query = mostly(st.just(""), st.one_of(
        st.lists(st.tuples(query_key, query_value), max_size=4).map(lambda kv: "?" + "&".join(f"{k}={v}" for k, v in kv)),
        st.sampled_from(["?", "?&&", "?=", "?rid", "?create", "?a=b=c", "?%zz=%zz"]),
    ), 50)

    header_text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=24)
    api_key = st.one_of(
        st.sampled_from(fx.keys),
        st.sampled_from([fx.ping_key, "x" * 32, "", "k" * 5000, "\u00e9" * 32, "\u00e9" * 16]),
        header_text,
        st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=32, max_size=32),
    )
    headers = st.fixed_dictionaries(
        {},
        optional={
            "X-Api-Key": api_key,
            "Authorization": st.one_of(api_key.map(lambda k: f"Bearer {k}"), st.sampled_from(["Bearer", "Bearer ", "Basic eA=="]), header_text),
            "Content-Type": st.sampled_from(["application/json", "text/plain", "application/octet-stream",
                                             "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                                             "application/json; charset=latin-1", "x/\u00e9"]),
            "User-Agent": header_text,
            "X-Forwarded-For": st.one_of(st.sampled_from(["1.2.3.4", "1.2.3.4:80", "::1", "a, b", ",", ""]), header_text),
            "X-Forwarded-Proto": st.one_of(st.sampled_from(["https", "gopher", ""]), header_text),
            "Origin": st.sampled_from(["https://evil.example", "null"]),
            "Accept": st.sampled_from(["text/html", "application/json", "*/*"]),
        },
    )

    json_leaf = st.one_of(
        st.none(), st.booleans(), st.sampled_from(SPECIAL_INTS), st.integers(), st.floats(),
        st.sampled_from(SPECIAL_STRINGS), st.text(max_size=30),
    )
    json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=8)
    spec = st.dictionaries(
        st.one_of(st.sampled_from(SPEC_FIELDS), st.text(max_size=10)),
        st.one_of(json_value, st.lists(st.sampled_from(["name", "slug", "tags", "timeout", "grace", "x"]), max_size=3)),
        max_size=6,
    ).flatmap(lambda d: st.sampled_from([d, {**d, "type": "SCHEDULED"}, {**d, "api_key": fx.keys[0]}]))
    json_bytes = st.one_of(spec, json_value).map(lambda v: json.dumps(v).encode())
    body = st.one_of(
        st.none(),
        st.just(b""),
        st.binary(max_size=3000),
        st.tuples(st.text(max_size=60), st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1251", "utf-8"])).map(
            lambda t: t[0].encode(t[1], errors="replace")),
        json_bytes,
        json_bytes,
        st.tuples(json_bytes, st.integers(0, 10**6)).map(lambda t: t[0][: t[1] % max(len(t[0]), 1)]),  # truncated
        st.tuples(json_bytes, st.integers(0, 10**6), st.binary(min_size=1, max_size=3)).map(
            lambda t: t[0][: t[1] % max(len(t[0]), 1)] + t[2] + t[0][t[1] % max(len(t[0]), 1):]),  # corrupted
        st.tuples(st.sampled_from([b"[", b"{\"a\":", b"{", b"[{\"a\":"]), st.integers(1, 100_000)).map(lambda t: t[0] * t[1]),
        st.sampled_from([b"\xff\xfe\x00", b"\x00" * 100, b"{\"a\": \"\\ud800\"}", b"\"\\udfff\"", b"NaN", b"1e999",
                         b"9" * 5000, b"{\"name\": 1e999}", b"\xef\xbb\xbf{}", "{\"name\": \"caf\u00e9\"}".encode("latin-1")]),
        st.sampled_from([100_000, 1024 * 1024 + 1, 2 * 1024 * 1024]).map(lambda n: b"y" * n),
    )
    spec_body = mostly(spec.map(lambda d: json.dumps(d).encode()), body, 60)
    encoding = st.sampled_from([None] * 12 + ["gzip", "gzip-valid", "deflate", "deflate-valid", "br", "x-junk"])
    method = st.one_of(st.sampled_from(["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                       st.sampled_from(["FOO", "get", "TRACE", "CONNECT"]))

    def request(path, method, headers, body):
        return st.fixed_dictionaries({
            "method": method, "path": path, "query": query, "headers": headers, "body": body,
            "encoding": encoding, "chunked": st.booleans(),
        })

    def with_auth(name: str, values) -> st.SearchStrategy:
        # mostly one valid credential on top of the random headers
        return st.tuples(headers, mostly(values, st.none(), 85)).map(
            lambda t: {**t[0], name: t[1]} if t[1] is not None else t[0])

    valid_key = st.sampled_from(fx.keys)
    api_headers = with_auth("X-Api-Key", mostly(valid_key, api_key, 80))
    bearer_headers = with_auth("Authorization", mostly(valid_key, api_key, 80).map(lambda k: f"Bearer {k}"))
    write = st.sampled_from(["GET", "POST", "POST", "DELETE"])
    return st.one_of(
        request(ping_path, st.sampled_from(["GET", "POST", "HEAD", "PUT"]), headers, body),
        request(api_path, mostly(write, method, 85), api_headers, spec_body),
        request(api_path, mostly(write, method, 85), api_headers, spec_body),
        request(monitor_path, mostly(st.sampled_from(["GET", "POST", "POST"]), method, 85), bearer_headers,
                mostly(spec.map(lambda d: json.dumps({**d, "type": "SCHEDULED"}).encode()), spec_body, 60)),
        request(path, method, headers, body),  # anything anywhere
    )


def wire(req: dict) -> tuple[dict, bytes | None]:
    headers, body = dict(req["headers"]), req["body"]
    enc = req["encoding"]
    if enc is not None and body is not None:
        if enc == "gzip-valid":
            body, enc = gzip.compress(body), "gzip"
        elif enc == "deflate-valid":
            body, enc = zlib.compress(body), "deflate"
        headers["Content-Encoding"] = enc
    return headers, body


class UnhandledExceptions(logging.Handler):
    """Records logged with a traceback by aiohttp: a handler raised (a 500 the client may not even see).

    aiohttp also logs the HTTP parser's refusals (answered 400 before any handler runs) and a body it
    cannot decode while draining what a handler left unread (after the answer was sent): not counted."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and not isinstance(record.exc_info[1], (HttpProcessingError, RequestPayloadError)):
            self.records.append(record)


async def _fuzz_fixture(edge) -> list[CheckConfig]:
    return [
        await edge.add_check(name="job", slug="job"),
        await edge.add_check(name="dup", slug="dup"),
        await edge.add_check(name="dup", slug="dup"),  # two checks, one slug: 409 ambiguous slug
        await edge.add_check(name="post-only", slug="post-only", methods="POST"),
        await edge.add_check(name="filtered", slug="filtered", filter_http_body=True, success_kw="ok", failure_kw="bad"),
        await edge.add_check(name="strict", slug="strict", filter_http_body=True, filter_default_fail=True),
        await edge.add_check(name="paused", slug="paused", paused=True, manual_resume=True),
        await edge.add_check(name="cron", slug="cron", kind="cron", schedule="0 2 * * *", tz="Europe/Riga"),
        await edge.add_check(name="export", slug="export", monitor_type="SCHEDULED"),
    ]


async def test_generated_requests_never_get_a_5xx_or_a_traceback(edge, request, tmp_path):
    shares = [CASES // SHARDS + (1 if i < CASES % SHARDS else 0) for i in range(SHARDS)]
    seeds = [(SEED + i) % (1 << 32) for i in range(SHARDS)]
    outputs = [tmp_path / f"shard-{i}.log" for i in range(SHARDS)]
    others = []  # the processes of shards 1, 2, ...
    try:
        for i in range(1, SHARDS):
            others.append(await _start_shard(request.node.nodeid, shares[i], seeds[i], outputs[i]))
        await _fuzz(edge, edge.client, shares[0])
    except BaseException:
        for process in others:
            await _finish_shard(process, stop=True)
        raise
    for i, process in enumerate(others, start=1):
        returncode = await _finish_shard(process)
        output = outputs[i].read_text(errors="replace")
        summary = next((line for line in output.splitlines() if line.startswith("fuzz: ")), "no summary")
        print(f"shard {i}: {summary}")
        assert returncode == 0 and re.search(r"^1 passed\b", output, re.MULTILINE), (
            f"fuzz shard {i} (PINGSTREAM_FUZZ_SHARDS=1 PINGSTREAM_FUZZ_CASES={shares[i]} "
            f"PINGSTREAM_FUZZ_SEED={seeds[i]}) exited {returncode}:\n{output[-6000:]}")


async def _start_shard(nodeid: str, cases: int, seed_value: int, output: Path) -> asyncio.subprocess.Process:
    """Another share of the fuzz: this test in a pytest of its own, with one shard, ``cases`` and ``seed_value``,
    writing to ``output``."""
    env = dict(os.environ, PINGSTREAM_FUZZ_SHARDS="1", PINGSTREAM_FUZZ_CASES=str(cases),
               PINGSTREAM_FUZZ_SEED=str(seed_value))
    with output.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", nodeid,
            cwd=ROOT, env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT)


async def _finish_shard(process: asyncio.subprocess.Process, stop: bool = False) -> int:
    """A shard's exit status, once it ends; it is killed at once with ``stop`` (this share failed), after
    SHARD_TIMEOUT_S, or if the wait is cancelled."""
    try:
        if not stop:
            await asyncio.wait_for(process.wait(), SHARD_TIMEOUT_S)
    except asyncio.TimeoutError:
        pass  # killed below: its output says how far it got
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode


async def test_generated_requests_with_clickhouse_reads(edge, clickhouse, aiohttp_client):
    """The same, on an edge that reads state from (embedded) ClickHouse: the parameters reach SQL."""
    client = await aiohttp_client(EdgeTestServer(create_app(edge.config, edge.log, edge.registry, clickhouse=clickhouse)))
    await _fuzz(edge, client, CH_CASES)


async def _fuzz(edge, client, cases: int) -> None:
    checks = await _fuzz_fixture(edge)
    fx = Fixture(edge, checks)
    loop = asyncio.get_running_loop()
    root = str(client.make_url("/")).rstrip("/")
    # A connection per request: a case's failure is its own, never a pooled connection an earlier case broke.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    statuses: Counter = Counter()
    run = {"n": 0}
    unhandled = UnhandledExceptions()
    logging.getLogger("aiohttp").addHandler(unhandled)

    async def restore() -> None:
        # A fuzzed DELETE / pause / update of a fixture check would starve later cases: put it back.
        for check in checks:
            if edge.registry.checks.get(check.id) != check:
                edge.registry.apply(CheckUpserted(event_id=str(uuid7()), check=check))

    async def send(req: dict) -> None:
        headers, body = wire(req)
        url = URL(root + req["path"] + req["query"], encoded=True)
        data = body
        if req["chunked"] and body is not None:
            async def chunks(b=body):
                for i in range(0, len(b), 4096):
                    yield b[i:i + 4096]
            data = chunks()
        t0 = time.monotonic()
        where = f"{req['method']} {str(url)[len(root):][:150]} headers={ {k: v[:60] for k, v in headers.items()} } body={(body or b'')[:80]!r}"
        try:
            async with session.request(req["method"], url, headers=headers, data=data, allow_redirects=False,
                                       skip_auto_headers=["Content-Type"], timeout=aiohttp.ClientTimeout(total=20)) as r:
                text = await r.read()
                status, response_headers, version = r.status, r.headers, r.version
        except aiohttp.ClientConnectionError as exc:
            # aiohttp answers an over-long header with a 400 and may close before the client reads it.
            assert any(len(v) > 8000 for v in headers.values()), f"{where}: connection failed: {exc!r}"
            statuses["closed (over-long header)"] += 1
            return
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser refusal (see below) carries its message even in answer to a HEAD,
            # which the client then refuses to read: still a 400, just an unreadable one.
            assert exc.status == 400 and req["method"] == "HEAD", f"{where}: {exc!r}"
            statuses["400 (HTTP parser, HEAD)"] += 1
            return
        except ValueError:
            statuses["refused by the client library"] += 1
            return
        finally:
            await restore()
        if status == 400 and version == aiohttp.HttpVersion10:
            # Refused by aiohttp's HTTP parser before any handler ran (an unknown method, a bad
            # Content-Length or Content-Encoding, ...), answered as HTTP/1.0. Its message may quote
            # the request line, so it is bounded by the line limit rather than by MAX_ERROR_BODY.
            assert len(text) < 8190 + 200 and b"Traceback" not in text, f"{where}: {text[:300]!r}"
            statuses["400 (HTTP parser)"] += 1
            return
        statuses[status] += 1
        if time.monotonic() - t0 > 1:
            print(f"slow {time.monotonic() - t0:.1f}s: {where} -> {status}")
        assert status < 500, f"{where} -> {status}: {text[:300]!r}"
        assert b"Traceback" not in text and b'File "' not in text, f"{where} -> {status}: {text[:300]!r}"
        if status >= 400:
            assert len(text) < MAX_ERROR_BODY, f"{where} -> {status}: long error body {text[:300]!r}"
        if req["path"].startswith("/api/") and "Access-Control-Allow-Origin" in response_headers:
            assert req["path"].startswith(("/api/v1/", "/api/v2/", "/api/v3/")), f"{where}: CORS outside the API"
            cors = {k: response_headers.get(k) for k in ("Access-Control-Allow-Origin", "Access-Control-Allow-Headers",
                                                         "Access-Control-Max-Age")}
            assert cors == {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "X-Api-Key",
                            "Access-Control-Max-Age": "600"}, f"{where}: {cors}"
        elif req["path"].startswith("/ping/") and status in (200, 201):
            assert response_headers.get("Access-Control-Allow-Origin") == "*", f"{where}: no CORS on a ping"
        assert not unhandled.records, f"{where}: the server logged {unhandled.records[0].getMessage()}: {unhandled.records[0].exc_info[1]!r}"

    @settings(max_examples=cases, deadline=None, database=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(req=pieces(fx))
    def one_request(req: dict) -> None:
        run["n"] += 1
        asyncio.run_coroutine_threadsafe(send(req), loop).result(timeout=60)

    started = time.monotonic()
    try:
        await asyncio.to_thread(one_request)
    finally:
        await session.close()
        logging.getLogger("aiohttp").removeHandler(unhandled)
        elapsed = time.monotonic() - started
        print(f"\nfuzz: {run['n']} generated requests in {elapsed:.1f}s (PINGSTREAM_FUZZ_SEED={SEED}); "
              f"statuses: {dict(sorted(statuses.items(), key=str))}")
    assert run["n"] >= cases
    assert sum(n for s, n in statuses.items() if s != "refused by the client library") >= cases * 0.95
    assert not any(isinstance(s, int) and s >= 500 for s in statuses)
    # Still serving: health, and a plain ping is recorded.
    assert (await client.get("/healthz")).status == 200
    r = await client.get(f"/ping/{checks[0].id}")
    assert r.status == 200


# --- regressions: the 5xx the fuzzer found, one request each ----------------------


def _key(edge) -> dict:
    return {"X-Api-Key": edge.project.api_key}


def _bearer(edge) -> dict:
    return {"Authorization": f"Bearer {edge.project.api_key}"}


async def test_flips_bounds_out_of_datetime_range_are_400_not_500(edge):
    check = await edge.add_check(name="f")
    for query, name in (("start=999999999999", "start"), ("end=99999999999", "end"), ("seconds=999999999999", "seconds"),
                        ("seconds=31536001", "seconds"), ("start=\u00b2", "start")):
        r = await edge.client.get(f"/api/v3/checks/{check.id}/flips/?{query}", headers=_key(edge))
        assert (r.status, await r.read()) == (400, b""), query  # upstream's HttpResponseBadRequest()
    r = await edge.client.get(f"/api/v3/checks/{check.id}/flips/?start=10000000000&seconds=31536000", headers=_key(edge))
    assert r.status == 200


async def test_a_monitor_timezone_of_the_wrong_type_is_400_not_500(edge):
    for tz in ([], {}, ["UTC"], 1):
        r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "timezone": tz}, headers=_bearer(edge))
        assert r.status == 400, tz
        assert await r.json() == {"error": "timezone is not a valid timezone"}


async def test_lone_surrogates_in_json_are_400_not_500(edge):
    for path, headers in (("/api/v3/checks/", _key(edge)), ("/api/v1/monitors", _bearer(edge))):
        for body in (b'{"name": "\\ud800", "type": "SCHEDULED"}', b'{"desc": "x\\udfff"}', b'["\\udc00"]'):
            r = await edge.client.post(path, data=body, headers=headers)
            assert r.status == 400, (path, body)
            assert await r.json() == {"error": "could not parse request body"}
    # a proper surrogate pair is just an emoji
    r = await edge.client.post("/api/v3/checks/", data=b'{"name": "\\ud83d\\ude00"}', headers=_key(edge))
    assert r.status == 201
    assert (await r.json())["name"] == "\U0001f600"


async def test_non_ascii_api_keys_are_401_not_500(edge):
    r = await edge.client.get("/api/v3/checks/", headers={"X-Api-Key": "\u00e9" * 32})
    assert r.status == 401
    assert await r.json() == {"error": "wrong api key"}
    r = await edge.client.post("/api/v3/checks/", data=b'{"api_key": "' + b"\\ud800" * 32 + b'"}')
    assert r.status == 400  # the body is refused before the key is looked at
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED"}, headers={"Authorization": "Bearer " + "\u00e9" * 32})
    assert r.status == 401


async def test_undecodable_content_encoding_is_400_not_500(edge):
    check = await edge.add_check(name="gz")
    for path, headers in ((f"/ping/{check.id}", {}), ("/api/v3/checks/", _key(edge)), ("/api/v1/monitors", _bearer(edge))):
        r = await edge.client.post(path, data=b"not gzip at all", headers={**headers, "Content-Encoding": "gzip"})
        assert r.status == 400, path
        assert await r.text() == "could not read request body"
    assert await edge.events() == []
    # a correctly compressed body is decoded and kept
    r = await edge.client.post(f"/ping/{check.id}", data=gzip.compress(b"hello"), headers={"Content-Encoding": "gzip"})
    assert r.status == 200
    [event] = await edge.events()
    assert event.body == b"hello"


async def test_malformed_json_gets_400_naming_the_problem(edge):
    for body in (b"{not json", b'{"name": "x"', b"\xff\xfe{}", b"[" * 50_000, b"{\"a\": NaN", b""):
        r = await edge.client.post("/api/v3/checks/", data=body, headers=_key(edge))
        if body == b"":
            assert r.status == 201  # an empty body is an empty spec, as upstream
            continue
        assert r.status == 400, body[:20]
        assert await r.json() == {"error": "could not parse request body"}
    r = await edge.client.post("/api/v3/checks/", json={"timeout": "soon"}, headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": "json validation error: timeout is not a number"})
    r = await edge.client.post("/api/v3/checks/", json=[1], headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": "json validation error: value is not an object"})


async def test_cors_on_ping_and_management_endpoints_only(edge):
    """Healthchecks' recorded answers: its pings and its @cors Management API views carry CORS
    (errors included); pingstream's own endpoints and upstream's undecorated status view do not."""
    check = await edge.add_check(name="c", slug="c")
    for path in (f"/ping/{check.id}", f"/ping/{check.id}/start", f"/ping/{edge.project.ping_key}/c"):
        r = await edge.client.get(path, headers={"Origin": "https://example.com"})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*", path
    for path in ("/api/v3/checks/", f"/api/v3/checks/{check.id}", "/api/v1/checks/", "/api/v3/channels/",
                 f"/api/v3/checks/{check.id}/flips/", f"/api/v3/checks/{uuid.uuid4()}"):
        for headers in (_key(edge), {}):
            r = await edge.client.get(path, headers={**headers, "Origin": "https://example.com"})
            assert r.status < 500 and r.headers["Access-Control-Allow-Origin"] == "*", path
            assert r.headers["Access-Control-Allow-Headers"] == "X-Api-Key" and r.headers["Access-Control-Max-Age"] == "600"
    for path in ("/api/openapi.json", "/api/v3/status/", "/metrics", "/healthz"):
        r = await edge.client.get(path, headers={**_key(edge), "Origin": "https://example.com"})
        assert r.status < 500 and "Access-Control-Allow-Origin" not in r.headers, path
    r = await edge.client.post(f"/api/v3/checks/{check.id}/pause", headers=_key(edge))
    assert r.status == 200 and r.headers["Access-Control-Allow-Methods"] == "OPTIONS, POST"


async def test_binary_bodies_are_kept_as_exact_bytes(edge):
    check = await edge.add_check(name="bin")
    bodies = [bytes(range(100)), b"\xff\xfe\x00\x80caf\xe9", "\u4e2d\u6587".encode("utf-16"), b"\x00" * 100]
    for body in bodies:
        assert (await edge.client.post(f"/ping/{check.id}", data=body)).status == 200
    events = [e for e in await edge.events() if isinstance(e, PingEvent)]
    assert [(e.body, e.body_size) for e in events] == [(b, len(b)) for b in bodies]
    assert all(isinstance(e.body, bytes) for e in events)

