"""The members of a consumer group over several topics keyed by check (the projector's pings and transitions, the
notifier's) on the real broker: each member is given the same partitions of each topic, so the records of a check,
whatever their topic, go to one member.

A projector folds a check's pings and its transitions into one state (projector/fold.py): were a check's pings
partition given to one member and its transitions partition to another, two members would each fold the check from
a state that lacks the other's records, and write it over each other's. aiokafka's default (round robin over every
topic's partitions at once) does that with three members of four partitions each: pings 0 to the second member,
transitions 0 to the third. (Five members on four partitions: one waits, with none.)
"""

from __future__ import annotations

import asyncio
import time

import pytest

from projector import service as projector_service
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, uuid7


def _by_topic(assigned) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for tp in assigned:
        out.setdefault(tp.topic, set()).add(tp.partition)
    return out


def _consumer(kafka_log, client: str, topics: list[str], group: str):
    """A consumer of ``kafka_log`` reading with ``client`` (``PINGSTREAM_KAFKA_CONSUMER``)."""
    chosen, kafka_log.consumer_client = kafka_log.consumer_client, client
    try:
        return kafka_log.consumer(topics, group=group)
    finally:
        kafka_log.consumer_client = chosen


@pytest.mark.parametrize("clients", ["aiokafka", "librdkafka"])
@pytest.mark.parametrize("n_members", [2, 3, 5])
async def test_a_groups_members_have_the_same_partitions_of_each_topic_keyed_by_check(n_members, clients, kafka_log):
    """Members reading with aiokafka or with librdkafka (``PINGSTREAM_KAFKA_CONSUMER``): both assign by range.

    Not members of both kinds in one group: they agree on the assignor, but under the full suite's load such a group
    (of two members, and of five) did not settle within a minute: a rebalance waits for librdkafka's members as long
    as their ``max.poll.interval.ms`` allows, while aiokafka's join requests time out at 40 s, again and again. A
    group is switched from one client to the other as a whole (README, ``PINGSTREAM_KAFKA_CONSUMER``)."""
    group = f"copartition-{uuid7()}"
    consumers = [_consumer(kafka_log, clients, projector_service.TOPICS, group) for _ in range(n_members)]
    try:
        await asyncio.gather(*(c.start() for c in consumers))
        total = 0
        for topic in projector_service.TOPICS:
            total += len(await kafka_log.partitions(topic))
        deadline, before = time.monotonic() + 60, None
        while True:  # each member fetches (and so takes part in rebalances) until the group settles
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))
            shares = [c.assignment() for c in consumers]
            working = sum(1 for share in shares if share)
            if sum(map(len, shares)) == len(set().union(*shares)) == total and shares == before and working == min(
                    n_members, 4):
                break  # every partition given, to one member each, as at the last look; every member has joined
            before = shares
            assert time.monotonic() < deadline, f"the group did not settle: {shares}"
        assert sum(1 for share in shares if share) == min(n_members, 4), shares  # 4 partitions a topic: 4 at work
        for share in shares:
            topics = _by_topic(share)
            assert topics.get(TOPIC_PINGS, set()) == topics.get(TOPIC_TRANSITIONS, set()), shares
    finally:
        await asyncio.gather(*(c.close() for c in consumers), return_exceptions=True)


@pytest.mark.parametrize("client", ["librdkafka", "aiokafka"])
async def test_a_member_joining_a_group_that_assigns_by_round_robin_is_told_why_it_cannot(client, kafka_log):
    """Members of an earlier pingstream (aiokafka's round robin) and of this one (range) share no assignment: the
    group refuses the newcomer, which says so in words an operator can act on."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    from runtime.eventlog.kafka_consumer import MixedGroup

    group = f"mixed-{uuid7()}"
    await kafka_log.ensure_topics([TOPIC_PINGS])
    earlier = AIOKafkaConsumer(kafka_log.name(TOPIC_PINGS), bootstrap_servers=kafka_log.bootstrap, group_id=group,
                               enable_auto_commit=False, partition_assignment_strategy=(RoundRobinPartitionAssignor,))
    await earlier.start()
    newer = _consumer(kafka_log, client, [TOPIC_PINGS], group)
    try:
        deadline = time.monotonic() + 30
        while not earlier.assignment():
            await earlier.getmany(timeout_ms=200)
            assert time.monotonic() < deadline, "the earlier member was given no partitions"
        await newer.start()
        with pytest.raises(MixedGroup, match="round robin"):
            while time.monotonic() < deadline:
                await newer.getmany(timeout_ms=200)
    finally:
        await newer.close()
        await earlier.stop()
