"""Live SQL on the running system: ClickHouse's HTTP interface served by the process holding chdb.

Existing clients, unchanged: clickhouse-connect (query, query_df, command) and plain HTTP as curl sends
it. User ``pingstream`` with the installation's admin key; the engine enforces readonly, the time limit
and the result limit.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from bench.procs import Service, free_port, run_cli, sql

MAX_ROWS = 10_000  # the smallest allowed: clickhouse-connect reads system.settings (~1,900 rows) when it connects
TIME_LIMIT_S = 2


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """One `pingstream up` (embedded) for the module, its SQL endpoint on a free port."""
    data = tmp_path_factory.mktemp("sql") / "data"
    env = {"PINGSTREAM_DATA": str(data), "PINGSTREAM_KAFKA": "", "PINGSTREAM_SQL_PORT": str(free_port()),
           "PINGSTREAM_SQL_MAX_EXECUTION_TIME_S": str(TIME_LIMIT_S), "PINGSTREAM_SQL_MAX_RESULT_ROWS": str(MAX_ROWS)}
    service = Service("up", env, free_port())
    try:
        service.start()
        service.data = data
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def client(up):
    url = urllib.parse.urlsplit(up.keys["sql_url"])
    c = clickhouse_connect.get_client(host=url.hostname, port=url.port, username="pingstream",
                                      password=up.keys["admin_key"])
    yield c
    c.close()


def _api(up, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(up.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"X-Api-Key": up.keys["api_key"]})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def _ping(up, check_id: str) -> None:
    with urllib.request.urlopen(f"{up.url}/ping/{check_id}", timeout=10) as r:
        assert r.status == 200


def _http(up, query: str | None = None, *, auth: str = "basic", key: str | None = None, body: bytes | None = None,
          content_type: str | None = None, headers: dict | None = None, **params) -> tuple[int, dict, bytes]:
    """A request as curl sends it, with ``headers`` added; (status, headers, body)."""
    key = up.keys["admin_key"] if key is None else key
    headers = dict(headers or {})
    if content_type:
        headers["Content-Type"] = content_type
    if auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"pingstream:{key}".encode()).decode()
    elif auth == "headers":
        headers.update({"X-ClickHouse-User": "pingstream", "X-ClickHouse-Key": key})
    elif auth == "params":
        params.update(user="pingstream", password=key)
    if query is not None:
        params["query"] = query
    request = urllib.request.Request(up.keys["sql_url"] + "/?" + urllib.parse.urlencode(params), data=body,
                                     headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _wait_for_ping(client, check_id: str, within_s: float) -> float:
    pinged = time.monotonic()
    while client.query("SELECT count() FROM pings WHERE check_id = {c:UUID}", parameters={"c": check_id}).result_rows[0][0] != 1:
        assert time.monotonic() - pinged < within_s, f"the ping was not queryable by SQL within {within_s} s"
        time.sleep(0.05)  # each look takes the engine's thread from the projector for a moment
    return time.monotonic() - pinged


def test_it_finds_a_check_s_pings_by_sql_within_a_second(up, client):
    # The projector's first batch after start is slower (tables opened, first parts written): not timed.
    warm_up = _api(up, "POST", "/api/v3/checks/", {"name": "warm-up"})["uuid"]
    _ping(up, warm_up)
    _wait_for_ping(client, warm_up, 10)
    # Within a second typically (the median of three); never later than two, on a busy test machine too.
    latencies = []
    for name in ("nightly-backup", "hourly-export", "weekly-report"):
        check_id = _api(up, "POST", "/api/v3/checks/", {"name": name, "tags": "prod"})["uuid"]
        _ping(up, check_id)
        latencies.append(_wait_for_ping(client, check_id, 2.0))
    assert sorted(latencies)[1] < 1.0, latencies
    rows = client.query("SELECT kind, received_at FROM pings WHERE check_id = {c:UUID}", parameters={"c": check_id})
    assert [r["kind"] for r in rows.named_results()] == ["success"]
    frame = client.query_df("SELECT check_id, kind FROM pings WHERE check_id = {c:UUID}", parameters={"c": check_id})
    assert list(frame["kind"]) == ["success"] and str(frame["check_id"][0]) == check_id
    assert client.command("SELECT 40 + 2") == 42
    assert client.ping()
    assert client.server_version and client.query("SELECT currentDatabase()").result_rows == [("pingstream",)]


@pytest.mark.parametrize("statement", [
    "INSERT INTO pings (check_id, n) VALUES (generateUUIDv4(), 1)",
    "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    "DROP TABLE pings",
    "ALTER TABLE pings DELETE WHERE 1",
    "TRUNCATE TABLE pings",
    "SET readonly = 0",
    f"SET max_execution_time = {TIME_LIMIT_S * 100}",
    f"SELECT 1 SETTINGS max_result_rows = {MAX_ROWS * 10}",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
])
def test_it_refuses_what_is_not_a_read(up, client, statement):
    with pytest.raises(DatabaseError) as caught:
        client.command(statement)
    assert caught.value.code == 164, str(caught.value)  # READONLY, from the engine
    assert client.command("EXISTS TABLE pings") == 1


def test_it_refuses_a_wrong_key_and_a_project_key(up):
    url = urllib.parse.urlsplit(up.keys["sql_url"])
    for user, password in (("pingstream", up.keys["api_key"]), ("pingstream", up.keys["admin_key"] + "x"),
                           ("default", up.keys["admin_key"]), ("pingstream", "")):
        with pytest.raises(DatabaseError) as caught:
            clickhouse_connect.get_client(host=url.hostname, port=url.port, username=user, password=password)
        assert caught.value.code == 516 and "AUTHENTICATION_FAILED" in str(caught.value)
    status, headers, body = _http(up, "SELECT 1", key=up.keys["api_key_readonly"])
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception: ")


def test_it_cuts_a_runaway_query_and_the_projector_goes_on(up, client):
    started = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        client.query("SELECT count() FROM numbers(1e11)")
    took = time.monotonic() - started
    assert caught.value.code == 159 and "TIMEOUT_EXCEEDED" in str(caught.value)
    assert TIME_LIMIT_S <= took < TIME_LIMIT_S + 3, took
    check_id = _api(up, "POST", "/api/v3/checks/", {"name": "after-the-runaway"})["uuid"]
    _ping(up, check_id)
    _wait_for_ping(client, check_id, 5)


def test_it_limits_result_rows(up, client):
    assert len(client.query(f"SELECT number FROM numbers({MAX_ROWS})").result_rows) == MAX_ROWS
    with pytest.raises(DatabaseError) as caught:
        client.query(f"SELECT number FROM numbers({MAX_ROWS + 1})")
    assert caught.value.code == 396
    # A clear 400, not ClickHouse's 500: past a limit, and any error of the query's own.
    for query, code in [(f"SELECT number FROM numbers({MAX_ROWS + 1})", "396"), ("SELECT throwIf(1)", "395"),
                        ("SELECT repeat('x', 100000000)", "131")]:
        status, headers, text = _http(up, query)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, code) and b"DB::Exception" in text, query


def test_it_answers_curl_style_requests_with_clickhouse_headers(up):
    status, headers, body = _http(up, "SELECT 1")
    assert (status, body) == (200, b"1\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Server-Display-Name"] == "pingstream"
    assert headers["X-ClickHouse-Timezone"]
    uuid.UUID(headers["X-ClickHouse-Query-Id"])
    assert int(json.loads(headers["X-ClickHouse-Summary"])["read_rows"]) >= 1
    for auth in ("headers", "params"):
        assert _http(up, "SELECT 2", auth=auth)[2] == b"2\n"
    status, headers, body = _http(up, "SELECT number AS n FROM numbers(2) FORMAT JSON", query_id="q-1")
    assert headers["X-ClickHouse-Format"] == "JSON" and headers["X-ClickHouse-Query-Id"] == "q-1"
    assert json.loads(body)["data"] == [{"n": "0"}, {"n": "1"}] or json.loads(body)["data"] == [{"n": 0}, {"n": 1}]
    status, headers, _ = _http(up, "SELECT 1", query_id="q\r\n-2")  # it would be sent back in a header
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "36")
    for fmt in ("JSON\x00", "T\x7fSV"):  # a format's name is sent back in a header too, even for a query without output
        for query in ("SELECT 1", "USE system"):
            status, headers, body = _http(up, query, default_format=fmt)
            assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "73") and b"UNKNOWN_FORMAT" in body, query
    status, headers, body = _http(up, "SELECT {x:UInt8} + 1 AS y", default_format="JSONEachRow", param_x="4")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"y":5}\n', "JSONEachRow")
    status, _, body = _http(up, body=b"SELECT name FROM system.tables WHERE database = currentDatabase() AND name = 'runs'")
    assert (status, body) == (200, b"runs\n")
    status, headers, body = _http(up, "SELECT 1 FORMAT Nope")  # an error the engine rethrew: said once, as ClickHouse
    assert status == 404 and body.count(b"Code: 73.") == 1 and body.count(b"(UNKNOWN_FORMAT)") == 1, body
    status, headers, body = _http(up, "SELECT * FROM nowhere")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "60" and b"UNKNOWN_TABLE" in body
    status, headers, _ = _http(up, "SELECT 1", database="default")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "81"
    assert _http(up, "SELECT count() FROM system.settings", database="system")[0] == 200
    # A USE lasts for its request only: the next one is in pingstream's database again.
    assert _http(up, "USE system")[0] == 200
    assert _http(up, "SELECT currentDatabase()")[2] == b"pingstream\n"


def test_it_takes_bound_parameters_sent_as_a_form_as_clickhouse_connect_sends_long_ones(up, client):
    # clickhouse-connect moves bound parameters longer than 4 KB from the URL into a multipart/form-data body
    # (the query goes in its "query" field): 3,000 check ids are, and the edges list a big project's checks so.
    from clickhouse_connect.driver.binding import use_form_encoding

    check_id = _api(up, "POST", "/api/v3/checks/", {"name": "form"})["uuid"]
    _ping(up, check_id)
    _wait_for_ping(client, check_id, 10)
    sql = "SELECT count() FROM pings WHERE check_id IN {ids:Array(UUID)} AND {tag:String} = 'form'"
    ids = [str(uuid.uuid4()) for _ in range(2_999)] + [check_id]
    assert use_form_encoding(sql, {"param_ids": str(ids)})
    assert client.query(sql, parameters={"ids": ids, "tag": "form"}).result_rows == [(1,)]
    assert client.query(sql, parameters={"ids": ids[:10], "tag": "form"}).result_rows == [(0,)]  # in the URL


def test_a_project_of_2500_checks_is_listed_whole_through_the_endpoint(up, client):
    # The edges read the engine through its SQL endpoint: the list binds every check id of the project,
    # past the 4 KB clickhouse-connect sends as a form from about 100 checks, and past IDS_PER_QUERY.
    from concurrent.futures import ThreadPoolExecutor

    ping_key = up.keys["ping_key"]

    def create(i: int) -> None:
        with urllib.request.urlopen(f"{up.url}/ping/{ping_key}/fleet-{i}?create=1", timeout=30) as r:
            assert r.status in (200, 201)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(2_500)))
    deadline = time.monotonic() + 30
    while True:
        checks = _api(up, "GET", "/api/v3/checks/")["checks"]
        fleet = [c for c in checks if c["slug"].startswith("fleet-")]
        if len(fleet) == 2_500 and all(c["n_pings"] == 1 for c in fleet) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(fleet) == 2_500
    assert sorted(c["n_pings"] for c in fleet) == [1] * 2_500


def _multipart(fields: list[tuple[str, str, str | None]], boundary: str = "b0undary") -> bytes:
    """A multipart/form-data body of (name, value, filename or None)."""
    out = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n".encode()
    return out + f"--{boundary}--\r\n".encode()


def _post_form(up, body: bytes, content_type: str = "multipart/form-data; boundary=b0undary", **params):
    return _http(up, body=body, content_type=content_type, **params)


def test_a_form_s_fields_are_parameters_and_what_it_cannot_take_is_a_clear_400(up):
    body = _multipart([("query", "SELECT {x:UInt8} * 2 AS y", None), ("param_x", "21", None)])
    assert _post_form(up, body, default_format="JSONEachRow")[::2] == (200, b'{"y":42}\n')
    # A file in the form is an external table: ClickHouse takes it, this endpoint says it does not.
    status, headers, text = _post_form(up, _multipart([("query", "SELECT 1", None), ("t", "1\n2", "t.tsv")]))
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "36" and b"External data" in text
    # A body that is no form at all, and one that is not UTF-8.
    status, headers, text = _post_form(up, b"no boundary here", content_type="multipart/form-data")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "27", text
    status, headers, _ = _post_form(up, _multipart([("query", "SELECT 1", None)]).replace(b"SELECT 1", b"SELECT \xff"))
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "27"
    # Fields past MAX_FORM_BYTES together.
    status, headers, _ = _post_form(up, _multipart([("query", "SELECT 1", None), ("param_x", "x" * (17 << 20), None)]))
    assert status == 413 and headers["X-ClickHouse-Exception-Code"] == "229"
    # A query past MAX_QUERY_BYTES, in a body or a form field.
    status, headers, _ = _http(up, body=b"SELECT 1 -- " + b"x" * (1 << 20))
    assert status == 413 and headers["X-ClickHouse-Exception-Code"] == "229"
    status, headers, _ = _post_form(up, _multipart([("query", "SELECT 1 -- " + "x" * (1 << 20), None)]))
    assert status == 413 and headers["X-ClickHouse-Exception-Code"] == "229"


def test_it_speaks_clickhouse_s_compressed_blocks_both_ways(up):
    # compress=1: the answer in ClickHouse's compressed blocks; decompress=1: the body sent in them.
    from runtime import chcompress

    status, _, body = _http(up, "SELECT 40 + 2", compress="1")
    assert status == 200 and chcompress.decompress(body, 100) == b"42\n"
    status, _, body = _http(up, body=chcompress.compress(b"SELECT 6 * 7"), decompress="1", compress="1")
    assert status == 200 and chcompress.decompress(body, 100) == b"42\n"
    status, headers, _ = _http(up, "SELECT 1", default_format="Native", client_protocol_version="new")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "27"
    corrupt = bytearray(chcompress.compress(b"SELECT 1"))
    corrupt[0] ^= 1
    status, headers, text = _http(up, body=bytes(corrupt), decompress="1")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "40" and b"CHECKSUM_DOESNT_MATCH" in text


def _codecs() -> tuple[dict, dict]:
    """Each HTTP content coding's (compress, decompress), from its own library (not runtime/httpcompress.py)."""
    import bz2
    import gzip
    import lzma
    import zlib

    import brotli
    import lz4.frame

    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    pairs = {"gzip": gzip, "deflate": zlib, "br": brotli, "zstd": zstd, "lz4": lz4.frame, "xz": lzma, "bz2": bz2}
    return ({name: lib.compress for name, lib in pairs.items()}, {name: lib.decompress for name, lib in pairs.items()})


