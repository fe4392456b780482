"""One machine, Kafka, no ClickHouse server: the projector holds embedded chdb and serves its SQL
endpoint; an edge reads check state through it (PINGSTREAM_CLICKHOUSE=http://pingstream:<admin
key>@127.0.0.1:<sql port>). An edge without a read model answers 503 naming it, and an edge given the
chdb path the projector holds exits with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from bench.procs import ROOT, free_port, parse_keys, run_cli


def _get(url: str, api_key: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"X-Api-Key": api_key}), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_edge_reads_check_state_through_the_projector_s_sql_endpoint(kafka_bootstrap, services, tmp_path):
    common = {"PINGSTREAM_KAFKA": kafka_bootstrap, "PINGSTREAM_KAFKA_PREFIX": f"s{uuid.uuid4().hex[:8]}.",
              "PINGSTREAM_PARTITIONS": "2", "PINGSTREAM_TICK_INTERVAL_S": "0.2"}
    projector_env = {**common, "PINGSTREAM_DATA": str(tmp_path / "projector"), "PINGSTREAM_CLICKHOUSE": "",
                     "PINGSTREAM_SQL_PORT": str(free_port())}
    admin_key = run_cli("admin-key", env=projector_env).strip()  # made before the projector's first start
    projector = services("projector", projector_env)
    projector.wait_output(r"^SQL \(ClickHouse HTTP interface\)")
    services("monitor", {**common, "PINGSTREAM_DATA": str(tmp_path / "monitor")})
    keys = parse_keys(run_cli("project", "create", "acme", env={**common, "PINGSTREAM_DATA": str(tmp_path / "cli")}))
    read_model = f"http://pingstream:{admin_key}@127.0.0.1:{projector_env['PINGSTREAM_SQL_PORT']}"
    edge = services("ingest", {**common, "PINGSTREAM_DATA": str(tmp_path / "edge"), "PINGSTREAM_CLICKHOUSE": read_model},
                    port=True)
    blind = services("ingest", {**common, "PINGSTREAM_DATA": str(tmp_path / "blind"), "PINGSTREAM_CLICKHOUSE": "off"},
                     port=True)

    request = urllib.request.Request(f"{edge.url}/api/v3/checks/", data=json.dumps({"name": "nightly"}).encode(),
                                     headers={"X-Api-Key": keys["api_key"]}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        check_id = json.loads(r.read())["uuid"]
    for _ in range(2):
        with urllib.request.urlopen(f"{edge.url}/ping/{check_id}", timeout=10) as r:
            assert r.status == 200
    deadline = time.monotonic() + 15
    while True:
        status, doc = _get(f"{edge.url}/api/v3/checks/{check_id}", keys["api_key"])
        assert status == 200, doc
        if doc["n_pings"] == 2:
            break
        assert time.monotonic() < deadline, f"the edge never read the projected pings: {doc}"
        time.sleep(0.1)
    assert doc["status"] == "up" and doc["last_ping"] is not None
    status, pings = _get(f"{edge.url}/api/v3/checks/{check_id}/pings/", keys["api_key"])
    assert status == 200 and [p["n"] for p in pings["pings"]] == [2, 1]

    # The projector restarts: meanwhile the edge says its read model is unreachable, then reads again by itself.
    projector.stop()
    status, body = _get(f"{edge.url}/api/v3/checks/{check_id}", keys["api_key"])
    sql_port = projector_env["PINGSTREAM_SQL_PORT"]
    assert (status, body) == (503, {"error": f"read model unavailable: ClickHouse at http://127.0.0.1:{sql_port} is unreachable"})
    projector.output.clear()
    projector.start()
    projector.wait_output(r"^SQL \(ClickHouse HTTP interface\)")
    deadline = time.monotonic() + 5
    while (answer := _get(f"{edge.url}/api/v3/checks/{check_id}", keys["api_key"]))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    assert answer[1]["n_pings"] == 2

    # The edge without a read model knows the check (registry) but not its state: it says so.
    deadline = time.monotonic() + 10
    while (status := _get(f"{blind.url}/api/v3/checks/{check_id}", keys["api_key"]))[0] == 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status == (503, {"error": "read model unavailable: PINGSTREAM_CLICKHOUSE=off"})

    # An edge given the chdb path the projector holds: one line, no traceback.
    env = {**os.environ, **common, "PINGSTREAM_DATA": str(tmp_path / "edge3"), "PINGSTREAM_PORT": str(free_port()),
           "PINGSTREAM_CLICKHOUSE": f"chdb:///{tmp_path / 'projector' / 'clickhouse'}"}
    done = subprocess.run([sys.executable, "-m", "pingstream.cli", "ingest"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pingstream: embedded ClickHouse at ") and "held by another process" in last, done.stderr
