"""Idempotency-Key on the real Kafka broker: a ping retried at another edge is stored once.

Two edges (each its own producer, its own registry view followed from the log), the projector
into real chdb and the monitor, each on its own KafkaEventLog. A start and a success are both
sent again, each to the other edge: ClickHouse has each once, one run, and the monitor says
started -> up once (a second start would have shown the check started again), also after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from ingest.app import create_app
from monitor import service as monitor_service
from projector import service as projector_service
from runtime.config import Config
from runtime.eventlog.kafka import KafkaEventLog
from runtime.registry import Registry, create_project, follow, save_check
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, CheckConfig, PingEvent, Transition, decode, utcnow, uuid7
from tests.edge.server import EdgeTestServer


async def _events(log: KafkaEventLog, topic: str, kind) -> list:
    consumer = log.consumer([topic], group=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets()
        seen: dict = {tp: 0 for tp in ends}
        out = []
        deadline = time.monotonic() + 20
        while any(seen[tp] < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for r in await consumer.getmany(max_records=1000, timeout_ms=200):
                seen[(r.topic, r.partition)] = r.offset + 1
                if isinstance(e := decode(r.value), kind):
                    out.append(e)
        return out
    finally:
        await consumer.close()


async def test_a_ping_retried_at_another_edge_is_stored_once(kafka_bootstrap, kafka_prefix, clickhouse, tmp_path,
                                                              aiohttp_client):
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path)})
    logs = [KafkaEventLog(kafka_bootstrap, default_partitions=4, prefix=kafka_prefix) for _ in range(4)]
    edge_a_log, edge_b_log, projector_log, monitor_log = logs
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    try:
        for log in logs:
            await log.start()
        registry_a = Registry()
        project = await create_project(edge_a_log, "test", registry_a)
        check = CheckConfig(id=str(uuid7()), project_id=project.id, created=utcnow())
        await save_check(edge_a_log, registry_a, check)
        registry_b, ready = Registry(), asyncio.Event()  # edge B learns the check from the log
        tasks.append(asyncio.create_task(follow(registry_b, edge_b_log, ready, stop, name="edge b registry")))
        await asyncio.wait_for(ready.wait(), 30)
        assert check.id in registry_b.checks
        edge_a = await aiohttp_client(EdgeTestServer(create_app(config, edge_a_log, registry_a, clickhouse=None)))
        edge_b = await aiohttp_client(EdgeTestServer(create_app(config, edge_b_log, registry_b, clickhouse=None)))
        tasks.append(asyncio.create_task(projector_service.run(config, projector_log, clickhouse, stop)))
        monitor_stop = asyncio.Event()
        monitor = asyncio.create_task(monitor_service.run(config, monitor_log, monitor_stop))
        tasks.append(monitor)

        async def ping(edge, path: str, key: str | None) -> None:
            r = await edge.get(f"/ping/{check.id}{path}", headers={"Idempotency-Key": key} if key else {})
            assert (r.status, await r.text()) == (200, "OK")

        await ping(edge_a, "/start", "run-1")
        await ping(edge_b, "", "run-1-done")
        await ping(edge_b, "/start", "run-1")  # retries, each at the other edge
        await ping(edge_a, "", "run-1-done")
        await ping(edge_a, "/fail", None)  # once this is in, the retries before it were read
        pings = await _events(projector_log, TOPIC_PINGS, PingEvent)
        assert len(pings) == 5 and len({p.event_id for p in pings}) == 3

        deadline = time.monotonic() + 60
        while True:
            kinds = await clickhouse.query(
                "SELECT kind FROM pings FINAL WHERE check_id = {c:UUID} ORDER BY n", {"c": check.id})
            state = await clickhouse.query(
                "SELECT n_pings, started FROM check_state FINAL WHERE check_id = {c:UUID}", {"c": check.id})
            flips = [(t.from_status, t.to_status) for t in await _events(monitor_log, TOPIC_TRANSITIONS, Transition)
                     if t.check_id == check.id]
            if (len(kinds) >= 3 and state and state[0][0] >= 3 and ("up", "down") in flips) \
                    or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert [k for (k,) in kinds] == ["start", "success", "fail"]
        assert state == [(3, 0)]
        [(runs,)] = await clickhouse.query("SELECT count() FROM runs FINAL WHERE check_id = {c:UUID}", {"c": check.id})
        assert runs == 1
        assert flips == [("new", "started"), ("started", "up"), ("up", "down")]

        # The monitor restarts (its memory of keys comes back from its state topic); the start is
        # retried once more, then a success without a key: down -> up, never started again.
        monitor_stop.set()
        await asyncio.wait_for(monitor, 30)
        await ping(edge_b, "/start", "run-1")
        await ping(edge_b, "", None)
        tasks.append(asyncio.create_task(monitor_service.run(config, monitor_log, stop)))
        deadline = time.monotonic() + 60
        while len(flips) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            flips = [(t.from_status, t.to_status) for t in await _events(monitor_log, TOPIC_TRANSITIONS, Transition)
                     if t.check_id == check.id]
        assert flips == [("new", "started"), ("started", "up"), ("up", "down"), ("down", "up")]
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        for log in logs:
            await log.close()
