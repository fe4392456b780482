"""A project's Prometheus endpoint in Healthchecks' format, and a /metrics that names no check.

The rules are upstream's (hc/integrations/prometheus/tests/test_metrics.py): the read-only key in
the URL or as a bearer token, 401 / 400 / 403, the series and their labels, the escaping. The
text is read back with prometheus_client's parser, as a scraper would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from checks.spec import unique_key
from projector import service as projector_service
from reads import checks as queries
from runtime.config import Config
from schemas.events import utcnow

STATE_COLUMNS = ["check_id", "project_id", "status", "last_ping", "last_start", "last_duration_s", "n_pings",
                 "started", "updated_at", "version"]


def _url(edge, key: str | None = None) -> str:
    return f"/projects/{edge.project.id}/metrics/{edge.project.api_key_readonly if key is None else key}"


async def _state(edge, check, status: str, last_ping=None, last_start=None, duration_s=None) -> None:
    """The projector's check_state row for ``check`` (naive UTC times, as ClickHouse takes them)."""
    naive = lambda t: t.replace(tzinfo=None) if t is not None else None  # noqa: E731
    row = [[check.id, check.project_id, status, naive(last_ping), naive(last_start), duration_s, 1,
            int(last_start is not None), naive(utcnow()), 1]]
    await edge.ch.run(lambda c: c.insert("check_state", row, column_names=STATE_COLUMNS))


