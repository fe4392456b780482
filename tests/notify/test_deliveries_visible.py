"""Deliveries are visible: the notifier's outcomes go through the log and the projector into
ClickHouse (real chdb), and the Management API lists them per check; /metrics counts them."""

from __future__ import annotations

import asyncio

import pytest

from ingest.app import create_app
from projector import deliveries
from tests.edge.server import EdgeTestServer
from tests.notify.receivers import http_receiver
from tests.notify.rig import rig

pytestmark = pytest.mark.clickhouse


async def test_a_checks_notifications_are_listed_with_their_outcome(tmp_path, clickhouse, aiohttp_client):
    async with rig(tmp_path, PINGSTREAM_NOTIFY_RETRY_S="0.5") as r, http_receiver() as rx:
        rx.status["/broken"] = 503
        ok = await r.channel(name="ops", kind="webhook", url=rx.url + "/ok")
        broken = await r.channel(name="pager", kind="webhook", url=rx.url + "/broken")
        check = await r.check(name="job")
        stop = asyncio.Event()
        projecting = asyncio.create_task(deliveries.run(r.log, clickhouse, stop))
        try:
            await r.start(first_backoff_s=0.1)
            t = await r.transition(check, "up", "down")
            await r.wait_deliveries(2)
            client = await aiohttp_client(EdgeTestServer(create_app(r.config, r.log, r.registry, clickhouse)))
            for _ in range(100):
                resp = await client.get(f"/api/v3/checks/{check.id}/notifications/",
                                        headers={"X-Api-Key": r.project.api_key})
                assert resp.status == 200
                found = (await resp.json())["notifications"]
                if len(found) == 2:
                    break
                await asyncio.sleep(0.1)
            by_channel = {n["channel"]: n for n in found}
            good, bad = by_channel[ok.id], by_channel[broken.id]
            assert (good["status"], good["attempts"], good["error"], good["event"], good["kind"]) == (
                "delivered", 1, None, "down", "webhook")
            assert good["channel_name"] == "ops" and good["alert_id"] == t.event_id
            assert bad["status"] == "failed" and bad["attempts"] >= 2 and bad["error"] == "HTTP 503"
            assert good["date"] == t.at.replace(microsecond=0).isoformat()
            text = await (await client.get("/metrics")).text()
            assert 'pingstream_notifications_total{kind="webhook",status="delivered"}' in text
            assert 'pingstream_notifications_total{kind="webhook",status="failed"}' in text
            resp = await client.get(f"/api/v3/checks/{check.id}/notifications/",
                                    headers={"X-Api-Key": r.project.api_key_readonly})
            assert resp.status == 401
        finally:
            stop.set()
            await asyncio.wait_for(projecting, 20)
