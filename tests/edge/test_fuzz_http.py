"""Grammar-based fuzzing of the HTTP edge: pings, Management API, Overwatch, analytics, docs.

Requests are assembled at random from valid and broken pieces (methods, paths,
uuids, slugs, query strings, keys, headers, bodies: binary, non-UTF-8,
malformed or deeply nested JSON, JSON of the wrong shapes and types). Every
answer must be below 500, an error must be short and free of tracebacks, and
the edge must still serve afterwards. PINGSTREAM_FUZZ_CASES sets the count
(default 10,000); PINGSTREAM_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter

import aiohttp
import pytest

from ingest.app import create_app
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import Registry, create_project, save_check
from schemas.events import CheckConfig, utcnow, uuid7
from tests.edge.server import EdgeTestServer

CASES = int(os.environ.get("PINGSTREAM_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("PINGSTREAM_FUZZ_SEED", str(random.randrange(1 << 30))))

METHODS = ["GET"] * 4 + ["POST"] * 4 + ["HEAD", "PUT", "DELETE", "DELETE", "PATCH", "OPTIONS"]
JUNK = ["", " ", "%00", "%ff%fe", "..", "../..", "%2e%2e", "\u00e9\u4e2d", "a" * 300, "null", "0", "-1",
        "1e309", "NaN", "{}", "[]", "'", '"', "<script>", "\\", "%", "%%", "?", "#", ";", "a/b", "*"]


class Grammar:
    def __init__(self, rng: random.Random, project, check: CheckConfig, readonly_key: str) -> None:
        self.r = rng
        self.project = project
        self.check = check
        self.readonly_key = readonly_key

    def pick(self, *options):
        return self.r.choice(options)

    def uuid(self) -> str:
        if self.r.random() < 0.5:
            return self.check.id
        return self.pick(
            self.check.id, self.check.id.upper(), str(uuid.uuid4()), self.check.id[:-1], self.check.id + "0",
            self.check.id.replace("-", ""), self.r.choice(JUNK) or "x",
        )

    def slug(self) -> str:
        return self.pick("job", "my-job", "MY_JOB", "a" * 101, "sl ug", "sl%20ug", "ok-1", self.r.choice(JUNK) or "y")

    def suffix(self) -> str:
        return self.pick("", "/start", "/fail", "/log", "/0", "/1", "/255", "/256", "/-1", "/01", "/x",
                         "/start/extra", "/" + self.r.choice(JUNK))

    def number(self) -> str:
        return self.pick("1", "0", "2", "-1", "abc", "99999999999999999999999", "1.5", "")

    def path(self) -> str:
        v = self.pick("1", "2", "3", "3", "3", "4", "0")
        code = self.pick(self.uuid(), "u" * 40, self.r.choice(JUNK))
        return self.pick(
            f"/ping/{self.uuid()}{self.suffix()}",
            f"/ping/{self.pick(self.project.ping_key, self.project.ping_key, 'wrongkey', self.r.choice(JUNK))}"
            f"/{self.slug()}{self.suffix()}",
            f"/api/v{v}/checks/",
            f"/api/v{v}/checks/{code}",
            f"/api/v{v}/checks/{code}/pause",
            f"/api/v{v}/checks/{code}/resume",
            f"/api/v{v}/checks/{code}/pings/",
            f"/api/v{v}/checks/{code}/pings/{self.number()}/body",
            f"/api/v{v}/checks/{code}/flips/",
            f"/api/v{v}/checks/{code}/runs",
            f"/api/v{v}/checks/{code}/durations",
            f"/api/v{v}/checks/{code}/durations.svg",
            f"/api/v{v}/checks/{code}/chart",
            f"/api/v3/analytics/{self.pick('slowest', 'failure-rate', 'p95-growth', 'nope')}",
            f"/api/v{v}/channels/",
            "/api/v1/monitors",
            f"/api/v1/monitors/{self.uuid()}",
            f"/api/v1/monitors/{self.uuid()}/checkin",
            "/api/openapi.json", "/healthz", "/metrics", "/", "/ping/", "/ping",
            "/" + "/".join(self.r.choice(JUNK) for _ in range(self.r.randrange(1, 5))),
            "/ping/" + "x" * self.r.choice([10, 1000, 9000]),
        )

    def query(self) -> str:
        parts = []
        for _ in range(self.r.randrange(0, 4)):
            key = self.pick("rid", "create", "slug", "tag", "status", "format", "q", "bucket", "since", "until",
                            "limit", "start", "end", "weeks_ago", "api_key", self.r.choice(JUNK) or "k")
            value = self.pick(str(uuid.uuid4()), "1", "0", "fail", "csv", "json", "0.5,0.99", "2", "1h", "1d",
                              "2026-01-01T00:00:00Z", "yesterday", "-5", "1e9", "9" * 30, self.r.choice(JUNK))
            parts.append(f"{key}={value}")
        return ("?" + "&".join(parts)) if parts else ""

    def headers(self) -> dict:
        h = {}
        key = self.pick(None, self.project.api_key, self.project.api_key, self.project.api_key, self.readonly_key,
                        self.readonly_key, self.project.ping_key, "x" * 32, "", "k" * 5000, "\u00e9" * 32)
        if key is not None:
            h[self.pick("X-Api-Key", "x-api-key", "Authorization")] = self.pick(key, f"Bearer {key}", "Bearer")
        if self.r.random() < 0.3:
            h["Content-Type"] = self.pick("application/json", "text/plain", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", "application/json; charset=latin-1")
        if self.r.random() < 0.2:
            h["User-Agent"] = self.pick("curl/8", "\u00e9" * 50, "x" * 3000)
        if self.r.random() < 0.1:
            h["X-Forwarded-Proto"] = self.pick("https", "gopher", "")
        if self.r.random() < 0.1:
            h["Accept"] = self.pick("text/csv", "*/*", "image/svg+xml")
        return h

    def json_value(self, depth: int = 0):
        if depth > 3:
            return self.pick(1, "x", None)
        return self.pick(
            None, True, False, 0, -1, 1, 59, 60, 86400, 31536001, 2**63, -(2**63), 1.5, float("1e308"),
            "", "x", "name", "* * * * *", "0 2 * * *", "61 * * * *", "*-*-* 12:00:00", "Europe/Riga", "Mars/Olympus",
            "\u0000", "\ud7ff" * 3, "a" * 10_000, [], [self.json_value(depth + 1)], {"k": self.json_value(depth + 1)},
        )

    def body(self) -> bytes | None:
        kind = self.r.randrange(9)
        if kind == 0:
            return None
        if kind == 1:
            return bytes(self.r.randrange(256) for _ in range(self.r.randrange(0, 64)))
        if kind == 2:
            return "caf\u00e9 \u4e2d".encode("utf-16")
        if kind == 3:
            return b"{" * self.r.choice([1, 50, 5000]) + b"}" * self.r.choice([0, 1])
        if kind == 4:
            return ("[" * self.r.choice([10, 100, 3000]) + "]" * self.r.choice([10, 100, 3000])).encode()
        if kind == 5:
            return json.dumps(self.json_value()).encode()
        fields = ["name", "slug", "tags", "desc", "timeout", "grace", "schedule", "tz", "manual_resume", "methods",
                  "channels", "unique", "subject", "subject_fail", "start_kw", "success_kw", "failure_kw",
                  "filter_subject", "filter_body", "api_key", "type", "interval", "status", "bogus"]
        doc = {self.r.choice(fields): self.json_value() for _ in range(self.r.randrange(0, 6))}
        if self.r.random() < 0.2:
            doc["api_key"] = self.project.api_key
        return json.dumps(doc).encode()


@pytest.fixture
async def fuzz_edge(tmp_path, aiohttp_client, clickhouse):
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path)}, ping_body_limit=1000)
    log = SqliteEventLog(config.sqlite_path, default_partitions=2)
    await log.start()
    registry = Registry()
    project = await create_project(log, "fuzz", registry)
    check = CheckConfig(id=str(uuid7()), project_id=project.id, name="job", slug="job", created=utcnow())
    await save_check(log, registry, check)
    client = await aiohttp_client(EdgeTestServer(create_app(config, log, registry, clickhouse=clickhouse)))
    try:
        yield client, project, check
    finally:
        await client.close()
        await log.close()


async def test_generated_raw_http_requests_never_get_a_5xx_or_a_traceback(fuzz_edge):
    client, project, check = fuzz_edge
    rng = random.Random(SEED)
    grammar = Grammar(rng, project, check, project.api_key_readonly)
    statuses: Counter = Counter()
    started = time.monotonic()
    for i in range(CASES):
        method, path, query = grammar.pick(*METHODS), "/" + grammar.path().lstrip("/"), grammar.query()
        headers, body = grammar.headers(), grammar.body()
        try:
            r = await client.request(method, path + query, headers=headers, data=body, skip_auto_headers=["Content-Type"])
            text = await r.read()
        except ValueError:
            statuses["refused by the client library"] += 1  # e.g. a header value aiohttp will not send
            continue
        except aiohttp.ClientError:
            # aiohttp's server answers an over-long request line or header with a 400 and closes;
            # anything else ending the connection is a failure.
            oversize = len(path) + len(query) > 8000 or any(len(v) > 8000 for v in headers.values())
            assert oversize, f"case {i} (seed {SEED}): {method} {path[:120]}{query[:120]}: connection failed"
            statuses["400 (over-long line, closed)"] += 1
            continue
        statuses[r.status] += 1
        where = f"case {i} (seed {SEED}): {method} {path[:120]}{query[:120]} -> {r.status}"
        assert r.status < 500, f"{where}: {text[:300]!r}"
        assert b"Traceback" not in text and b'File "' not in text, where
        if r.status >= 400 and r.headers.get("Content-Type", "").startswith(("text/plain", "application/json")):
            assert len(text) < 300, f"{where}: long error body {text[:300]!r}"
    elapsed = time.monotonic() - started
    print(f"fuzz: {CASES} requests in {elapsed:.1f}s (seed {SEED}), statuses {dict(sorted(statuses.items(), key=str))}")
    assert (await client.get("/healthz")).status == 200
    assert sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500) == 0


async def test_regressions_found_by_the_fuzzer(fuzz_edge):
    client, project, check = fuzz_edge
    # a method the route does not take: 405, not a 500 from rebuilding the exception (a Management
    # API route answers it empty, with CORS and no Allow, as upstream's @cors)
    r = await client.request("PATCH", "/api/v3/channels/", headers={"X-Api-Key": project.api_key})
    assert r.status == 405 and "Allow" not in r.headers and await r.text() == ""
    r = await client.request("PATCH", "/api/openapi.json")
    assert r.status == 405 and "GET" in r.headers["Allow"] and await r.text() == "method not allowed"
    # deeply nested JSON: 400 naming the problem, not a RecursionError
    deep = b"[" * 100_000 + b"]" * 100_000
    r = await client.post("/api/v3/checks/", data=deep, headers={"X-Api-Key": project.api_key})
    assert r.status == 400 and (await r.json())["error"] == "could not parse request body"
    r = await client.post("/api/v1/monitors", data=deep, headers={"Authorization": f"Bearer {project.api_key}"})
    assert r.status == 400
