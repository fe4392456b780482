"""Distributed mode on the real Kafka broker: 2 edges, 2 monitors and a projector, one per process.

Under load one monitor and the projector are killed with -9: the surviving
monitor takes over the dead one's partitions (consumer-group rebalance), the
projector restarts from its committed offsets. Afterwards: every ping answered
200 is in ClickHouse exactly once, every silent check went down exactly once
(no deadline missed across the rebalance), no steady check was called down,
and no transition was emitted twice.

Two projectors in one group need one ClickHouse they both write to: a server
(``PINGSTREAM_CLICKHOUSE=http://...``). With embedded chdb (one process per data
path) a single projector process is killed and restarted instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections import Counter, defaultdict

import aiohttp

from runtime.eventlog.kafka import KafkaEventLog
from schemas.events import TOPIC_TRANSITIONS, Transition, decode
from bench.procs import parse_keys, run_cli, sql

STEADY, SILENT = 30, 12
TIMEOUT_S, GRACE_S = 3, 2


async def _create_checks(session, edge, api_key: str, n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        r = await session.post(
            f"{edge.url}/api/v3/checks/",
            json={"name": f"{prefix}-{i}", "timeout": TIMEOUT_S, "grace": GRACE_S},
            headers={"X-Api-Key": api_key},
        )
        assert r.status == 201, await r.text()
        ids.append((await r.json())["uuid"])
    return ids


async def _read_transitions(bootstrap: str, prefix: str) -> list[Transition]:
    log = KafkaEventLog(bootstrap, prefix=prefix)
    await log.start()
    consumer = log.consumer([TOPIC_TRANSITIONS], group=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets()
        out, seen = [], Counter()
        deadline = time.monotonic() + 30
        while any(seen[tp.partition] < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for r in await consumer.getmany(max_records=5000, timeout_ms=500):
                seen[r.partition] = r.offset + 1
                if isinstance(e := decode(r.value), Transition):
                    out.append(e)
        return out
    finally:
        await consumer.close()
        await log.close()


async def test_two_edges_two_monitors_kill_nine_under_load(kafka_bootstrap, services, tmp_path):
    prefix = f"d{uuid.uuid4().hex[:8]}."
    common = {
        "PINGSTREAM_KAFKA": kafka_bootstrap,
        "PINGSTREAM_KAFKA_PREFIX": prefix,
        "PINGSTREAM_PARTITIONS": "8",
        "PINGSTREAM_MIN_TIMEOUT_S": "1",
        "PINGSTREAM_TICK_INTERVAL_S": "0.2",
    }
    server = os.environ.get("PINGSTREAM_CLICKHOUSE", "")
    projector_env = {**common, "PINGSTREAM_DATA": str(tmp_path / "projector")}
    if server.startswith("http"):
        projector_env["PINGSTREAM_CLICKHOUSE_DATABASE"] = f"dist_{uuid.uuid4().hex[:8]}"
    keys = parse_keys(run_cli("project", "create", "fleet", env={**common, "PINGSTREAM_DATA": str(tmp_path / "cli")}))

    edges = [
        services("ingest", {**common, "PINGSTREAM_DATA": str(tmp_path / f"edge{i}"), "PINGSTREAM_CLICKHOUSE": "off"},
                 port=True)
        for i in range(2)
    ]
    monitors = [services("monitor", {**common, "PINGSTREAM_DATA": str(tmp_path / f"monitor{i}")}) for i in range(2)]
    projectors = [services("projector", projector_env)]
    if server.startswith("http"):
        projectors.append(services("projector", projector_env))

    acked: dict[str, int] = Counter()  # check id -> pings answered 200
    acked_bodies: set[str] = set()
    statuses = Counter()
    seq = itertools.count()

    async with aiohttp.ClientSession() as session:
        steady = await _create_checks(session, edges[0], keys["api_key"], STEADY, "steady")
        silent = await _create_checks(session, edges[1], keys["api_key"], SILENT, "silent")
        # Edge 0 learns of edge 1's checks through the registry topic, within a second.
        created = time.monotonic()
        while (await session.get(f"{edges[0].url}/ping/{silent[-1]}")).status != 200:
            assert time.monotonic() - created < 1.0, "a check made on one edge was not pingable on the other in 1 s"
            await asyncio.sleep(0.02)
        acked[silent[-1]] += 1  # that successful probe is a ping too
        statuses[200] += 1

        async def ping(check_id: str) -> None:
            n = next(seq)
            body = f"p{n}"
            edge = edges[n % 2]
            try:
                r = await session.post(f"{edge.url}/ping/{check_id}", data=body.encode())
                status = r.status
                await r.read()
            except aiohttp.ClientError:
                status = "error"
            statuses[status] += 1
            if status == 200:
                acked[check_id] += 1
                acked_bodies.add(body)

        async def load(check_ids: list[str], seconds: float, every_s: float = 0.5) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await asyncio.gather(*(ping(c) for c in check_ids))
                await asyncio.sleep(every_s)

        # Everyone pings for a while, so every check is up and has a deadline.
        await load(steady + silent, 3)
        silent_since = time.time()
        steady_load = asyncio.create_task(load(steady, 22))
        await asyncio.sleep(1.5)
        monitors[0].kill()  # its partitions (and the silent checks' deadlines there) must move
        projectors[0].kill()
        await asyncio.sleep(1.5)
        projectors[0].start()
        await steady_load

    # Every silent check goes down (late by the rebalance at most), none of the steady ones.
    deadline = time.monotonic() + 45
    while True:
        transitions = await _read_transitions(kafka_bootstrap, prefix)
        downs = {t.check_id for t in transitions if t.to_status == "down"}
        if set(silent) <= downs or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert statuses.keys() <= {200}, f"pings not answered 200: {statuses}"
    assert set(silent) <= downs, f"missed deadlines: {len(set(silent) - downs)} silent checks never went down"
    assert not downs & set(steady), "a steady check was called down"
    # Re-emissions after a crash carry the same event id; nothing is emitted twice under two ids.
    unique = {t.event_id: t for t in transitions}
    per_key = Counter((t.check_id, t.from_status, t.to_status, t.at) for t in unique.values())
    assert max(per_key.values()) == 1, "a transition was emitted twice"
    down_at = defaultdict(list)
    for t in unique.values():
        if t.to_status == "down":
            down_at[t.check_id].append(t.at.timestamp())
    assert all(len(v) == 1 for v in down_at.values()), "a silent check went down twice"
    assert all(v[0] >= silent_since + TIMEOUT_S for v in down_at.values()), "down before its deadline"

    # Let the projector drain (the restarted one gets its partitions back only once the killed
    # member's session expired and the group rebalanced: seconds, sometimes tens of them), stop it,
    # and count what ClickHouse holds. Late is not lost: a ping missing after the wait fails below.
    total = sum(acked.values())
    drained = time.monotonic() + 60
    while time.monotonic() < drained:
        [seen] = sql(projector_env, "SELECT uniqExact(body) AS n FROM pings WHERE startsWith(body, 'p')")
        if int(seen["n"]) >= len(acked_bodies):
            break
        await asyncio.sleep(1)
    for p in projectors:
        p.stop()
    env = projectors[0].env
    [row] = sql(env, "SELECT count() AS n, uniqExact(event_id) AS ids FROM pings FINAL")
    bodies = {r["body"] for r in sql(env, "SELECT body FROM pings FINAL WHERE startsWith(body, 'p')")}
    assert row["n"] == row["ids"], "duplicate ping rows"
    assert acked_bodies <= bodies, f"{len(acked_bodies - bodies)} acknowledged pings lost"
    assert int(row["n"]) >= total
    [dup] = sql(env, "SELECT count() AS n FROM (SELECT body FROM pings FINAL GROUP BY body HAVING count() > 1)")
    assert int(dup["n"]) == 0
    downs_ch = sql(env, "SELECT check_id, count() AS n FROM transitions FINAL WHERE to_status = 'down' GROUP BY check_id")
    assert {r["check_id"] for r in downs_ch} == set(silent)
    assert all(int(r["n"]) == 1 for r in downs_ch)
    print(f"distributed: {total} pings acked over 2 edges, 0 lost, 0 duplicated; "
          f"{len(silent)} silent checks down once each; statuses {dict(statuses)}")
