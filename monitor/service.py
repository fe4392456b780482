"""The monitor service: the thin I/O shell around ``monitor.transitions``.

Loop: read a batch of ``pingstream.pings`` (group ``pingstream-monitor``) →
move the stream clock → fold the events into check states → fire the
deadlines the clock passed → produce Transitions / IngestGaps (keyed by check,
awaiting the durable ack) → write the changed states → commit the offsets.
A crash anywhere re-reads the batch; the same transitions come out again with
the same ids (consumers dedupe), and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from runtime import deadletter, metrics
from runtime.config import Config
from runtime.eventlog.base import EventLog, TopicPartition
from runtime.registry import follow
from schemas.events import (
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    IngestGap,
    Paused,
    PingEvent,
    Resumed,
    Tick,
    Transition,
    decode,
    encode,
    stable_id,
)

from . import store
from .clock import DeadlineHeap, StreamClock
from .plans import PlanBook
from checks.schedule import to_datetime
from .transitions import CheckState, apply, expire, reconfigure

log = logging.getLogger(__name__)

GROUP = "pingstream-monitor"
_LOG_EVERY_S = 30.0
_COMPACT_EVERY_S = 300.0


def gap_threshold(config: Config) -> float:
    """Silence longer than this on a partition is an ingest gap: a few missed ticks, at least a second."""
    return max(5 * config.tick_interval_s, 1.0)


def _event_time(event) -> float | None:
    if isinstance(event, PingEvent):
        return event.received_at.timestamp()
    if isinstance(event, (Tick, Paused, Resumed)):
        return event.at.timestamp()
    return None


def _us(t: float) -> str:
    return str(round(t * 1_000_000))


class Monitor:
    """State of one running monitor: check states, clock, heap, and what the current batch changed."""

    def __init__(self, plans: PlanBook, clock: StreamClock) -> None:
        self.plans = plans
        self.clock = clock
        self.states: dict[str, CheckState] = {}
        self.heap = DeadlineHeap()
        self.out: list = []  # events for pingstream.transitions, in order
        self.dirty: set[str] = set()  # check ids whose state changed in this batch
        self.dirty_clock: set[int] = set()
        self.poison: list = []  # (record, exception) of this batch, for the dead-letter topic
        self.counts = {"records": 0, "transitions": 0, "gaps": 0, "errors": 0}

    def restore(self, states: dict[str, CheckState], clocks: dict[int, store.ClockRecord]) -> None:
        for check_id, state in states.items():
            check_id = sys.intern(check_id)
            self.states[check_id] = state
            self.heap.push(state.deadline, check_id)
        for p, c in clocks.items():
            self.clock.restore(p, c.watermark, c.gaps)

    def _put(self, check_id: str, old: CheckState | None, new: CheckState) -> None:
        self.states[check_id] = new
        if old is None or new.deadline != old.deadline:
            self.heap.push(new.deadline, check_id)
        if new is not old:
            self.dirty.add(check_id)

    def fold(self, record) -> None:
        try:
            self._fold(record)
        except Exception as exc:  # a poison record must not stop monitoring: dead-letter it and go on
            self.counts["errors"] += 1
            self.poison.append((record, exc))

    def _fold(self, record) -> None:
        event = decode(record.value)
        self.counts["records"] += 1
        at = _event_time(event)
        if at is None:
            return  # a type this version does not know, or not ours
        gap = self.clock.observe(record.partition, at)
        self.dirty_clock.add(record.partition)
        if gap is not None:
            start, end = gap
            self.counts["gaps"] += 1
            log.warning("ingest gap on %s/%d: no events for %.1fs", record.topic, record.partition, end - start)
            self.out.append(
                IngestGap(
                    event_id=stable_id("ingest_gap", str(record.partition), _us(start), _us(end)),
                    start=to_datetime(start),
                    end=to_datetime(end),
                    partition=record.partition,
                )
            )
        if isinstance(event, Tick):
            return
        check_id = sys.intern(event.check_id)
        old = self.states.get(check_id)
        plan = self.plans.get(check_id, event.project_id)
        new, transitions = apply(
            old, event, at, plan, position=(record.partition, record.offset), gaps=self.clock.gaps_of(record.partition)
        )
        self._put(check_id, old, new)
        self.out += transitions

    def reconfigure(self) -> None:
        """Apply registry changes: deleted checks are forgotten, changed plans move deadlines."""
        now = self.clock.now
        for check_id in self.plans.deleted:
            if self.states.pop(check_id, None) is not None:
                self.dirty.add(check_id)
        self.plans.deleted.clear()
        if now is None:
            return  # no stream time yet: keep the changes for later
        for check_id in self.plans.changed:
            old = self.states.get(check_id)
            if old is not None:
                new, transitions = reconfigure(old, now, self.plans.plans[check_id], check_id)
                self._put(check_id, old, new)
                self.out += transitions
        self.plans.changed.clear()

    def advance(self) -> None:
        """Fire every deadline the global clock has passed, earliest first."""
        now = self.clock.now
        if now is None:
            return
        for due, check_id in self.heap.pop_due(now):
            state = self.states.get(check_id)
            if state is None or state.deadline != due:
                continue  # stale heap entry (rescheduled or deleted check)
            plan = self.plans.get(check_id, "")  # "" only for a check the registry never had
            new, transitions = expire(state, now, plan, check_id, self.clock.gaps_of(state.partition))
            self._put(check_id, state, new)
            self.out += transitions
        if len(self.heap) > 2 * len(self.states) + 10_000:
            self.heap.compact(lambda due, cid: (s := self.states.get(cid)) is not None and s.deadline == due)

    def take(self) -> tuple[list, list[tuple[bytes, bytes]]]:
        """The batch's output events and state records; resets the batch."""
        records = []
        for check_id in self.dirty:
            state = self.states.get(check_id)
            records.append((check_id.encode(), b"" if state is None else store.encode_state(state)))
        for p in self.dirty_clock:
            records.append((store.clock_key(p), store.encode_clock(self.clock.watermarks.get(p), self.clock.gaps_of(p))))
        out, self.out = self.out, []
        self.dirty, self.dirty_clock = set(), set()
        self.counts["transitions"] += sum(1 for e in out if not isinstance(e, IngestGap))
        return out, records


