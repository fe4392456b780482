"""Secrets are never compared character by character: keys are looked up by their digest, and
values derived from secrets (badge keys and signatures, unique keys) are compared with
``hmac.compare_digest``, so the time of an answer tells nothing about how much of a guess was right."""

from __future__ import annotations

import hmac

import pytest

import runtime.registry
from checks.spec import unique_key


@pytest.fixture
def digested(monkeypatch) -> list[str]:
    """The secrets the registry hashed for a lookup."""
    seen: list[str] = []
    real = runtime.registry._digest

    def spy(secret: str) -> bytes:
        seen.append(secret)
        return real(secret)

    monkeypatch.setattr(runtime.registry, "_digest", spy)
    return seen


@pytest.fixture
def compared(monkeypatch) -> list[tuple]:
    """The pairs given to hmac.compare_digest."""
    seen: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return seen


async def test_api_keys_and_ping_keys_are_looked_up_by_their_digest(edge, digested):
    r = await edge.client.get("/api/v3/checks/", headers={"X-Api-Key": edge.project.api_key})
    assert r.status == 200
    assert edge.project.api_key in digested
    r = await edge.client.get(f"/ping/{edge.project.ping_key}/nightly?create=1")
    assert r.status == 201
    assert edge.project.ping_key in digested
    guess = edge.project.ping_key[:-1] + "x"
    assert (await edge.client.get(f"/ping/{guess}/nightly")).status == 404
    assert guess in digested


async def test_a_project_badge_key_is_compared_in_constant_time(edge, compared):
    await edge.add_check(name="web", tags="web")
    r = await edge.client.get("/api/v3/badges/", headers={"X-Api-Key": edge.project.api_key_readonly})
    url = (await r.json())["badges"]["web"]["json"]
    path = "/" + url.split("/", 3)[3]
    badge_key = path.split("/")[2]
    compared.clear()
    assert (await edge.client.get(path)).status == 200
    assert any(badge_key.encode() in pair or badge_key in pair for pair in compared)
    wrong = path.replace(badge_key, badge_key[:-1] + ("0" if badge_key[-1] != "0" else "1"))
    compared.clear()
    assert (await edge.client.get(wrong)).status == 404
    assert compared, "a wrong badge key is compared in constant time too"


async def test_a_unique_key_is_compared_in_constant_time(edge, compared):
    check = await edge.add_check(name="web")
    code = unique_key(check.id)
    r = await edge.client.get(f"/api/v3/checks/{code}", headers={"X-Api-Key": edge.project.api_key_readonly})
    assert r.status == 200 and (await r.json())["name"] == "web"
    assert (code.encode(), code.encode()) in compared
