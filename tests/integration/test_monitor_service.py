"""The monitor service on a real SQLite log, with real (small) time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from monitor import service
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import (
    TOPIC_CHECKS,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    CheckConfig,
    CheckUpserted,
    IngestGap,
    PingEvent,
    Tick,
    Transition,
    decode,
    encode,
    utcnow,
    uuid7,
)

CHECK = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"


class Edge:
    """Plays the edge: ticks to every partition (can be silenced) and pings."""

    def __init__(self, log: SqliteEventLog, interval_s: float) -> None:
        self.log, self.interval_s = log, interval_s
        self.ticking = asyncio.Event()
        self.ticking.set()
        self.stop = asyncio.Event()

    async def tick_forever(self) -> None:
        partitions = await self.log.partitions(TOPIC_PINGS)
        while not self.stop.is_set():
            await self.ticking.wait()
            at = utcnow()
            for p in partitions:
                await self.log.produce(TOPIC_PINGS, encode(Tick(event_id=uuid7(), at=at, partition=p)), partition=p)
            await asyncio.sleep(self.interval_s)

    async def ping(self, kind: str = "success") -> PingEvent:
        event = PingEvent(event_id=uuid7(), check_id=CHECK, project_id=PROJECT, kind=kind, received_at=utcnow())
        await self.log.produce(TOPIC_PINGS, encode(event), key=CHECK.encode())
        return event


async def read_all(log: SqliteEventLog) -> list:
    consumer = log.consumer([TOPIC_TRANSITIONS], group=None)
    await consumer.start()
    try:
        out = []
        while records := await consumer.getmany(timeout_ms=0):
            out += [decode(r.value) for r in records]
        return out
    finally:
        await consumer.close()


def flips(events) -> list[tuple[str, str]]:
    return [(e.from_status, e.to_status) for e in events if isinstance(e, Transition)]


async def wait_for(log, predicate, timeout_s: float = 6.0) -> list:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        events = await read_all(log)
        if predicate(events) or loop.time() > end:
            return events
        await asyncio.sleep(0.05)


@pytest.fixture
async def world(tmp_path):
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=2)
    await log.start()
    config = Config.from_env({}, data_dir=tmp_path, min_timeout_s=1, tick_interval_s=0.1, partitions=2)
    check = CheckConfig(id=CHECK, project_id=PROJECT, timeout_s=1, grace_s=1, created=utcnow())
    await log.produce(TOPIC_CHECKS, encode(CheckUpserted(event_id=uuid7(), check=check)), key=CHECK.encode())
    edge = Edge(log, config.tick_interval_s)
    ticker = asyncio.create_task(edge.tick_forever())
    yield log, config, edge
    edge.stop.set()
    edge.ticking.set()
    await ticker
    await log.close()


class Running:
    def __init__(self, config, log) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(service.run(config, log, self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def test_up_down_restart_and_ingest_gap(world, caplog):
    caplog.set_level(logging.INFO)
    log, config, edge = world
    monitor = Running(config, log)

    # new -> up on the first success, then grace and down after timeout + grace of stream time
    first = await edge.ping()
    events = await wait_for(log, lambda ev: ("grace", "down") in flips(ev))
    assert flips(events) == [("new", "up"), ("up", "grace"), ("grace", "down")]
    up, grace, down = [e for e in events if isinstance(e, Transition)]
    assert up.cause_event_id == first.event_id and up.project_id == PROJECT
    assert (down.at - up.at).total_seconds() >= 2.0  # never before timeout + grace
    assert (grace.at - up.at).total_seconds() >= 1.0

    # back up; restart the monitor while a deadline is pending: nothing old again, the deadline kept
    await edge.ping()
    await wait_for(log, lambda ev: flips(ev)[-1:] == [("down", "up")])
    await monitor.halt()
    monitor = Running(config, log)
    events = await wait_for(log, lambda ev: len(flips(ev)) >= 6)
    await asyncio.sleep(0.5)  # anything re-emitted would show up by now
    events = await read_all(log)
    assert flips(events) == [("new", "up"), ("up", "grace"), ("grace", "down")] * 1 + [
        ("down", "up"),
        ("up", "grace"),
        ("grace", "down"),
    ]
    assert len({e.event_id for e in events}) == len(events)

    # the edge goes deaf for longer than timeout + grace: no down for the gap, an ingest_gap instead
    await edge.ping()
    await wait_for(log, lambda ev: flips(ev)[-1:] == [("down", "up")])
    edge.ticking.clear()
    await asyncio.sleep(3.0)
    assert flips(await read_all(log))[-1] == ("down", "up")
    edge.ticking.set()
    events = await wait_for(log, lambda ev: flips(ev)[-1:] == [("grace", "down")])
    gaps = [e for e in events if isinstance(e, IngestGap)]
    assert len(gaps) == 2  # one per partition
    gap_end = max(g.end for g in gaps)
    assert (gaps[0].end - gaps[0].start).total_seconds() >= 2.5
    late = [e for e in events if isinstance(e, Transition)][-2:]
    assert [(e.from_status, e.to_status) for e in late] == [("up", "grace"), ("grace", "down")]
    assert all(e.at > gap_end for e in late)  # evaluated from the time data resumed
    await monitor.halt()
    assert any("monitor:" in r.getMessage() for r in caplog.records)  # counts and rates are logged


async def test_a_poison_record_goes_to_the_dead_letter_topic_and_monitoring_goes_on(world):
    from runtime import deadletter
    from schemas.events import TOPIC_DEAD_LETTER

    log, config, edge = world
    monitor = Running(config, log)
    partition, offset = await log.produce(TOPIC_PINGS, b"\xff not an event", key=CHECK.encode())
    await edge.ping()
    events = await wait_for(log, lambda ev: ("new", "up") in flips(ev))
    assert ("new", "up") in flips(events)
    await monitor.halt()
    consumer = log.consumer([TOPIC_DEAD_LETTER], group=None)
    await consumer.start()
    try:
        [record] = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.close()
    letter = deadletter.decode(record.value)
    assert (letter.service, letter.topic, letter.partition, letter.offset) == ("monitor", TOPIC_PINGS, partition, offset)
    assert letter.value == b"\xff not an event" and letter.error


async def test_a_restarted_monitor_s_volume_gate_still_holds_a_drop(tmp_path):
    """The volume gate's history is in the state topic: a monitor restarted after three days of history
    holds a partial outage's missed deadlines as unknown (an ingest_anomaly), no downs, as before the restart."""
    from datetime import datetime, timedelta, timezone

    from monitor import store
    from schemas.events import IngestAnomaly

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(40)]
    quiet = set(ids[:14])
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    await log.start()
    config = Config.from_env({"PINGSTREAM_VOLUME_GATE": "1"}, data_dir=tmp_path, min_timeout_s=1,
                             tick_interval_s=0.1, partitions=1)
    produced = {"last": -1}

    async def minutes(day: int, first: int, last: int, silent: set[str] = frozenset()) -> None:
        sends = []
        for m in range(first, last):
            start = t0 + timedelta(days=-day, minutes=m)
            for i, check_id in enumerate(ids):
                if check_id not in silent:
                    ping = PingEvent(event_id=uuid7(), check_id=check_id, project_id=PROJECT, kind="success",
                                     received_at=start + timedelta(seconds=0.1 * i))
                    sends.append(log.produce(TOPIC_PINGS, encode(ping), key=check_id.encode()))
            for s in range(10, 60, 10):
                tick = Tick(event_id=uuid7(), at=start + timedelta(seconds=s), partition=0)
                sends.append(log.produce(TOPIC_PINGS, encode(tick), partition=0))
        for _, offset in await asyncio.gather(*sends):
            produced["last"] = max(produced["last"], offset)

    async def monitor_until_read():
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(config, log, stop, gap_threshold_s=1e9))
        loop = asyncio.get_running_loop()
        end = loop.time() + 30

        async def caught_up() -> bool:
            gates = (await store.load(log, {0})).gates
            return 0 in gates and gates[0].offset >= produced["last"] - 5  # (the ticks after the last ping)

        return stop, task, caught_up, end

    try:
        for check_id in ids:
            check = CheckConfig(id=check_id, project_id=PROJECT, timeout_s=60, grace_s=60,
                                created=t0 - timedelta(days=10))
            await log.produce(TOPIC_CHECKS, encode(CheckUpserted(event_id=uuid7(), check=check)),
                              key=check_id.encode())
        for day in (3, 2, 1):
            await minutes(day, -3, 14)
        await minutes(0, 0, 3)
        stop, task, caught_up, end = await monitor_until_read()
        while not await caught_up():
            assert asyncio.get_running_loop().time() < end, "the monitor did not read the history"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)  # the restart: a new monitor, its gate only from the state topic

        await minutes(0, 3, 8, quiet)  # a third of the fleet goes quiet for 5 minutes
        await minutes(0, 8, 14)
        stop, task, caught_up, end = await monitor_until_read()
        while not await caught_up():
            assert asyncio.get_running_loop().time() < end, "the monitor did not read the outage"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)

        events = await read_all(log)
        downs = [e for e in events if isinstance(e, Transition) and e.to_status == "down" and e.at >= t0]
        anomalies = [e for e in events if isinstance(e, IngestAnomaly)]
        assert downs == []
        assert anomalies and all(a.project_id == PROJECT and a.baseline == len(ids) for a in anomalies)
        assert sum(a.unknown for a in anomalies) >= len(quiet)
        ups = {e.check_id for e in events if isinstance(e, Transition) and e.to_status == "up" and e.at >= t0}
        assert ups == set(ids)  # back up on day 0 after the days' down, the quiet ones never down again
    finally:
        await log.close()