async def _produce_all(event_log: EventLog, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    # All produces are issued at once (the log groups them into one commit / batch) and
    # awaited together; issue order is kept per partition, so a check's transitions stay in order.
    if items:
        await asyncio.gather(*(event_log.produce(topic, value, key=key) for key, value in items))


def _pings_partitions(consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment() if tp.topic == TOPIC_PINGS}


async def run(
    config: Config,
    event_log: EventLog,
    clickhouse,
    stop: asyncio.Event,
    *,
    gap_threshold_s: float | None = None,
    batch_max: int = 10_000,
) -> None:
    """Run the monitor until ``stop`` is set. ``clickhouse`` is not used: state lives in the log."""
    plans = PlanBook()
    ready = asyncio.Event()
    registry_task = asyncio.create_task(follow(plans, event_log, ready, stop), name="monitor-registry")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(ready.wait())]
    try:
        # Check configurations first: deadlines computed with a default plan would be wrong.
        await asyncio.wait([*waiters, registry_task], return_when=asyncio.FIRST_COMPLETED)
        if registry_task.done():
            registry_task.result()  # re-raise a registry failure
        if stop.is_set():
            return
        await _consume(config, event_log, plans, stop, gap_threshold_s or gap_threshold(config), batch_max)
    finally:
        for task in (*waiters, registry_task):
            task.cancel()
        await asyncio.gather(*waiters, registry_task, return_exceptions=True)


async def _consume(config, event_log, plans, stop, threshold, batch_max) -> None:
    await event_log.partitions(store.TOPIC_MONITOR_STATE)  # create the state topic with the pings' partition count
    consumer = event_log.consumer([TOPIC_PINGS], group=GROUP)
    await consumer.start()
    try:
        monitor = Monitor(plans, StreamClock([], threshold))
        owned: set[int] = set()
        positions: dict[TopicPartition, int] = {}
        last_log = last_compact = time.monotonic()
        logged = dict(monitor.counts)
        while not stop.is_set():
            records = await consumer.getmany(max_records=batch_max, timeout_ms=100)
            assigned = _pings_partitions(consumer)
            if assigned != owned:
                # (Re)assignment: take over the states of partitions we now own, drop the others.
                # Deadlines are in the states, so a rebalance loses none.
                states, clocks = await store.load(event_log, assigned)
                monitor.clock.assign(sorted(assigned))
                monitor.states = {}
                monitor.heap = DeadlineHeap()
                monitor.restore(states, clocks)
                log.info("monitor owns partitions %s: %d check states restored", sorted(assigned), len(states))
                owned = assigned
            for record in records:
                monitor.fold(record)
            monitor.reconfigure()
            monitor.advance()
            out, state_records = monitor.take()
            # flush → produce → commit: transitions and states are durable before the
            # offsets that produced them are committed, so a crash re-emits (same ids), never loses.
            await _produce_all(event_log, TOPIC_TRANSITIONS, [(_key(e), encode(e)) for e in out])
            poison, monitor.poison = monitor.poison, []
            for record, exc in poison:
                await deadletter.send(event_log, "monitor", record, exc)
            for e in out:
                if isinstance(e, Transition):
                    metrics.TRANSITIONS.labels(e.from_status, e.to_status).inc()
            await _produce_all(event_log, store.TOPIC_MONITOR_STATE, state_records)
            if records:
                offsets: dict[TopicPartition, int] = {}
                for r in records:
                    offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
                try:
                    await consumer.commit(offsets)
                except Exception as exc:  # partitions moved to another monitor meanwhile (rebalance)
                    log.warning("commit refused (%s: %s): the new owner reads those records again",
                                exc.__class__.__name__, exc)
                    owned = set()  # reload the states of what we own now
                    continue
                positions.update(offsets)
                metrics.BATCH_RECORDS.labels("monitor").observe(len(records))
            now_m = time.monotonic()
            if now_m - last_log >= _LOG_EVERY_S:
                await metrics.record_lag(GROUP, consumer, positions)
                _log_rates(monitor, logged, now_m - last_log)
                logged, last_log = dict(monitor.counts), now_m
            if now_m - last_compact >= _COMPACT_EVERY_S and hasattr(event_log, "compact"):
                last_compact = now_m
                removed = await event_log.compact(store.TOPIC_MONITOR_STATE)
                log.info("compacted %s: %d superseded states removed", store.TOPIC_MONITOR_STATE, removed)
        _log_rates(monitor, logged, max(time.monotonic() - last_log, 1e-9))
    finally:
        await consumer.close()


def _key(event) -> bytes | None:
    return event.check_id.encode() if hasattr(event, "check_id") else None


def _log_rates(monitor: Monitor, before: dict, elapsed_s: float) -> None:
    c = monitor.counts
    clock = monitor.clock.now
    lag = f"{time.time() - clock:.1f}s" if clock is not None else "n/a"
    log.info(
        "monitor: %d checks, %d deadlines queued, %.0f records/s, %.1f transitions/s, %d gaps, %d errors, clock lag %s",
        len(monitor.states),
        len(monitor.heap),
        (c["records"] - before["records"]) / elapsed_s,
        (c["transitions"] - before["transitions"]) / elapsed_s,
        c["gaps"],
        c["errors"],
        lag,
    )