def _samples(text: str) -> dict:
    """{(series, frozenset(labels)): value} of an exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _labels(check) -> frozenset:
    return frozenset({"name": check.name, "tags": check.tags, "unique_key": unique_key(check.id)}.items())


async def test_it_serves_each_check_as_healthchecks_does(projected):
    now = utcnow()
    up = await projected.add_check(name="Alice Was Here", tags="foo bar", timeout_s=600, grace_s=600)
    late = await projected.add_check(name="late", tags="foo", timeout_s=600, grace_s=600)
    down = await projected.add_check(name="down", tags="bar", timeout_s=600, grace_s=600)
    paused = await projected.add_check(name="paused", paused=True, paused_at=now - timedelta(minutes=5))
    running = await projected.add_check(name="running", tags="baz", timeout_s=600, grace_s=600)
    new = await projected.add_check(name="new")
    await _state(projected, up, "up", last_ping=now - timedelta(minutes=1), duration_s=12.5)
    await _state(projected, late, "up", last_ping=now - timedelta(minutes=15))  # timeout 10 + grace 10
    await _state(projected, down, "down", last_ping=now - timedelta(hours=1))
    await _state(projected, running, "up", last_ping=now - timedelta(minutes=1), last_start=now - timedelta(seconds=5))

    r = await projected.client.get(_url(projected))
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain"
    text = await r.text()
    samples = _samples(text)
    expected = {  # check: (up, started, grace, paused)
        up: (1, 0, 0, 0), late: (1, 0, 1, 0), down: (0, 0, 0, 0), paused: (1, 0, 0, 1), running: (1, 1, 0, 0),
        new: (1, 0, 0, 0),
    }
    for check, values in expected.items():
        got = tuple(samples[(series, _labels(check))]
                    for series in ("hc_check_up", "hc_check_started", "hc_check_grace", "hc_check_paused"))
        assert got == values, check.name
    tags = {dict(labels)["tag"]: v for (name, labels), v in samples.items() if name == "hc_tag_up"}
    assert tags == {"foo": 1, "bar": 0, "baz": 1}
    assert samples[("hc_checks_total", frozenset())] == 6
    assert samples[("hc_checks_down_total", frozenset())] == 1
    # pingstream's own series, for the checks whose last run has a duration
    durations = {k: v for k, v in samples.items() if k[0] == "pingstream_check_last_duration_seconds"}
    assert durations == {("pingstream_check_last_duration_seconds", _labels(up)): 12.5}
    # upstream's text, line for line: HELP and TYPE, label order and spacing, checks in creation order
    lines = text.splitlines()
    assert lines[:3] == [
        "# HELP hc_check_up Whether the check is currently up (1 for yes, 0 for no).",
        "# TYPE hc_check_up gauge",
        f'hc_check_up{{name="Alice Was Here", tags="foo bar", unique_key="{unique_key(up.id)}"}} 1',
    ]
    for help_line in (
        "# HELP hc_check_started Whether the check is currently started (1 for yes, 0 for no).",
        "# HELP hc_check_grace Whether the check is currently in the grace period (1 for yes, 0 for no).",
        "# HELP hc_check_paused Whether the check is currently paused (1 for yes, 0 for no).",
        "# HELP hc_tag_up Whether all checks with this tag are up (1 for yes, 0 for no).",
        "# HELP hc_checks_total The total number of checks.",
        "# HELP hc_checks_down_total The number of checks currently down.",
    ):
        assert help_line in lines
    assert "hc_checks_total 6" in lines and "hc_checks_down_total 1" in lines
    # no uuid of a check or of the project: a uuid is all a ping needs
    for secret in [c.id for c in expected] + [projected.project.id, projected.project.ping_key]:
        assert secret not in text


async def test_it_escapes_label_values(projected):
    check = await projected.add_check(name='Line 1\nLine2 "quoted"', tags="A\\C")
    text = await (await projected.client.get(_url(projected))).text()
    assert 'name="Line 1\\nLine2 \\"quoted\\"", tags="A\\\\C"' in text
    assert 'hc_tag_up{tag="A\\\\C"} 1' in text
    assert _samples(text)[("hc_check_up", _labels(check))] == 1  # and a parser reads the name back


async def test_it_takes_the_key_as_a_bearer_token(projected):
    await projected.add_check(name="a")
    path = f"/projects/{projected.project.id}/metrics/"
    r = await projected.client.get(path, headers={"Authorization": f"Bearer {projected.project.api_key_readonly}"})
    assert r.status == 200 and "hc_checks_total 1" in await r.text()
    r = await projected.client.get(path)
    assert (r.status, await r.read()) == (401, b"")
    r = await projected.client.get(path, headers={"Authorization": f"Token {projected.project.api_key_readonly}"})
    assert r.status == 401


async def test_it_serves_the_older_path_too(projected):
    r = await projected.client.get(f"/projects/{projected.project.id}/checks/metrics/{projected.project.api_key_readonly}")
    assert r.status == 200 and "hc_checks_total 0" in await r.text()


async def test_it_checks_the_key(projected):
    other = "X" * 32
    for key, status in ((projected.project.api_key_readonly + "R", 400), ("short", 400), (other, 403),
                        (projected.project.api_key, 403)):  # the read-write key opens nothing here
        r = await projected.client.get(_url(projected, key))
        assert (r.status, await r.read()) == (status, b""), key
    bearer = {"Authorization": "Bearer " + "é" * 32}
    r = await projected.client.get(f"/projects/{projected.project.id}/metrics/", headers=bearer)
    assert r.status == 403


async def test_it_needs_a_project_uuid_in_the_path(projected):
    r = await projected.client.get(f"/projects/not-a-uuid/metrics/{projected.project.api_key_readonly}")
    assert r.status == 404


async def test_it_answers_503_without_the_read_model(edge_without_read_model):
    edge = edge_without_read_model
    r = await edge.client.get(_url(edge))
    assert r.status == 503 and await r.json() == {"error": "read model unavailable: PINGSTREAM_CLICKHOUSE=off"}


async def test_service_metrics_name_no_check_or_project_while_the_project_endpoint_does(projected, tmp_path):
    """A run measured by the real projector: /metrics (no key needed) carries no check's or
    project's identifier, and the run's duration is on the project's endpoint, labelled by name
    and unique key."""
    check = await projected.add_check(name="nightly")
    stop = asyncio.Event()
    config = Config.from_env({}, data_dir=tmp_path / "projector")
    projector = asyncio.create_task(projector_service.run(config, projected.log, projected.ch, stop))
    try:
        rid = str(uuid.uuid4())
        assert (await projected.client.get(f"/ping/{check.id}/start?rid={rid}")).status == 200
        await asyncio.sleep(0.05)
        assert (await projected.client.get(f"/ping/{check.id}?rid={rid}")).status == 200
        deadline = time.monotonic() + 15
        while (await queries.check_states(projected.ch, [check.id])).get(check.id, {}).get("last_duration_s") is None:
            assert time.monotonic() < deadline, "the projector did not measure the run"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(projector, 20)
    service = await (await projected.client.get("/metrics")).text()
    assert "pingstream_http_responses_total" in service
    for identifier in (check.id, check.id.replace("-", ""), unique_key(check.id), projected.project.id,
                       projected.project.ping_key, "nightly"):
        assert identifier not in service
    for family in text_string_to_metric_families(service):
        for sample in family.samples:
            assert not {"check_id", "check", "project_id", "project", "unique_key", "name"} & set(sample.labels)
    text = await (await projected.client.get(_url(projected))).text()
    [(key, seconds)] = [(k, v) for k, v in _samples(text).items() if k[0] == "pingstream_check_last_duration_seconds"]
    assert key[1] == _labels(check) and 0 < seconds < 10
