"""Two projectors in one group on the real Kafka broker, one ClickHouse: a member dies in the middle of a batch.

The dead member journaled its batch and wrote part of it (its pings and their runs, through the rollup views),
not its check_state, and committed nothing. The survivor, already running, is given the dead member's partitions
by the group's rebalance and reads them again from the committed offsets. It must write that batch as the dead
one cut it, under the same tokens, or the runs it holds are counted twice in the rollups (``runs`` and ``pings``
merge a row written twice by its key; an ``AggregatingMergeTree`` cannot).

Both members run in this process on one chdb, as two processes share a ClickHouse server in the distributed mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest

from runtime.config import Config
from projector import service as projector_service
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, PingEvent, Transition, encode, utcnow, uuid7

PROJECT = "019ab7ef-0000-7000-8000-000000000002"
CHECKS = 40


def _shared(caplog, n: int) -> bool:
    """Whether the last ``n`` partition counts the members logged are ``n`` shares of all the partitions (a member
    alone in the group first logs all of them)."""
    shares = [int(r.getMessage().split()[2]) for r in caplog.records
              if r.getMessage().startswith("projector assignment:")][-n:]
    return len(shares) == n and sum(shares) == len(projector_service.TOPICS) * 4


@pytest.mark.parametrize("n_members", [2, 3])
async def test_a_member_dying_mid_batch_has_its_batch_written_once_by_the_members_given_its_partitions(
        n_members, kafka_log, clickhouse, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="projector")
    monkeypatch.setattr(projector_service, "GROUP", f"projector-{uuid7()}")
    stalled = asyncio.Event()  # the doomed member is stuck before its check_state insert
    never = asyncio.Event()
    members = []

    class Member(projector_service.Projector):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.doomed = not members  # the first member made dies in its first batch with pings
            members.append(self)

        async def insert(self, table, data, token, into=None):
            if self.doomed and table == "check_state":
                stalled.set()
                await never.wait()  # until cancelled: killed with its check_state not written
            await super().insert(table, data, token, into)

    monkeypatch.setattr(projector_service, "Projector", Member)
    config = Config.from_env({}, data_dir=tmp_path)
    stop = asyncio.Event()
    doomed = asyncio.create_task(projector_service.run(config, kafka_log, clickhouse, stop))
    survivors = [asyncio.create_task(projector_service.run(config, kafka_log, clickhouse, stop))
                 for _ in range(n_members - 1)]
    try:
        # Both members in the group, each with its share of the partitions, before any ping.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _shared(caplog, n_members):
            await asyncio.sleep(0.1)
        assert _shared(caplog, n_members), "the members did not share the partitions"
        checks = [str(uuid7()) for _ in range(CHECKS)]
        now = utcnow()
        for i, c in enumerate(checks):  # a run per check: a start, then its success 2 s later
            for kind, at in (("start", now), ("success", now + timedelta(seconds=2))):
                e = PingEvent(event_id=uuid7(), check_id=c, project_id=PROJECT, kind=kind, received_at=at)
                await kafka_log.produce(TOPIC_PINGS, encode(e), key=c.encode())
        await asyncio.wait_for(stalled.wait(), 60)
        doomed.cancel()  # its consumer leaves the group: the survivor is given its partitions
        await asyncio.gather(doomed, return_exceptions=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            [(n,)] = await clickhouse.query("SELECT sum(n_pings) FROM check_state FINAL")
            if n == 2 * CHECKS:
                break
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        never.set()
        await asyncio.wait_for(asyncio.gather(doomed, *survivors, return_exceptions=True), 60)
    [(n,)] = await clickhouse.query("SELECT sum(n_pings) FROM check_state FINAL")
    [(pings,)] = await clickhouse.query("SELECT count() FROM pings FINAL")
    [(runs,)] = await clickhouse.query("SELECT count() FROM runs FINAL")
    rolled = {table: (await clickhouse.query(f"SELECT countMerge(runs) FROM {table}"))[0][0]
              for table in ("durations_hourly", "durations_daily")}
    assert (n, pings, runs) == (2 * CHECKS, 2 * CHECKS, CHECKS)
    assert rolled == {"durations_hourly": CHECKS, "durations_daily": CHECKS}, "runs counted twice in the rollups"
    assert any("their last journaled batch first" in r.getMessage() for r in caplog.records)


async def test_a_partitions_range_is_read_outside_any_group(kafka_log):
    for i in range(10):
        await kafka_log.produce(TOPIC_PINGS, f"r{i}".encode(), partition=1)
    await kafka_log.produce(TOPIC_PINGS, b"other", partition=0)
    records = await kafka_log.read_range(TOPIC_PINGS, 1, 3, 6)
    assert [(r.topic, r.partition, r.offset, r.value) for r in records] == [
        (TOPIC_PINGS, 1, o, f"r{o}".encode()) for o in range(3, 7)]


async def test_three_projectors_fold_a_checks_pings_and_transitions_into_one_state(kafka_log, clickhouse, tmp_path,
                                                                                   monkeypatch, caplog):
    """Three projectors in one group, each check pinged, then called down by the monitor (a transition), then pinged
    again. The member given a check's pings must be the one given its transitions: a member folding the pings alone
    writes the check's state last without the transition (its transitions offset still -1) and over the other's.
    (aiokafka's round robin gave pings 0 and transitions 0 to different members of three.)"""
    caplog.set_level(logging.INFO, logger="projector")
    monkeypatch.setattr(projector_service, "GROUP", f"projector-{uuid7()}")
    config = Config.from_env({}, data_dir=tmp_path)
    stop = asyncio.Event()
    members = [asyncio.create_task(projector_service.run(config, kafka_log, clickhouse, stop)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _shared(caplog, 3):
            await asyncio.sleep(0.1)
        assert _shared(caplog, 3), "the members did not share the partitions"
        checks = [str(uuid7()) for _ in range(CHECKS)]
        t0 = utcnow() - timedelta(minutes=10)

        async def ping_all(at) -> None:
            for c in checks:
                e = PingEvent(event_id=uuid7(), check_id=c, project_id=PROJECT, kind="success", received_at=at)
                await kafka_log.produce(TOPIC_PINGS, encode(e), key=c.encode())

        async def folded(sql: str, n: int) -> None:
            deadline = time.monotonic() + 60
            while (await clickhouse.query(sql))[0][0] != n:
                assert time.monotonic() < deadline, sql
                await asyncio.sleep(0.2)

        await ping_all(t0)
        await folded("SELECT countIf(n_pings = 1) FROM check_state FINAL", CHECKS)
        for c in checks:  # the monitor: each check missed its deadline
            down = Transition(event_id=uuid7(), check_id=c, project_id=PROJECT, from_status="up", to_status="down",
                              at=t0 + timedelta(minutes=2), reason="missed deadline", from_base="up", to_base="down")
            await kafka_log.produce(TOPIC_TRANSITIONS, encode(down), key=c.encode())
        await folded("SELECT countIf(status = 'down') FROM check_state FINAL", CHECKS)
        await ping_all(t0 + timedelta(minutes=5))
        await folded("SELECT countIf(n_pings = 2) FROM check_state FINAL", CHECKS)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*members, return_exceptions=True), 60)
    states = await clickhouse.query("SELECT status, n_pings, transitions_offset >= 0 FROM check_state FINAL")
    assert sorted(set(states)) == [("up", 2, 1)], "a check's state was written without its transition"
    [(flips,)] = await clickhouse.query("SELECT count() FROM transitions FINAL")
    assert flips == CHECKS
