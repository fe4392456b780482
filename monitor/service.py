"""The monitor service: the thin I/O shell around ``monitor.transitions``.

The consumer shell (``runtime.consumer``) reads ``pingstream.pings`` (group
``pingstream-monitor``) in batches; for each: move the stream clock → fold
the events into check states → fire the deadlines the clock passed → produce
Transitions / IngestGaps (keyed by check, awaiting the durable ack) → write
the changed states → commit the offsets. A crash anywhere re-reads the batch;
the same transitions come out again with the same ids (consumers dedupe), and
nothing is lost.

Dependencies across monitors: with several monitors (each a share of the pings partitions) a
check's parent may live in partitions another monitor owns. Every monitor also reads the
transitions topic, all of its partitions (``_follow_parents``), and folds the downs and ups of
the checks some check depends on (``Monitor.follow_parent``): a child here is held while a
parent there is down, by the parent's transition times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from runtime import deadletter, metrics
from runtime.config import Config
from runtime.consumer import Batch, Batches, ConsumerShell, retry
from runtime.eventlog.base import EventLog, TopicPartition
from runtime.registry import Followed, follow
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, Transition, decode, encode

from . import store
from .clock import DeadlineHeap, StreamClock
from .plans import PlanBook
from .state import Monitor
from .volume import VolumeGate

log = logging.getLogger(__name__)

GROUP = "pingstream-monitor"
_LOG_EVERY_S = 30.0
_COMPACT_EVERY_S = 300.0
# A batch gathers records for this long after its first: under load, a few batches a second instead
# of one per read, each a state produce and an offset commit (on the embedded log, two writes the
# edges wait behind); an idle ping is handled this much later. Once pings come at BUSY_RECORDS per
# BATCH_WAIT_S or faster (2,500 a second; runtime.consumer.Batches), a batch gathers for BUSY_WAIT_S: two
# or three batches a second, whose fixed cost (the state produce, the commit, the clock's turn) leaves
# the cores to the edges.
BATCH_WAIT_S = 0.1
BUSY_RECORDS = 250
BUSY_WAIT_S = 0.4
_LOAD_TIMEOUT_S = 60.0
# How long a batch with a ping of a check the monitor has no plan for waits for its registry follower to read what
# the log held (the check was created just before, in another process): judged by the default plan, a new check's
# first failure would be final with its failure threshold not yet known.
REGISTRY_WAIT_S = 5.0


class FollowedPlans(PlanBook, Followed):
    """The monitor's plans, as its registry follower keeps them: ``caught_up`` waits until they hold what the log
    held (``runtime.registry.Followed``)."""

    def __init__(self) -> None:
        PlanBook.__init__(self)
        Followed.__init__(self)


def names_unknown_check(records, plans: PlanBook) -> bool:
    """Whether a ping among ``records`` is of a check ``plans`` has no plan for (clock ticks have no key)."""
    known = plans.plans
    return any(r.key is not None and r.topic == TOPIC_PINGS and r.key.decode() not in known for r in records)


def gap_threshold(config: Config) -> float:
    """Silence longer than this on a partition is an ingest gap: a few missed ticks, at least a second."""
    return max(5 * config.tick_interval_s, 1.0)


async def _produce_all(event_log: EventLog, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    # All records are handed to the log at once, in order (the log groups them into one commit / batch and keeps
    # their order per partition, so a check's transitions stay in order), and awaited together: as futures, not a
    # task each (a busy monitor produces one per ping). ``_consume`` made the topics' partition counts known, so
    # no record takes ``produce``'s slower way, which could put it behind the ones after it.
    if items:
        await asyncio.gather(*[event_log.send(topic, value, key=key) for key, value in items])


async def run(
    config: Config,
    event_log: EventLog,
    stop: asyncio.Event,
    *,
    gap_threshold_s: float | None = None,
    batch_max: int = 10_000,
) -> None:
    """Run the monitor until ``stop`` is set. Its state lives in the log (``monitor.store``)."""
    plans = FollowedPlans()
    ready = asyncio.Event()
    registry_task = asyncio.create_task(follow(plans, event_log, ready, stop, name="monitor registry"),
                                        name="monitor-registry")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(ready.wait())]
    try:
        # Check configurations first: deadlines computed with a default plan would be wrong.
        await asyncio.wait([*waiters, registry_task], return_when=asyncio.FIRST_COMPLETED)
        if registry_task.done():
            registry_task.result()  # re-raise a registry failure
        if stop.is_set():
            return
        gate = VolumeGate() if config.volume_gate else None
        monitor = Monitor(plans, StreamClock([], gap_threshold_s or gap_threshold(config)), gate)
        parents_task = asyncio.create_task(_follow_parents(event_log, monitor, stop), name="monitor-parents")
        waiters.append(parents_task)
        await _consume(event_log, monitor, stop, batch_max)
    finally:
        for task in (*waiters, registry_task):
            task.cancel()
        await asyncio.gather(*waiters, registry_task, return_exceptions=True)


async def _follow_parents(event_log: EventLog, monitor: Monitor, stop: asyncio.Event) -> None:
    """Read every partition of the transitions topic, from its beginning (a parent down for long is
    known after a restart), and fold the transitions of checks some check depends on. Only their
    records are decoded (the key is the check's uuid). Retried while the log is away."""
    async def follow() -> None:
        async with event_log.consumer([TOPIC_TRANSITIONS], group=None) as consumer:
            while not stop.is_set():
                for r in await consumer.getmany(max_records=10_000, timeout_ms=200):
                    if r.key and monitor.plans.parent_ids and r.key.decode() in monitor.plans.parent_ids:
                        try:
                            monitor.follow_parent(decode(r.value))
                        except Exception as exc:  # not ours to dead-letter: the notifier reads it too
                            log.error("undecodable transition %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)

    while not stop.is_set():
        try:
            await follow()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("monitor: reading parents' transitions failed (%s); retrying", exc)
            await asyncio.sleep(1.0)


async def _consume(event_log: EventLog, monitor: Monitor, stop: asyncio.Event, batch_max: int) -> None:
    await event_log.partitions(store.TOPIC_MONITOR_STATE)  # create the state topic with the pings' partition count
    await event_log.partitions(TOPIC_TRANSITIONS)  # its partition count known before the first send (_produce_all)
    last_compact = time.monotonic()

    async def assigned(partitions: set[TopicPartition]) -> None:
        # (Re)assignment: take over the states of partitions we now own, drop the others.
        # Deadlines are in the states, so a rebalance loses none.
        owned = {tp.partition for tp in partitions if tp.topic == TOPIC_PINGS}
        # Retried (bounded each time) while the log is away or the broker is still taking up leadership
        # after a restart: a failed load must not end the monitor.
        states, clocks, seen, hours, gates = await retry(
            "monitor state load", lambda: asyncio.wait_for(store.load(event_log, owned), _LOAD_TIMEOUT_S),
            stop=stop, logger=log)
        monitor.clock.assign(sorted(owned))
        monitor.states = {}
        monitor.down = {}
        monitor.heap = DeadlineHeap()
        monitor.held_down, monitor.releases = set(), DeadlineHeap()
        monitor.recent = {}
        monitor.restore(states, clocks, seen, (hours, gates))
        log.info("monitor owns partitions %s: %d check states restored", sorted(owned), len(states))

    async def handle(batch: Batch) -> None:
        # Called for empty batches too: registry changes and the clock's deadlines need no new record.
        nonlocal last_compact
        if names_unknown_check(batch.records, monitor.plans):
            await monitor.plans.caught_up(REGISTRY_WAIT_S)  # FollowedPlans, as ``run`` made them
        for record in batch.records:
            monitor.fold(record)
        monitor.reconfigure()
        monitor.advance()
        out, state_records = monitor.take()
        # Transitions, dead letters and states are produced (durable) here, before the shell commits
        # the offsets that produced them: a crash re-emits them (same ids), never loses them.
        # Retried while the log is away (the batch stays uncommitted meanwhile; a retry re-produces
        # the same ids, which consumers dedupe), ended by ``stop``: never a crash, never a hang.
        transitions = [(_key(e), encode(e)) for e in out]
        await retry("monitor transitions", lambda: _produce_all(event_log, TOPIC_TRANSITIONS, transitions),
                    stop=stop, logger=log)
        poison, monitor.poison = monitor.poison, []
        for record, exc in poison:
            await retry("monitor dead letter", lambda: deadletter.send(event_log, "monitor", record, exc),
                        stop=stop, logger=log)
        for (frm, to), n in Counter((e.from_status, e.to_status) for e in out if isinstance(e, Transition)).items():
            metrics.TRANSITIONS.labels(frm, to).inc(n)
        await retry("monitor state", lambda: _produce_all(event_log, store.TOPIC_MONITOR_STATE, state_records),
                    stop=stop, logger=log)
        if time.monotonic() - last_compact >= _COMPACT_EVERY_S and hasattr(event_log, "compact"):
            last_compact = time.monotonic()
            removed = await event_log.compact(store.TOPIC_MONITOR_STATE)
            log.info("compacted %s: %d superseded states removed", store.TOPIC_MONITOR_STATE, removed)

    async with event_log.consumer([TOPIC_PINGS], group=GROUP) as consumer:
        shell = ConsumerShell(
            "monitor", consumer, handle,
            batches=Batches(consumer, max_records=batch_max, max_wait_s=BATCH_WAIT_S, poll_ms=100,
                            busy_records=BUSY_RECORDS, busy_wait_s=BUSY_WAIT_S),
            group=GROUP, logger=log, on_assignment=assigned,
            log_every_s=_LOG_EVERY_S, progress=_progress(monitor),
        )
        await shell.run(stop)


def _key(event) -> bytes | None:
    return event.check_id.encode() if hasattr(event, "check_id") else None


def _progress(monitor: Monitor):
    """The monitor's part of the shell's progress line."""
    before = {"transitions": monitor.counts["transitions"]}

    def describe(elapsed_s: float) -> str:
        c = monitor.counts
        clock = monitor.clock.now
        lag = f"{time.time() - clock:.1f}s" if clock is not None else "n/a"
        rate = (c["transitions"] - before["transitions"]) / elapsed_s
        before["transitions"] = c["transitions"]
        return (f"{len(monitor.states)} checks, {len(monitor.heap)} deadlines queued, {rate:.1f} transitions/s, "
                f"{c['gaps']} gaps, {c['errors']} errors, clock lag {lag}")

    return describe