def test_answers_are_compressed_as_clickhouse_compresses_them_over_http(up):
    # enable_http_compression=1 and Accept-Encoding: the first of ClickHouse's order that the header names.
    decoders = _codecs()[1]
    expected = "".join(f"check-{n % 10}\t{n}\n" for n in range(5_000)).encode()
    for method, decode in decoders.items():
        status, headers, body = _http(up, "SELECT concat('check-', toString(number % 10)), number FROM numbers(5000)",
                                      enable_http_compression="1",
                                      headers={"Accept-Encoding": method})
        assert (status, headers.get("Content-Encoding")) == (200, method), (method, body[:200])
        assert len(body) < len(expected) / 2 and decode(body) == expected, method
    for accept, chosen in [("gzip, deflate, br, zstd", "zstd"), ("gzip, deflate, br", "br"), ("deflate, gzip", "gzip"),
                           ("identity", None), ("snappy", None)]:
        _, headers, body = _http(up, "SELECT 42", enable_http_compression="true", headers={"Accept-Encoding": accept})
        assert headers.get("Content-Encoding") == chosen, accept
        assert (decoders[chosen](body) if chosen else body) == b"42\n"
    _, headers, body = _http(up, "SELECT 42", headers={"Accept-Encoding": "gzip"})  # the setting is off by default
    assert ("Content-Encoding" not in headers, body) == (True, b"42\n")
    # A level is applied (gzip's stream at 1 and at 9 as zlib makes them); out of a method's range, or a flag that
    # is no flag, it is a clear 400.
    import zlib

    for at in (1, 9):
        body = _http(up, "SELECT number FROM numbers(5000)", enable_http_compression="1",
                     http_zlib_compression_level=str(at), headers={"Accept-Encoding": "gzip"})[2]
        packer = zlib.compressobj(at, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        numbers = "".join(f"{n}\n" for n in range(5_000)).encode()
        assert len(body) == len(packer.compress(numbers) + packer.flush()), at
    status, headers, _ = _http(up, "SELECT 1", enable_http_compression="1", http_zlib_compression_level="10",
                               headers={"Accept-Encoding": "gzip"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "36")
    status, headers, _ = _http(up, "SELECT 1", enable_http_compression="maybe", headers={"Accept-Encoding": "gzip"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "467")
    # With compress=1 the blocks are made first, and HTTP's compression wraps them, as ClickHouse layers them.
    from runtime import chcompress

    _, headers, body = _http(up, "SELECT 40 + 2", compress="1", enable_http_compression="1",
                             headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and chcompress.decompress(decoders["gzip"](body), 100) == b"42\n"


def test_request_bodies_are_read_in_every_content_encoding_clickhouse_reads_but_snappy(up):
    query = b"SELECT 6 * 7"
    encoders = _codecs()[0]
    encoders.update(zst=encoders["zstd"], lzma=encoders["xz"], none=bytes)  # ClickHouse's other names
    for name, encode in encoders.items():
        status, _, body = _http(up, body=encode(query), headers={"Content-Encoding": name})
        assert (status, body) == (200, b"42\n"), (name, body)
    for name in ("snappy", "compress"):
        status, headers, text = _http(up, body=query, headers={"Content-Encoding": name})
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (415, "48") and b"NOT_IMPLEMENTED" in text, name
    for name in ("lz4", "gzip", "br", "zstd", "deflate"):  # cut short or garbled: decoded here or by aiohttp, a clear 400
        broken = encoders[name](query)[:-6] if name == "lz4" else b"\x1f\x8b not " + name.encode()
        status, headers, _ = _http(up, body=broken, headers={"Content-Encoding": name})
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "271"), name
    for name in ("xz", "gzip"):  # decoded here, and by aiohttp: a few KB that would be 4 MB of query
        bomb = encoders[name](b"-" * (4 * 1024 * 1024))
        status, headers, _ = _http(up, body=bomb, headers={"Content-Encoding": name})
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229"), name


def test_browser_clients_get_clickhouse_s_cors_headers(up):
    # Tabix and other browser clients ask for add_http_cors_header=1; a browser first sends a preflight.
    request = urllib.request.Request(up.keys["sql_url"] + "/", method="OPTIONS",
                                     headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
        assert "x-clickhouse-key" in r.headers["Access-Control-Allow-Headers"]
    status, headers, body = _http(up, "SELECT 1", add_http_cors_header="1")
    assert (status, body, headers["Access-Control-Allow-Origin"]) == (200, b"1\n", "*")
    status, headers, _ = _http(up, "SELECT 1", key="wrong", add_http_cors_header="1")
    assert (status, headers["Access-Control-Allow-Origin"]) == (403, "*")  # the key still decides
    assert "Access-Control-Allow-Origin" not in _http(up, "SELECT 1")[1]


def test_pingstream_sql_and_admin_key_work_while_up_holds_the_engine(up):
    env = {"PINGSTREAM_DATA": str(up.data), "PINGSTREAM_KAFKA": ""}
    assert run_cli("admin-key", env=env).strip() == up.keys["admin_key"]
    assert stat.S_IMODE(os.stat(Path(up.data) / "admin-key").st_mode) == 0o600
    assert sql(env, "SELECT 7 AS seven") == [{"seven": 7}]


def test_http_connections_past_the_bound_are_closed_and_the_rest_go_on(up):
    import socket

    from runtime.sqlserver import MAX_CONNECTIONS

    url = urllib.parse.urlsplit(up.keys["sql_url"])
    held = [socket.create_connection((url.hostname, url.port), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)  # each is taken in by the server
        with socket.create_connection((url.hostname, url.port), timeout=10) as extra:
            try:
                extra.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                assert extra.recv(100) == b""  # closed unanswered
            except ConnectionResetError:
                pass  # closed unanswered, the request unread
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the held ones are gone once the server sees them close
        try:
            assert _http(up, "SELECT 1")[2] == b"1\n"
            break
        except (urllib.error.URLError, ConnectionError) as exc:
            assert time.monotonic() < deadline, exc
            time.sleep(0.1)


def test_up_s_metrics_count_and_time_the_endpoint_s_queries(up):
    # The engine's series are on up's /metrics: an operator sees what analysts' queries take from the engine's thread.
    assert _http(up, "SELECT 1")[0] == 200 and _http(up, "SELECT * FROM nowhere")[0] == 404

    def value(text: str, sample: str, **labels) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == sample and labels.items() <= s.labels.items())

    with urllib.request.urlopen(f"{up.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert value(text, "pingstream_sql_queries_total", protocol="http", outcome="ok") >= 1
    assert value(text, "pingstream_sql_queries_total", protocol="http", outcome="error") >= 1
    assert value(text, "pingstream_sql_query_seconds_count", protocol="http") >= 2
