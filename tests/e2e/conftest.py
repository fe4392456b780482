"""The system as real processes (``pingstream up``, or one service per process on Kafka), driven over HTTP."""

from __future__ import annotations

import pytest

from bench.procs import Service, free_port, parse_keys, run_cli, sql  # noqa: F401  (re-exported for tests)


@pytest.fixture
def services():
    """Start services; all are stopped (then killed if stuck) at the end, even on failure."""
    started: list[Service] = []

    def make(command: str, env: dict, port: bool = False) -> Service:
        s = Service(command, {k: str(v) for k, v in env.items()}, free_port() if port else None)
        started.append(s)
        return s.start()

    yield make
    for s in reversed(started):
        s.stop()


@pytest.fixture
def system(tmp_path, services):
    """``pingstream up`` on the embedded log and chdb, on a free port."""

    def make(**env) -> Service:
        env = {"PINGSTREAM_DATA": str(tmp_path / "data"), "PINGSTREAM_KAFKA": "", **env}  # `up` is embedded
        return services("up", env, port=True)

    return make


@pytest.fixture
def sql_endpoint_with(system):
    """``pingstream up`` started with ``env``, one check pinged once, queryable through its SQL endpoint: ``(up, host,
    port, check uuid)``, for the tests of other clients of the endpoint."""
    import time
    import urllib.parse
    import urllib.request

    import clickhouse_connect

    def make(**env):
        up = system(**env)
        with urllib.request.urlopen(f"{up.url}/ping/{up.keys['ping_key']}/client?create=1", timeout=10) as r:
            assert r.status == 201
        url = urllib.parse.urlsplit(up.keys["sql_url"])
        client = clickhouse_connect.get_client(host=url.hostname, port=url.port, username="pingstream",
                                               password=up.keys["admin_key"])
        deadline = time.monotonic() + 30
        while not (rows := client.query("SELECT toString(check_id) FROM pings").result_rows):
            assert time.monotonic() < deadline, "the ping was not queryable within 30 s"
            time.sleep(0.1)
        client.close()
        return up, url.hostname, url.port, rows[0][0]

    return make


@pytest.fixture
def sql_endpoint(sql_endpoint_with):
    """``sql_endpoint_with()``: the endpoint as ``pingstream up`` serves it by default."""
    return sql_endpoint_with()


@pytest.fixture
def certificate(tmp_path):
    """PEM files for the SQL endpoint over TLS, from an authority of the test's own (trustme): (the authority's
    certificate, a certificate chain for 127.0.0.1 and localhost, its private key)."""
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    authority.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths[2]))
    return paths
