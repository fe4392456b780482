"""The SQL endpoint over TLS: given a certificate and its key (``PINGSTREAM_SQL_TLS_CERT`` / ``_KEY``), ``pingstream
up`` serves ClickHouse's HTTPS interface and its native protocol over TLS on ports of their own, as ClickHouse
serves https_port and tcp_port_secure beside the plain ones, which stay. Read by clickhouse-connect and
clickhouse-driver verifying the certificate against the test's own authority (trustme); a client that does not
trust it, and a plain request to a TLS port, get no answer; a certificate that cannot be served stops the start.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import clickhouse_connect
import pytest
import trustme  # a second authority: one the endpoint's certificate is not of
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException


def _host_port(address: str) -> tuple[str, int]:
    if "://" in address:
        url = urllib.parse.urlsplit(address)
        return url.hostname, url.port
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_clients_read_the_endpoint_over_tls_verifying_its_certificate(sql_endpoint_with, certificate):
    ca, cert, key = certificate
    up, *_ = sql_endpoint_with(PINGSTREAM_SQL_TLS_CERT=cert, PINGSTREAM_SQL_TLS_KEY=key)
    assert {"sql_url", "sql_native", "sql_https", "sql_native_tls"} <= set(up.keys), up.keys
    assert up.keys["sql_https"].startswith("https://")

    host, port = _host_port(up.keys["sql_https"])
    https = clickhouse_connect.get_client(host=host, port=port, interface="https", verify=True, ca_cert=str(ca),
                                          username="pingstream", password=up.keys["admin_key"])
    try:
        assert https.query("SELECT count() FROM pings").result_rows == [(1,)]
        assert https.query("SELECT {n:UInt64} + 1", parameters={"n": 41}).result_rows == [(42,)]
        with pytest.raises(DatabaseError) as caught:  # the read-only session, as over plain HTTP
            https.command("DROP TABLE pings")
        assert "READONLY" in str(caught.value)
    finally:
        https.close()

    host, native_port = _host_port(up.keys["sql_native_tls"])
    native = Client(host=host, port=native_port, secure=True, verify=True, ca_certs=str(ca), user="pingstream",
                    password=up.keys["admin_key"], database="pingstream", compression="lz4")
    try:
        assert native.execute("SELECT count() FROM pings") == [(1,)]
        assert len(native.execute("SELECT number FROM numbers(100000)")) == 100_000  # several blocks
    finally:
        native.disconnect()
    wrong = Client(host=host, port=native_port, secure=True, ca_certs=str(ca), user="pingstream", password="nope")
    with pytest.raises(ServerException) as caught:
        wrong.execute("SELECT 1")
    assert caught.value.code == 516  # AUTHENTICATION_FAILED, over TLS as without
    wrong.disconnect()

    plain_host, plain_port = _host_port(up.keys["sql_url"])  # the plain ports stay (the edges read through them)
    with urllib.request.urlopen(f"http://{plain_host}:{plain_port}/ping", timeout=10) as answer:
        assert answer.read() == b"Ok.\n"

    for tls_port in (port, native_port):
        untrusting = ssl.create_default_context()  # the machine's authorities: not the test's
        with socket.create_connection((host, tls_port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                untrusting.wrap_socket(raw, server_hostname=host)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # plain HTTP to the TLS port
        urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=10).read()
    untrusting_client = None
    with pytest.raises(OperationalError):
        untrusting_client = clickhouse_connect.get_client(host=host, port=port, interface="https", verify=True,
                                                          username="pingstream", password=up.keys["admin_key"])
    assert untrusting_client is None
    assert up.proc.poll() is None  # none of it troubled the system


def _start(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pingstream.cli", "up"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_certificate_that_cannot_be_served_stops_the_start_with_its_reason(tmp_path, certificate):
    ca, cert, key = certificate
    other = trustme.CA().issue_cert("127.0.0.1")
    other_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    base = {**os.environ, "PINGSTREAM_DATA": str(tmp_path / "data"), "PINGSTREAM_KAFKA": "", "PINGSTREAM_PORT": "0"}
    cases = [
        ({"PINGSTREAM_SQL_TLS_CERT": str(cert)}, "PINGSTREAM_SQL_TLS_KEY: not set"),
        ({"PINGSTREAM_SQL_TLS_CERT": str(cert), "PINGSTREAM_SQL_TLS_KEY": str(tmp_path / "none.pem")},
         "none.pem: no such file"),
        ({"PINGSTREAM_SQL_TLS_CERT": str(cert), "PINGSTREAM_SQL_TLS_KEY": str(other_key)}, "cannot be served"),
        ({"PINGSTREAM_SQL_TLS_CERT": str(ca), "PINGSTREAM_SQL_TLS_KEY": str(ca)}, "cannot be served"),
    ]
    for env, said in cases:
        done = _start({**base, **env})
        assert done.returncode == 2, done.stdout + done.stderr
        assert "pingstream: configuration error: " in done.stderr and said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # stopped before anything was made
