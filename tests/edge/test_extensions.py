"""pingstream's extension fields in the Management API (issue #19): thresholds and run time bounds."""

from __future__ import annotations

import pytest

from schemas.events import TOPIC_CHECKS, CheckUpserted

EXTENSION = ("failure_threshold", "recovery_threshold", "min_runtime", "max_runtime")


def _key(edge):
    return {"X-Api-Key": edge.project.api_key}


async def _create(edge, **spec):
    r = await edge.client.post("/api/v3/checks/", json=spec, headers=_key(edge))
    return r.status, await r.json()


async def test_a_check_without_the_extension_shows_none_of_its_fields(edge):
    status, doc = await _create(edge, name="plain")
    assert status == 201
    assert not set(EXTENSION) & set(doc)


async def test_it_creates_a_check_with_thresholds_and_run_time_bounds(edge):
    status, doc = await _create(edge, name="x", failure_threshold=3, recovery_threshold=2, min_runtime=1.5,
                                max_runtime=600)
    assert status == 201
    assert {k: doc[k] for k in EXTENSION} == {"failure_threshold": 3, "recovery_threshold": 2, "min_runtime": 1.5,
                                              "max_runtime": 600}
    [upsert] = await edge.events(TOPIC_CHECKS, (CheckUpserted,))
    c = upsert.check
    assert (c.failure_threshold, c.recovery_threshold, c.min_runtime_s, c.max_runtime_s) == (3, 2, 1.5, 600.0)
    r = await edge.client.get(f"/api/v3/checks/{doc['uuid']}", headers=_key(edge))
    assert (await r.json())["failure_threshold"] == 3


async def test_an_update_can_turn_the_extension_off_again(edge):
    _, doc = await _create(edge, failure_threshold=3, max_runtime=60)
    r = await edge.client.post(f"/api/v3/checks/{doc['uuid']}", json={"failure_threshold": 1, "max_runtime": None},
                               headers=_key(edge))
    assert r.status == 200
    assert not set(EXTENSION) & set(await r.json())


@pytest.mark.parametrize("spec, message", [
    ({"failure_threshold": 0}, "failure_threshold is too small"),
    ({"failure_threshold": 1001}, "failure_threshold is too large"),
    ({"failure_threshold": True}, "failure_threshold is not a number"),
    ({"recovery_threshold": "2"}, "recovery_threshold is not a number"),
    ({"recovery_threshold": 2.5}, "recovery_threshold is not a number"),
    ({"min_runtime": -1}, "min_runtime is too small"),
    ({"max_runtime": 0}, "max_runtime is too small"),
    ({"max_runtime": "soon"}, "max_runtime is neither a number nor auto"),
    ({"max_runtime": "AUTO"}, "max_runtime is neither a number nor auto"),
    ({"max_runtime": 31_536_001}, "max_runtime is too large"),
    ({"min_runtime": 10, "max_runtime": 10}, "min_runtime is not less than max_runtime"),
    ({"flapping_threshold": 0}, "flapping_threshold is too small"),
    ({"broken_after": 1.5}, "broken_after is not a number"),
    ({"broken_after": 0}, "broken_after is too small"),
])
async def test_it_rejects_bad_extension_fields(edge, spec, message):
    status, doc = await _create(edge, **spec)
    assert (status, doc) == (400, {"error": f"json validation error: {message}"})


async def test_runtimes_can_be_learned(edge):
    status, doc = await _create(edge, min_runtime="auto", max_runtime="auto")
    assert (status, doc["min_runtime"], doc["max_runtime"]) == (201, "auto", "auto")
    [upsert] = await edge.events(TOPIC_CHECKS, (CheckUpserted,))
    assert (upsert.check.min_runtime_s, upsert.check.max_runtime_s) == ("auto", "auto")


async def test_it_rejects_an_update_that_crosses_the_bounds(edge):
    _, doc = await _create(edge, max_runtime=60)
    r = await edge.client.post(f"/api/v3/checks/{doc['uuid']}", json={"min_runtime": 61}, headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": "json validation error: min_runtime is not less than max_runtime"})
    [_] = await edge.events(TOPIC_CHECKS, (CheckUpserted,))  # nothing saved


async def test_a_check_can_depend_on_others_of_its_project(edge):
    _, parent = await _create(edge, name="router")
    status, child = await _create(edge, name="backup", depends_on=[parent["uuid"]])
    assert (status, child["depends_on"]) == (201, [parent["uuid"]])
    assert "depends_on" not in parent
    r = await edge.client.post(f"/api/v3/checks/{child['uuid']}", json={"depends_on": []}, headers=_key(edge))
    assert "depends_on" not in await r.json()


async def test_it_rejects_bad_dependencies(edge):
    _, a = await _create(edge, name="a")
    _, b = await _create(edge, name="b", depends_on=[a["uuid"]])
    other = await edge.add_check(project_id="00000000-0000-7000-8000-000000000000")
    for spec, message in (
        ({"depends_on": "x"}, "depends_on is not an array"),
        ({"depends_on": ["nope"]}, "an item in depends_on is not a check uuid"),
        ({"depends_on": [other.id]}, f"depends_on names an unknown check: {other.id}"),
        ({"depends_on": [a["uuid"]]}, "depends_on names the check itself"),
        ({"depends_on": [b["uuid"]]}, "depends_on would make a cycle"),
    ):
        r = await edge.client.post(f"/api/v3/checks/{a['uuid']}", json=spec, headers=_key(edge))
        assert (r.status, await r.json()) == (400, {"error": f"json validation error: {message}"}), spec


async def test_flapping_and_broken_settings(edge):
    status, doc = await _create(edge, flapping_threshold=5, broken_after=7 * 86400)
    assert (status, doc["flapping_threshold"], doc["broken_after"]) == (201, 5, 604800)
    [upsert] = await edge.events(TOPIC_CHECKS, (CheckUpserted,))
    assert (upsert.check.flapping_threshold, upsert.check.broken_after_s) == (5, 604800)
    r = await edge.client.post(f"/api/v3/checks/{doc['uuid']}", json={"flapping_threshold": None, "broken_after": None},
                               headers=_key(edge))
    assert not {"flapping_threshold", "broken_after"} & set(await r.json())