class _SlowRegistry:
    """The log, but its registry readers hand over what they read ``delay_s`` late, once caught up at start (a
    busy process's follower behind its pings consumer)."""

    def __init__(self, log: SqliteEventLog, delay_s: float) -> None:
        self._log, self._delay_s = log, delay_s

    def __getattr__(self, name):
        return getattr(self._log, name)

    def consumer(self, topics, group, **kw):
        consumer = self._log.consumer(topics, group, **kw)
        if topics != [TOPIC_CHECKS]:
            return consumer
        getmany, delay_s, started = consumer.getmany, self._delay_s, []

        async def slow(*a, **kw):
            records = await getmany(*a, **kw)
            if records and started:
                await asyncio.sleep(delay_s)
            started.append(True)
            return records

        consumer.getmany = slow
        return consumer


async def test_a_new_checks_first_pings_wait_for_its_plan(world):
    """A check created while the monitor runs, and pinged at once: its pings are judged by its plan (two
    failures to go down), not by the default one, however late the registry follower reads it."""
    log, config, edge = world
    monitor = Running(config, _SlowRegistry(log, 1.0))
    await edge.ping()
    await wait_for(log, lambda ev: ("new", "up") in flips(ev))
    fresh = CheckConfig(id=str(uuid7()), project_id=PROJECT, timeout_s=3600, grace_s=60, failure_threshold=2,
                        created=utcnow())
    await log.produce(TOPIC_CHECKS, encode(CheckUpserted(event_id=uuid7(), check=fresh)), key=fresh.id.encode())
    for kind in ("success", "fail"):
        event = PingEvent(event_id=uuid7(), check_id=fresh.id, project_id=PROJECT, kind=kind, received_at=utcnow())
        await log.produce(TOPIC_PINGS, encode(event), key=fresh.id.encode())
    events = await wait_for(log, lambda ev: any(e.check_id == fresh.id for e in ev if isinstance(e, Transition)))
    await asyncio.sleep(1.5)  # a down, were the failure judged by the default plan, is there by now
    events = await read_all(log)
    await monitor.halt()
    assert [(e.from_status, e.to_status) for e in events if isinstance(e, Transition) and e.check_id == fresh.id] \
        == [("new", "up")]  # one failure of two: still up
