"""Text a person reads (names, tags, descriptions, keywords) holds no control characters and no
bidirectional overrides, and a time zone is one of the IANA zones, whichever way a check is made."""

from __future__ import annotations

import pytest

from schemas.events import TOPIC_CHECKS, CheckUpserted

NUL = "a\x00b"
BIDI = "invoice\u202egnp.exe"  # RIGHT-TO-LEFT OVERRIDE: shows as "invoiceexe.png"
ISOLATE = "a\u2067b\u2069"  # RIGHT-TO-LEFT ISOLATE ... POP DIRECTIONAL ISOLATE
C1 = "a\x9bb"  # a C1 control (CSI)
ESCAPE = "\x1b[31mred"


def _key(edge) -> dict:
    return {"X-Api-Key": edge.project.api_key}


@pytest.mark.parametrize("field", ["name", "tags", "desc", "success_kw", "failure_kw", "start_kw", "subject"])
@pytest.mark.parametrize("text", [NUL, BIDI, ISOLATE, C1, ESCAPE])
async def test_the_api_refuses_control_characters_and_creates_nothing(edge, field, text):
    r = await edge.client.post("/api/v3/checks/", json={field: text}, headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": f"json validation error: {field} contains a control character"})
    assert await edge.events(TOPIC_CHECKS, (CheckUpserted,)) == []


@pytest.mark.parametrize("field", ["name", "tags", "desc"])
async def test_the_api_refuses_them_on_update_too(edge, field):
    check = await edge.add_check(name="kept")
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={field: NUL}, headers=_key(edge))
    assert r.status == 400
    assert edge.registry.checks[check.id] == check


async def test_a_description_may_hold_line_breaks_and_tabs(edge):
    desc = "line 1\nline 2\r\n\tindented"
    r = await edge.client.post("/api/v3/checks/", json={"name": "multi", "desc": desc}, headers=_key(edge))
    assert r.status == 201 and (await r.json())["desc"] == desc


async def test_a_name_may_not_hold_a_line_break(edge):
    r = await edge.client.post("/api/v3/checks/", json={"name": "a\nb"}, headers=_key(edge))
    assert r.status == 400


async def test_ordinary_right_to_left_text_and_marks_are_fine(edge):
    name = "גיבוי לילי \u200f(nightly)"  # Hebrew with a RIGHT-TO-LEFT MARK, no override
    r = await edge.client.post("/api/v3/checks/", json={"name": name, "tags": "prod ☃"}, headers=_key(edge))
    assert r.status == 201 and (await r.json())["name"] == name


@pytest.mark.parametrize("tz", ["localtime", "Factory", "posixrules", "posix/Europe/Riga", "right/UTC", "Mars/Base"])
async def test_it_refuses_time_zones_that_are_not_iana_zones(edge, tz):
    r = await edge.client.post("/api/v3/checks/", json={"schedule": "0 * * * *", "tz": tz}, headers=_key(edge))
    assert (r.status, await r.json()) == (400, {"error": "json validation error: tz is not a valid timezone"})
    check = await edge.add_check(name="kept")
    r = await edge.client.post(f"/api/v3/checks/{check.id}", json={"tz": tz}, headers=_key(edge))
    assert r.status == 400
    bearer = {"Authorization": f"Bearer {edge.project.api_key}"}
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "schedule": "0 * * * *", "timezone": tz},
                               headers=bearer)
    assert (r.status, await r.json()) == (400, {"error": "timezone is not a valid timezone"})
    assert [c.name for c in edge.registry.project_checks(edge.project.id)] == ["kept"]


async def test_overwatch_stores_a_legacy_zone_as_its_canonical_name_as_the_api_does(edge):
    bearer = {"Authorization": f"Bearer {edge.project.api_key}"}
    r = await edge.client.post("/api/v1/monitors", json={"type": "SCHEDULED", "schedule": "0 * * * *",
                                                          "timezone": "Europe/Kiev"}, headers=bearer)
    assert r.status == 201
    [check] = edge.registry.project_checks(edge.project.id)
    assert check.tz == "Europe/Kyiv"
