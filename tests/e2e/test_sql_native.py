"""The SQL endpoint's native protocol (runtime/nativeserver.py) read by clickhouse-driver, a client of its own
(clickhouse-go's native mode, Grafana's default, is in test_sql_go.py): types, blocks of a large result,
parameters bound by the server, a result with no rows (its columns still told), errors as ClickHouse's
exceptions, a wrong key, the read-only session, compression none, LZ4 and ZSTD, and a connection that goes on
after an error.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException


def _client(up, **kwargs) -> Client:
    host, port = up.keys["sql_native"].rsplit(":", 1)
    return Client(host=host, port=int(port), **{"user": "pingstream", "password": up.keys["admin_key"], **kwargs})


@pytest.mark.parametrize("compression", [False, "lz4", "zstd"])
def test_clickhouse_driver_reads_the_endpoint_over_the_native_protocol(sql_endpoint, compression):
    up, _, _, check_id = sql_endpoint
    client = _client(up, database="pingstream", compression=compression)
    try:
        rows = client.execute(
            "SELECT number, toString(number), toLowCardinality(toString(number % 3)), [number, 1], "
            "if(number % 2 = 0, NULL, number), toDateTime64('2026-12-02 10:00:00.25', 3, 'UTC'), "
            "toUUID('00000000-0000-0000-0000-000000000001') FROM numbers(200000)")
        assert len(rows) == 200_000  # several blocks
        n, text, low, array, maybe, at, an_id = rows[7]
        assert (n, text, low, array, maybe) == (7, "7", "1", [7, 1], 7) and rows[8][4] is None
        assert at.replace(tzinfo=None) == datetime(2026, 12, 2, 10, 0, 0, 250000)
        assert an_id == uuid.UUID(int=1)
        assert client.execute("SELECT toString(check_id) FROM pings") == [(check_id,)]
        assert client.execute("SELECT {who:String} || '!', {n:UInt8} + 1", {"who": "it's\tme", "n": 41},
                              settings={"server_side_params": True}) == [("it's\tme!", 42)]
        rows, columns = client.execute("SELECT 1 AS one, 'x' AS letter WHERE 0", with_column_types=True)
        assert (rows, columns) == ([], [("one", "UInt8"), ("letter", "String")])
        with pytest.raises(ServerException) as caught:
            client.execute("SELECT * FROM nowhere")
        assert caught.value.code == 60 and "UNKNOWN_TABLE" in caught.value.message
        for statement in ("INSERT INTO pings (kind) VALUES ('x')", "DROP TABLE pings", "SET readonly = 0"):
            with pytest.raises(ServerException) as caught:
                client.execute(statement)
            assert caught.value.code == 164, statement  # READONLY
        with pytest.raises(ServerException) as caught:  # a client's INSERT: refused before it sends data
            client.execute("INSERT INTO pings (kind) VALUES", [("x",)])
        assert caught.value.code == 164
        assert client.execute("SELECT 41 + 1 FORMAT JSON") == [(42,)]  # blocks, whatever the FORMAT: the client formats
        assert client.execute("SELECT 42") == [(42,)]  # the connection goes on after errors
        client.execute("USE system")  # the connection is a session: its database stays
        assert client.execute("SELECT currentDatabase()") == [("system",)] == client.execute("SELECT currentDatabase()")
        client.execute("use `pingstream`;")
        assert client.execute("SELECT currentDatabase()") == [("pingstream",)]
    finally:
        client.disconnect()


def test_the_native_protocol_refuses_a_wrong_key_an_unknown_database_and_a_stranger(sql_endpoint):
    up, _, _, _ = sql_endpoint
    for kwargs, code in [({"password": "wrong"}, 516), ({"database": "secrets"}, 81)]:
        client = _client(up, **kwargs)
        with pytest.raises(ServerException) as caught:
            client.execute("SELECT 1")
        assert caught.value.code == code
        client.disconnect()
    host, port = up.keys["sql_native"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # not the protocol: closed, nothing said
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b""
    assert _client(up).execute("SELECT 1") == [(1,)]  # still serving


def test_broken_native_clients_are_cut_off_quietly_and_the_server_goes_on(sql_endpoint):
    from runtime.nativeserver import REVISION, _string, _varint

    up, _, _, _ = sql_endpoint
    host, port = up.keys["sql_native"].rsplit(":", 1)
    hello = (_varint(0) + _string("fuzz") + _varint(1) + _varint(0) + _varint(REVISION) + _string("pingstream")
             + _string("pingstream") + _string(up.keys["admin_key"]))
    client_info = (b"\x01" + _string("") * 3 + bytes(8) + b"\x01" + _string("u") + _string("h") + _string("fuzz")
                   + _varint(1) + _varint(0) + _varint(REVISION) + _string("") + _varint(0) + _varint(0) + b"\x00"
                   + _varint(0) * 3)

    def query(text: str, compressed: int = 0) -> bytes:
        return (_varint(1) + _string("q") + client_info + _string("") + _string("") + _varint(2) + _varint(compressed)
                + _string(text) + _string(""))

    empty_block = _varint(2) + _string("") + b"\x01\x00\x02\xff\xff\xff\xff\x00" + b"\x00\x00"
    table_block = _varint(2) + _string("t") + b"\x01\x00\x02\xff\xff\xff\xff\x00" + b"\x01\x01" + _string("x") + _string("UInt8") + b"\x07"
    cases = [
        b"\xff" * 12,  # a varint that never ends
        hello[:9],  # cut in the handshake
        hello + _string(""),  # then nothing: the server waits, the client goes
        hello + _string("") + b"\x09",  # an unknown packet
        hello + _string("") + _varint(2),  # Data outside a query
        hello + _string("") + query("SELECT 1")[:30],  # a query cut short
        hello + _string("") + _varint(1) + _varint(1 << 40),  # a string longer than any query
        hello + _string("") + query("SELECT 1") + table_block,  # an external table: refused
        hello + _string("") + query("SELECT 1", compressed=1) + empty_block,  # "compressed", but not
        hello + _string("") + query("SELECT 1::Variant(String, UInt64)") + empty_block,  # a type not re-laid
    ]
    for raw in cases:
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # whatever it answers, then the end
                pass
    assert _client(up).execute("SELECT 1") == [(1,)]
    output = "".join(up.output)
    assert "Traceback" not in output, output[output.index("Traceback") - 300:][:3000]


def test_up_runs_without_the_native_protocol_when_its_port_is_taken(system):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = system(PINGSTREAM_SQL_NATIVE_PORT=str(port))
        output = "".join(up.output)
        assert f"SQL (ClickHouse native protocol): not served: 127.0.0.1:{port}: " in output, output[-2000:]
        assert "sql_url" in up.keys  # the rest runs: pings, the API, SQL over HTTP


def test_every_panel_of_the_grafana_dashboard_runs_over_the_native_protocol(sql_endpoint):
    # deploy/grafana/pingstream.json as Grafana's data source sends it with its default protocol: each query, its
    # macros expanded, on one connection. The rows themselves are checked on populated data in
    # tests/integration/test_analytics_docs.py; here, that every query runs and names its columns.
    from datetime import datetime, timedelta, timezone

    from tests.integration.test_analytics_docs import dashboard_queries, grafana_to_sql

    up, _, _, _ = sql_endpoint
    client = _client(up, database="pingstream", compression="lz4")
    now = datetime.now(timezone.utc)
    try:
        for title, query in dashboard_queries():
            _, columns = client.execute(grafana_to_sql(query, now - timedelta(days=14), now), with_column_types=True)
            assert columns, title
    finally:
        client.disconnect()


def test_connections_past_the_bound_are_closed_and_the_rest_go_on(sql_endpoint):
    from runtime.nativeserver import MAX_CONNECTIONS

    up, _, _, _ = sql_endpoint
    host, port = up.keys["sql_native"].rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            assert extra.recv(10) == b""  # closed at once
    finally:
        for sock in held:
            sock.close()
    client = _client(up)
    deadline = time.monotonic() + 10
    while True:  # the held ones are gone once the server has seen them close
        try:
            assert client.execute("SELECT 1") == [(1,)]
            break
        except Exception:
            assert time.monotonic() < deadline
            client.disconnect()
            time.sleep(0.1)
