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
def sql_endpoint(system):
    """``pingstream up`` with one check pinged once, queryable through its SQL endpoint: ``(up, host, port, check
    uuid)``, for the tests of other clients of the endpoint."""
    import time
    import urllib.parse
    import urllib.request

    import clickhouse_connect

    up = system()
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
