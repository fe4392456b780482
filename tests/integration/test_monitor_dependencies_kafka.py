"""depends_on across monitors on the real Kafka broker: two monitors split the pings partitions,
the parent's records in a partition one owns, the child's in a partition the other owns. The
child's monitor reads the parent's transitions from the transitions topic: the child's down
while the parent is down is held (``dependency:<parent>``); once the parent is back, it is not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from monitor import service as monitor_service
from runtime.config import Config
from runtime.eventlog.kafka import KafkaEventLog
from runtime.registry import create_project, save_check
from schemas.events import (
    TOPIC_PINGS, TOPIC_TRANSITIONS, CheckConfig, PingEvent, Tick, Transition, encode, utcnow, uuid7,
)
from tests.integration.test_idempotency_kafka import _events

PARENT_PARTITION, CHILD_PARTITION = 0, 3  # apart under the range and the round-robin assignors alike
OWNS = re.compile(r"monitor owns partitions \[([0-9, ]*)\]")


def _owned(caplog) -> list[set[int]]:
    """The partition sets the monitors announced, in order."""
    out = []
    for r in caplog.records:
        m = OWNS.search(r.getMessage())
        if m:
            out.append({int(p) for p in m.group(1).split(",") if p.strip()})
    return out


async def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_child_is_held_while_its_parent_in_the_other_monitors_partitions_is_down(
        kafka_bootstrap, kafka_prefix, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor.service")
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path)}, min_timeout_s=1, tick_interval_s=0.1)
    logs = [KafkaEventLog(kafka_bootstrap, default_partitions=4, prefix=kafka_prefix) for _ in range(3)]
    edge, log_a, log_b = logs
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    try:
        for log in logs:
            await log.start()
        project = await create_project(edge, "deps")
        parent = CheckConfig(id=str(uuid7()), project_id=project.id, created=utcnow(), timeout_s=3600, grace_s=3600)
        child = CheckConfig(id=str(uuid7()), project_id=project.id, created=utcnow(), timeout_s=3600, grace_s=3600,
                            depends_on=(parent.id,))
        await save_check(edge, None, parent)
        await save_check(edge, None, child)
        partitions = await edge.partitions(TOPIC_PINGS)
        assert len(partitions) == 4

        async def tick_forever() -> None:
            while not stop.is_set():
                at = utcnow()
                await asyncio.gather(*(edge.produce(TOPIC_PINGS, encode(Tick(event_id=uuid7(), at=at, partition=p)),
                                                    partition=p) for p in partitions))
                await asyncio.sleep(0.1)

        async def ping(check: CheckConfig, kind: str) -> PingEvent:
            event = PingEvent(event_id=uuid7(), check_id=check.id, project_id=project.id, kind=kind,
                              received_at=utcnow())
            where = PARENT_PARTITION if check is parent else CHILD_PARTITION
            await edge.produce(TOPIC_PINGS, encode(event), key=check.id.encode(), partition=where)
            return event

        async def transitions(check: CheckConfig) -> list[Transition]:
            return [t for t in await _events(edge, TOPIC_TRANSITIONS, Transition) if t.check_id == check.id]

        tasks.append(asyncio.create_task(tick_forever()))
        tasks.append(asyncio.create_task(monitor_service.run(config, log_a, stop)))
        await _wait(lambda: _async(len(_owned(caplog)) >= 1), 60, "the first monitor's assignment")
        tasks.append(asyncio.create_task(monitor_service.run(config, log_b, stop)))

        async def split() -> bool:  # the two latest assignments that hold partitions: disjoint, covering every one
            # (A member may announce an empty assignment between its partitions revoked and its new ones: librdkafka
            # revokes before it assigns, and the other member's announcement may come between the two.)
            owned = _owned(caplog)
            held = [partitions for partitions in owned if partitions]
            return len(owned) >= 3 and len(held) >= 2 and not (held[-1] & held[-2]) \
                and held[-1] | held[-2] == {0, 1, 2, 3} \
                and (PARENT_PARTITION in held[-1]) != (CHILD_PARTITION in held[-1])
        await _wait(split, 90, "the two monitors to split the partitions")

        await ping(parent, "success")
        await ping(child, "success")
        await _wait(lambda: _nonempty(transitions(child)), 30, "the child up")
        await ping(parent, "fail")
        await _wait(lambda: _any_to(transitions(parent), "down"), 30, "the parent down")
        await asyncio.sleep(1.0)  # the child's monitor reads it from the transitions topic meanwhile
        await ping(child, "fail")
        downs = await _wait(lambda: _any_to(transitions(child), "down"), 30, "the child down")
        assert [t.held for t in downs] == [f"dependency:{parent.id}"]
        assert all(t.held is None for t in await transitions(parent))

        # The parent back up: the child's next down is its own, notified.
        await ping(parent, "success")
        await _wait(lambda: _any_to(transitions(parent), "up", after_down=True), 30, "the parent up again")
        await asyncio.sleep(1.0)
        await ping(child, "success")
        await ping(child, "fail")
        downs = await _wait(lambda: _count_to(transitions(child), "down", 2), 30, "the child's second down")
        assert [t.held for t in downs] == [f"dependency:{parent.id}", None]
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        for log in logs:
            await log.close()


async def _async(value):
    return value


async def _nonempty(coro):
    return await coro


async def _any_to(coro, status: str, after_down: bool = False):
    ts = await coro
    if after_down:
        downs = [i for i, t in enumerate(ts) if t.to_status == "down"]
        return [t for t in ts[downs[0] + 1:] if t.to_status == status] if downs else []
    return [t for t in ts if t.to_status == status]


async def _count_to(coro, status: str, n: int):
    found = [t for t in await coro if t.to_status == status]
    return found if len(found) >= n else []
