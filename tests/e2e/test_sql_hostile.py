"""A fuzz run against the SQL endpoint of ``pingstream up``: requests of a grammar of ClickHouse's HTTP interface
(its parameters, headers, credentials, formats, forms, compressed blocks and content codings, each right, wrong or
junk, and queries that read, fail, or try to write) over raw sockets. No 5xx, no traceback in the process's log,
every request answered, and the endpoint still reads afterwards. PINGSTREAM_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import gzip
import lzma
import os
import random
import urllib.parse
import zlib

import brotli
import lz4.frame

from runtime import chcompress
from tests.e2e.test_hostile import _send, fire

CASES = int(os.environ.get("PINGSTREAM_SQL_FUZZ_CASES", "4000"))
SEED = int(os.environ.get("PINGSTREAM_FUZZ_SEED", str(random.randrange(1 << 30))))
CONCURRENCY = 8

QUERIES = [
    "SELECT 1", "SELECT count() FROM pings", "SELECT * FROM checks LIMIT 3", "SELECT {x:UInt8} + 1",
    "SELECT number FROM numbers(100) FORMAT JSON", "SELECT * FROM system.one FORMAT Native",
    "SELECT toString(number) FROM numbers(10) FORMAT RowBinaryWithNamesAndTypes", "SHOW TABLES", "DESCRIBE pings",
    "SELECT throwIf(1)", "SELECT repeat('x', 100000000)", "SELECT * FROM nowhere", "SELEC 1", "SELECT (", "",
    "INSERT INTO pings VALUES (1)", "DROP TABLE pings", "CREATE TABLE t (x UInt8) ENGINE = Memory",
    "SELECT * FROM file('/etc/passwd')", "SELECT * FROM url('http://127.0.0.1:1/')", "SET readonly = 0",
    "SELECT sleep(0.2)", "SELECT number FROM numbers(100000)", "SELECT 1; SELECT 2", "SELECT 1 FORMAT Nope",
    "SELECT '\u00e9\u4e2d\U0001f600'", "KILL QUERY WHERE 1", "SYSTEM FLUSH LOGS", "OPTIMIZE TABLE pings",
    "SELECT * FROM numbers(10) SETTINGS max_threads = 1", "USE system", "EXISTS TABLE pings",
]
FORMATS = ["TabSeparated", "JSON", "JSONEachRow", "Native", "RowBinaryWithNamesAndTypes", "CSV", "Pretty",
           "Parquet", "Nope", "", "\u00e9"]
SETTINGS = ["max_threads", "readonly", "max_result_rows", "max_execution_time", "output_format_json_quote_64bit_integers",
            "no_such_setting", "x-y", "1abc", "\u00e9", "param_", "wait_end_of_query", "session_id", "query_id"]
CODINGS = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress, "xz": lzma.compress,
           "bz2": bz2.compress, "lz4": lz4.frame.compress, "zstd": None, "snappy": None, "identity": None,
           "gzip, br": None, "\u00e9": None, "": None}


class SqlGrammar:
    def __init__(self, rng: random.Random, key: str) -> None:
        self.r = rng
        self.key = key

    def pick(self, *options):
        return self.r.choice(options)

    def junk(self, n: int = 12) -> str:
        return "".join(chr(self.r.choice([0x20, 0x41, 0x7F, 0xE9, 0x2028, 0xFFFD, 0x25, 0x26, 0x3D, 0x0])) for _ in range(n))

    def params(self) -> list[tuple[str, str]]:
        r = self.r
        out = []
        for _ in range(r.randint(0, 5)):
            name = r.choice(["default_format", "database", "compress", "decompress", "enable_http_compression",
                             "http_zlib_compression_level", "param_x", "client_protocol_version", "query_id",
                             "session_id", "user", "password", "add_http_cors_header", *SETTINGS])
            value = r.choice(["1", "0", "true", "yes", "-1", "54460", "99999999999999999999", "", "pingstream",
                              "system", "nope", r.choice(FORMATS), self.junk(), "9", "23"])
            out.append((name, value))
        return out

    def headers(self) -> list[tuple[str, str]]:
        r = self.r
        auth = r.random()
        out = []
        if auth < 0.6:
            out.append(("Authorization", "Basic " + base64.b64encode(f"pingstream:{self.key}".encode()).decode()))
        elif auth < 0.7:
            out += [("X-ClickHouse-User", "pingstream"), ("X-ClickHouse-Key", self.key)]
        elif auth < 0.8:
            out.append(("Authorization", r.choice(["Basic !!!", "Basic " + base64.b64encode(b"pingstream").decode(),
                                                   "Bearer x", "Basic " + base64.b64encode(b"\xff:\xfe").decode()])))
        if r.random() < 0.3:
            out.append(("Accept-Encoding", r.choice(["gzip", "zstd", "br", "lz4", "deflate", "xz", "bz2", "snappy",
                                                     "gzip, deflate, br, zstd", "*", "identity;q=0", self.junk(5)])))
        if r.random() < 0.1:
            out.append(("X-ClickHouse-Format", r.choice(FORMATS)))
        if r.random() < 0.1:
            out.append(("X-ClickHouse-Database", r.choice(["pingstream", "system", "default", self.junk(4)])))
        if r.random() < 0.05:
            out.append(("Origin", "http://example.test"))
        return out

    def body(self, params: list, headers: list) -> bytes | None:
        """A body: a query (plain, in compressed blocks, in a content coding, good or garbled) or a form."""
        r = self.r
        if r.random() < 0.3:
            return None
        query = r.choice(QUERIES).encode()
        kind = r.random()
        if kind < 0.15:  # ClickHouse's compressed blocks, sometimes broken
            params.append(("decompress", "1"))
            body = chcompress.compress(query)
            if body and r.random() < 0.4:  # a flipped byte, and cut somewhere
                broken = bytearray(body)
                broken[r.randrange(len(broken))] ^= 0xFF
                body = bytes(broken[: r.randint(0, len(broken))])
            return body
        if kind < 0.35:  # a content coding, known or not, its data right or garbled
            coding = r.choice(list(CODINGS))
            encode = CODINGS[coding]
            headers.append(("Content-Encoding", coding))
            body = encode(query) if encode and r.random() < 0.6 else query if r.random() < 0.5 else os.urandom(r.randint(0, 40))
            return body
        if kind < 0.45:  # multipart/form-data, well formed or not
            boundary = "b0undary"
            fields = [("query", query.decode())] + [(k, v) for k, v in self.params()]
            parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields)
            if r.random() < 0.2:
                parts += f'--{boundary}\r\nContent-Disposition: form-data; name="t"; filename="t.tsv"\r\n\r\n1\r\n'
            text = parts + f"--{boundary}--\r\n"
            if r.random() < 0.2:
                text = text[: r.randint(0, len(text))]
            headers.append(("Content-Type", r.choice([f"multipart/form-data; boundary={boundary}", "multipart/form-data"])))
            return text.encode("utf-8", "surrogatepass")
        if kind < 0.5:
            return os.urandom(r.randint(1, 200))
        return query

    def request(self) -> tuple[bytes, str]:
        r = self.r
        params, headers = self.params(), self.headers()
        body = self.body(params, headers)
        if body is None or r.random() < 0.3:
            params.append(("query", r.choice(QUERIES)))
        method = "POST" if body is not None else self.pick("GET", "GET", "GET", "HEAD", "OPTIONS", "PUT", "DELETE")
        path = self.pick("/", "/", "/", "/", "/ping", "/replicas_status", "/play", "/%ff", "/?")
        target = path + ("?" + urllib.parse.urlencode(params) if params and "?" not in path else "")
        lines = [f"{method} {target} HTTP/1.1".encode("utf-8", "surrogatepass"), b"Host: x", b"Connection: close"]
        lines += [f"{k}: {v}".encode("utf-8", "surrogatepass") for k, v in headers]
        if body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""), method


async def test_a_fuzz_run_against_the_sql_endpoint_gets_no_5xx_and_no_traceback(system):
    s = system()
    port = urllib.parse.urlsplit(s.keys["sql_url"]).port
    grammar = SqlGrammar(random.Random(SEED), s.keys["admin_key"])
    requests = [grammar.request() for _ in range(CASES)]
    statuses, failures, elapsed = await fire(port, requests, CONCURRENCY)
    answers, data = await _send(port, grammar_check(s.keys["admin_key"]), "GET")
    await asyncio.sleep(0.5)
    output = "".join(s.output)
    print(f"\nfuzz against the SQL endpoint: {CASES} requests in {elapsed:.1f} s (PINGSTREAM_FUZZ_SEED={SEED}); "
          f"statuses {dict(sorted(statuses.items(), key=str))}")
    assert not failures, failures[:5]
    assert "Traceback" not in output, output[output.index("Traceback") - 300:][:3000]
    assert answers == [200] and data.endswith(b"\r\n\r\n42\n"), data[-300:]
    assert statuses["closed without an answer"] <= CASES * 0.02  # only heads too broken to parse


def grammar_check(key: str) -> bytes:
    auth = base64.b64encode(f"pingstream:{key}".encode()).decode()
    return (f"GET /?query=SELECT%2042 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {auth}\r\n\r\n"
            ).encode()
