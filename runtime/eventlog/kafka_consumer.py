"""Reading the distributed log: a Kafka consumer (aiokafka) behind the ``Consumer`` interface, what reads with
``PINGSTREAM_KAFKA_CONSUMER=aiokafka`` (librdkafka's, rdkafka_consumer.py, is the default).

It never auto-commits (a service commits after its effects are done), reads committed records
only, and every call that needs the broker (commit, end offsets, close) is bounded, so a broker
outage is a refused commit or an error for the service's loop, never a hang.

A group gives its members partitions by range, topic by topic (``GROUP_ASSIGNORS``): each member has the same
partition numbers of every topic it reads with the others (of as many partitions), so the records of one key (a
check), whatever their topic, go to one member. A projector folds a check's pings and transitions into one state;
aiokafka's default, round robin over every topic's partitions at once, gave a check's pings to one member and its
transitions to another as soon as a group had three (tests/integration/test_group_copartitioning_kafka.py; three
projectors then wrote every check's state without its transition: tests/integration/test_projector_rebalance.py).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError, KafkaError

from ..backoff import until_answered
from .base import Consumer, Record, TopicPartition, as_record

log = logging.getLogger(__name__)

CONSUMER_CALL_S = 10.0  # longest a consumer's commit, end offsets or close may take
START_RETRY_MAX_S = 10.0
# By range alone (see the module docstring). Offered with round robin after it (what members of earlier versions
# offered), aiokafka's members rejoined the group again and again and never settled (hundreds of generations in
# seconds); so a group's members are upgraded together: a member offering range does not join one whose members
# offer round robin until they have left.
GROUP_ASSIGNORS = (RangePartitionAssignor,)


class MixedGroup(RuntimeError):
    """This member and the others of its group offer no partition assignment in common (``GROUP_ASSIGNORS``): the
    group refuses it for as long as they are in it."""


async def start_waiting(consumer, start, undo, mendable: tuple[type[BaseException], ...]) -> None:
    """``await start()`` until it works, ``undo()`` after each failure (the half-started consumer); a failure of
    the ``mendable`` kinds (the broker away) is said and tried again (``runtime.backoff``), anything else raised."""
    async def attempt() -> None:
        try:
            await start()
        except BaseException:
            await undo()
            raise

    whose = f" of {consumer.group}" if consumer.group else ""
    await until_answered(
        attempt, may_mend=lambda exc: isinstance(exc, mendable),
        describe=lambda exc: f"Kafka at {consumer._log.bootstrap} not reachable for a consumer{whose}: "
                             f"{exc or exc.__class__.__name__}",
        logger=log, max_s=START_RETRY_MAX_S)


def mixed_group(group: str | None) -> MixedGroup:
    return MixedGroup(
        f"consumer group {group!r}: its other members assign partitions otherwise (an earlier pingstream by round "
        "robin, this one by range, so that a check's records of every topic go to one member); stop or upgrade them, "
        "then start this one again")


class KafkaConsumer(Consumer):
    def __init__(self, log_, topics: list[str], group: str | None, *, from_end: bool = False) -> None:
        self._log = log_
        self.from_end = from_end
        self.topics = topics
        self.group = group
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Join (or, without a group, take every partition). A broker that does not answer (a service whose
        broker went away after its log started) is asked again, 0.5 s later, then 1, 2, 4... up to
        ``START_RETRY_MAX_S``, a warning each time (``runtime.backoff``): the service waits for its broker
        rather than end, as its log's start does (``pingstream.cli``); stopping the service cancels the wait."""
        await start_waiting(self, self._start, self.close, (KafkaError, OSError))  # OSError: TimeoutError too

    async def _start(self) -> None:
        await self._log.ensure_topics(self.topics)
        names = [self._log.name(t) for t in self.topics]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._log.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self.from_end else "earliest",
            isolation_level="read_committed",
            session_timeout_ms=6000,  # a killed member's partitions move on within seconds
            heartbeat_interval_ms=2000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,
            partition_assignment_strategy=GROUP_ASSIGNORS,
        )
        await self._consumer.start()
        if self.group is None:
            tps = [KafkaTP(n, p) for n in names for p in range(await self._log._partition_count(self._log.plain(n)))]
            self._consumer.assign(tps)
            await (self._consumer.seek_to_end if self.from_end else self._consumer.seek_to_beginning)(*tps)
        else:
            self._consumer.subscribe(names)

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {TopicPartition(self._log.plain(tp.topic), tp.partition) for tp in self._consumer.assignment()}

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except InconsistentGroupProtocolError:
            raise mixed_group(self.group) from None
        out: list[Record] = []
        for tp, msgs in batches.items():
            topic, partition = self._log.plain(tp.topic), tp.partition  # once per partition, not per record
            out += [as_record((topic, partition, m.offset, m.key, m.value, m.timestamp)) for m in msgs]
        return out

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.group is None:
            return
        # Bounded: aiokafka retries a commit while the coordinator is away; a commit that does not
        # get through is a refused one (the records are read again), never a hang.
        async with asyncio.timeout(CONSUMER_CALL_S):
            if offsets is None:
                await self._consumer.commit()
            elif offsets:
                await self._consumer.commit({KafkaTP(self._log.name(tp.topic), tp.partition): o
                                             for tp, o in offsets.items()})

    async def positions(self) -> dict[TopicPartition, int]:
        out = {}
        async with asyncio.timeout(CONSUMER_CALL_S):
            for tp in list(self._consumer.assignment()):
                out[TopicPartition(self._log.plain(tp.topic), tp.partition)] = await self._consumer.position(tp)
        return out

    async def end_offsets(self) -> dict[TopicPartition, int]:
        tps = list(self._consumer.assignment())
        if not tps:
            return {}
        async with asyncio.timeout(CONSUMER_CALL_S):
            ends = await self._consumer.end_offsets(tps)
        return {TopicPartition(self._log.plain(tp.topic), tp.partition): o for tp, o in ends.items()}

    async def close(self) -> None:
        """Bounded: leaving the group needs the broker; without it the process goes anyway (the group
        notices the missing member by its session timeout)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                async with asyncio.timeout(CONSUMER_CALL_S):
                    await consumer.stop()
            except TimeoutError:
                log.warning("Kafka consumer did not stop within %g s; leaving it", CONSUMER_CALL_S)


async def read_range(log_, topic: str, partition: int, first: int, last: int) -> list[Record]:
    """The records of one partition from offset ``first`` to ``last`` (committed ones; a compacted topic may
    have fewer), read by a consumer of no group that takes only that partition. Bounded by CONSUMER_CALL_S."""
    kafka_tp = KafkaTP(log_.name(topic), partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=log_.bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", max_partition_fetch_bytes=4 * 1024 * 1024)
    out: list[Record] = []
    try:
        async with asyncio.timeout(CONSUMER_CALL_S):
            await consumer.start()
            consumer.assign([kafka_tp])
            consumer.seek(kafka_tp, first)
            while await consumer.position(kafka_tp) <= last:
                fetched = await consumer.getmany(kafka_tp, timeout_ms=200)
                out += [as_record((topic, partition, m.offset, m.key, m.value, m.timestamp))
                        for m in fetched.get(kafka_tp, ()) if m.offset <= last]
    finally:
        await consumer.stop()
    return out

