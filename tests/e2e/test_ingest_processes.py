"""`pingstream ingest` with PINGSTREAM_EDGE_PROCESSES=2 on the real Kafka broker: two supervised edges
share one port (SO_REUSEPORT), an edge killed with -9 is restarted, every ping answered 200 is in the
log, and a SIGTERM stops both gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp

from runtime.eventlog.kafka import KafkaEventLog
from schemas.events import TOPIC_PINGS, PingEvent, decode
from bench.procs import parse_keys, run_cli
from tests.e2e.test_kill import _children, _wait_children


async def _bodies_in_log(bootstrap: str, prefix: str) -> list[str]:
    log = KafkaEventLog(bootstrap, prefix=prefix)
    await log.start()
    consumer = log.consumer([TOPIC_PINGS], group=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets()
        seen: dict[int, int] = {}
        bodies = []
        deadline = time.monotonic() + 30
        while any(seen.get(tp.partition, 0) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for r in await consumer.getmany(max_records=5000, timeout_ms=500):
                seen[r.partition] = r.offset + 1
                if isinstance(e := decode(r.value), PingEvent):
                    bodies.append(e.body.decode())
        return bodies
    finally:
        await consumer.close()
        await log.close()


async def test_ingest_runs_supervised_edges_on_one_port(kafka_bootstrap, services, tmp_path):
    prefix = f"i{uuid.uuid4().hex[:8]}."
    common = {"PINGSTREAM_KAFKA": kafka_bootstrap, "PINGSTREAM_KAFKA_PREFIX": prefix, "PINGSTREAM_PARTITIONS": "4"}
    keys = parse_keys(run_cli("project", "create", "edges", env={**common, "PINGSTREAM_DATA": str(tmp_path / "cli")}))
    ingest = services("ingest", {**common, "PINGSTREAM_DATA": str(tmp_path / "edge"), "PINGSTREAM_CLICKHOUSE": "off",
                                 "PINGSTREAM_EDGE_PROCESSES": "2"}, port=True)
    children = await _wait_children(ingest, 2)
    assert sorted(children.values()) == ["ingest", "ingest"]
    url = f"{ingest.url}/ping/{keys['ping_key']}/edges"
    acknowledged: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.get(f"{url}?create=1") as answer:
            assert answer.status == 201
        stop = asyncio.Event()

        async def pinger(worker: int) -> None:
            n = 0
            while not stop.is_set():
                body = f"w{worker}-{n}"
                n += 1
                try:
                    # A connection of its own each time: SO_REUSEPORT spreads connections over the edges.
                    async with http.post(url, data=body, headers={"Connection": "close"}) as answer:
                        if answer.status == 200:
                            acknowledged.append(body)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    await asyncio.sleep(0.01)  # the edge holding the connection was killed: not acknowledged

        workers = [asyncio.create_task(pinger(w)) for w in range(4)]
        try:
            await asyncio.sleep(1.0)
            victim = min(children)
            os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(0.5)
            during = len(acknowledged)
            await asyncio.sleep(1.0)
            assert len(acknowledged) > during, "the surviving edge must go on answering"
            back = await _wait_children(ingest, 2)
            assert victim not in back
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)
    assert any("restarting in" in line for line in ingest.output), ingest.tail()
    bodies = await _bodies_in_log(kafka_bootstrap, prefix)
    missing = set(acknowledged) - set(bodies)
    assert len(acknowledged) > 50
    assert not missing, f"{len(missing)} acknowledged pings are not in the log"
    pid = ingest.proc.pid
    assert ingest.stop() == 0
    assert not _children(pid)
