"""The notifier on a real Kafka broker (the session's): starts at the end for a new group, delivers,
and resumes from its committed offsets after a restart."""

from __future__ import annotations

import asyncio

import pytest
from standardwebhooks import Webhook

from tests.notify.receivers import http_receiver
from tests.notify.rig import rig

pytestmark = pytest.mark.kafka


async def test_it_delivers_from_kafka_and_resumes_where_it_stopped(tmp_path, kafka_log):
    async with rig(tmp_path, event_log=kafka_log) as r, http_receiver() as rx:
        hook = await r.channel(kind="webhook", url=rx.url + "/k")
        check = await r.check(name="job")
        history = await r.transition(check, "up", "down")  # before the group existed: never sent
        await r.start()
        await asyncio.sleep(3)  # the group's first assignment and commit (Kafka joins take a moment)
        first = await r.transition(check, "down", "up", "success ping")
        await rx.wait_for(lambda: len(rx.received) >= 1, timeout_s=30)
        await r.halt()
        while_stopped = await r.transition(check, "up", "down")
        await r.start()
        await rx.wait_for(lambda: len(rx.received) >= 2, timeout_s=60)
        await asyncio.sleep(0.5)
        keys = [x.headers["Idempotency-Key"] for x in rx.received]
        assert keys == [first.event_id, while_stopped.event_id] and history.event_id not in keys
        for x in rx.received:
            Webhook(hook.secret).verify(x.body, x.headers)
