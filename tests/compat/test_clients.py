"""Existing Healthchecks clients work with nothing but the base URL changed.

`healthchecks-io` (PyPI) is a Python client of Healthchecks' Management and Pinging APIs: it parses
every answer into its own models, so a field of the wrong type or a missing key fails here. A
runitor-style wrapper's requests (start with a run id, then the exit status with the output as the
body and the same run id) and the seeds' curl forms are sent as those tools send them.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid

import healthchecks_io
import pytest


@pytest.fixture(scope="module")
def server():
    from .pingstream_server import pingstream

    with pingstream() as target:
        yield target


def _client(server, version: int = 3):
    return healthchecks_io.Client(api_key=server.keys["API_KEY"], api_url=f"{server.base_url}/api/",
                                  ping_url=f"{server.base_url}/ping/", api_version=version)


def _wait(predicate, timeout_s: float = 10.0):
    """The read model is eventually consistent (ClickHouse after the projector): poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_the_python_client_manages_checks_and_pings_through_pingstream(server):
    from healthchecks_io.schemas.checks import CheckCreate

    with _client(server) as client:
        check = client.create_check(CheckCreate(name="nightly backup", tags="prod db", timeout=3600, grace=60))
        assert check.uuid and check.status == "new" and check.ping_url == f"{server.base_url}/ping/{check.uuid}"
        assert [c.uuid for c in client.get_checks(tags=["db"])] == [check.uuid]
        assert client.success_ping(uuid=check.uuid, data="all good") == (True, "OK")
        assert client.start_ping(uuid=check.uuid) == (True, "OK")
        assert client.fail_ping(uuid=check.uuid, data="disk full") == (True, "OK")
        assert client.exit_code_ping(exit_code=0, uuid=check.uuid) == (True, "OK")
        pings = _wait(lambda: len(client.get_check_pings(check.uuid)) == 4 and client.get_check_pings(check.uuid))
        assert [p.type for p in pings] == ["success", "fail", "start", "success"]
        # check_state is written after the batch's pings (the read model is eventually consistent): wait for it too
        assert _wait(lambda: client.get_check(check.uuid).n_pings == 4)
        # (its get_check_flips expects a bare list where Healthchecks answers {"flips": [...]}: not used)
        updated = client.update_check(check.uuid, CheckCreate(name="nightly backup", timeout=7200, grace=120))
        assert (updated.timeout, updated.grace) == (7200, 120)
        assert client.pause_check(check.uuid).status == "paused"
        assert client.get_integrations() == []
        assert isinstance(client.get_badges(), dict)
        assert client.delete_check(check.uuid).uuid == check.uuid
        assert check.uuid not in [c.uuid for c in client.get_checks()]


def test_the_python_client_pings_by_slug(server):
    from healthchecks_io.schemas.checks import CheckCreate

    # API v1 derives the slug from the name, as Healthchecks' v1 does.
    with healthchecks_io.Client(api_key=server.keys["API_KEY"], api_url=f"{server.base_url}/api/",
                                ping_url=f"{server.base_url}/ping/", ping_key=server.keys["PING_KEY"],
                                api_version=1) as client:
        name = f"By Slug {uuid.uuid4().hex[:6]}"
        check = client.create_check(CheckCreate(name=name, timeout=3600, grace=60))
        slug = client.get_check(check.uuid).slug
        assert slug == name.lower().replace(" ", "-")
        assert client.success_ping(slug=slug) == (True, "OK")
        assert _wait(lambda: client.get_check(check.uuid).n_pings == 1)


def _curl(*args: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-m", "10", *args],
                          capture_output=True, text=True, check=True)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_a_runitor_style_wrapper_reports_a_run_with_its_output_and_exit_status(server):
    with _client(server) as client:
        from healthchecks_io.schemas.checks import CheckCreate

        check = client.create_check(CheckCreate(name="wrapped job", timeout=3600, grace=60))
    rid = str(uuid.uuid4())
    url = f"{server.base_url}/ping/{check.uuid}"
    assert _curl("-X", "POST", f"{url}/start?rid={rid}", "-A", "runitor/v1.3.0") == (200, "OK")
    assert _curl("-X", "POST", "--data-binary", "backup failed: disk full", f"{url}/1?rid={rid}",
                 "-A", "runitor/v1.3.0") == (200, "OK")
    request = urllib.request.Request(f"{server.base_url}/api/v3/checks/{check.uuid}/pings/",
                                     headers={"X-Api-Key": server.keys["API_KEY"]})

    def pings():
        import json

        with urllib.request.urlopen(request, timeout=10) as r:
            found = json.load(r)["pings"]
        return found if len(found) == 2 else None

    finish, start = _wait(pings)
    assert (start["type"], finish["type"]) == ("start", "fail")
    assert start["rid"] == finish["rid"] == rid and finish["ua"] == "runitor/v1.3.0"
    assert "duration" in finish


def test_the_seeds_curl_forms_are_answered_as_documented(server):
    with _client(server) as client:
        from healthchecks_io.schemas.checks import CheckCreate

        check = client.create_check(CheckCreate(name="seed forms", timeout=3600, grace=60))
    url = f"{server.base_url}/ping/{check.uuid}"
    for form in ([url], ["--data-raw", "log text", url + "/log"], [url + "/start"], [url + "/0"],
                 ["--retry", "3", url + "/fail"], [f"{url}?rid={uuid.uuid4()}"], ["-m", "5", "--retry", "5", url]):
        assert _curl(*form) == (200, "OK"), form
    code, head = _curl("-I", url)
    assert code == 200 and head.startswith("HTTP/1.1 200 OK") and "Ping-Body-Limit: 10000" in head
    slug_url = f"{server.base_url}/ping/{server.keys['PING_KEY']}/seed-created-{uuid.uuid4().hex[:8]}"
    assert _curl(slug_url + "?create=1") == (201, "Created")
    assert _curl(slug_url) == (200, "OK")
