"""Alerts end to end through `pingstream up`: a channel created over the API, a check that fails
by a ping with an exit status and a body, the monitor's transition, the notifier's signed webhook
to a local receiver, and the delivery listed by the API."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from standardwebhooks import Webhook

from tests.notify.receivers import http_receiver


async def test_a_failing_job_reaches_the_webhook_with_its_context(system):
    s = system(PINGSTREAM_WEBHOOK_ALLOW_PRIVATE="1")
    key = {"X-Api-Key": s.keys["api_key"]}
    async with http_receiver() as rx, aiohttp.ClientSession() as session:
        r = await session.post(f"{s.url}/api/v3/channels/", headers=key,
                               json={"name": "ops", "kind": "webhook", "url": rx.url + "/alerts"})
        assert r.status == 201, await r.text()
        hook = await r.json()
        r = await session.post(f"{s.url}/api/v3/checks/", headers=key,
                               json={"name": "Nightly backup", "slug": "nightly", "tags": "prod", "channels": "*"})
        check = await r.json()
        assert check["channels"] == hook["id"]
        await session.get(f"{s.url}/ping/{check['uuid']}")  # new → up: no alert, as upstream
        await asyncio.sleep(0.5)
        sent = time.monotonic()
        await session.post(f"{s.url}/ping/{check['uuid']}/3", data=b"pg_dump: disk full")
        await rx.wait_for(lambda: rx.at("/alerts"), timeout_s=20)
        latency = time.monotonic() - sent
        await session.get(f"{s.url}/ping/{check['uuid']}")
        await rx.wait_for(lambda: len(rx.at("/alerts")) >= 2, timeout_s=20)
        down, up = rx.at("/alerts")[:2]
        for got in (down, up):
            Webhook(hook["secret"]).verify(got.body, got.headers)
        doc = json.loads(down.body)
        assert (doc["event"], doc["check"]["name"], doc["check"]["slug"], doc["check"]["tags"]) == (
            "down", "Nightly backup", "nightly", ["prod"])
        assert doc["check"]["last_ping"]["exit_status"] == 3
        assert doc["check"]["last_ping"]["body"] == "pg_dump: disk full"
        assert json.loads(up.body)["event"] == "up"
        print(f"fail ping → webhook received in {latency * 1000:.0f} ms")
        for _ in range(100):
            r = await session.get(f"{s.url}/api/v3/checks/{check['uuid']}/notifications/", headers=key)
            found = (await r.json())["notifications"]
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
        assert [(n["event"], n["status"], n["channel"]) for n in found] == [
            ("up", "delivered", hook["id"]), ("down", "delivered", hook["id"])]
