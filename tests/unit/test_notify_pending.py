"""The notifier's commit point (pure): a transition's offset moves only when all its deliveries are
finished, and the pings read before it stay uncommitted until then."""

from __future__ import annotations

from notify.service import Pending
from runtime.eventlog.base import TopicPartition
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS

T0, T1, P0 = TopicPartition(TOPIC_TRANSITIONS, 0), TopicPartition(TOPIC_TRANSITIONS, 1), TopicPartition(TOPIC_PINGS, 0)


def test_a_new_partition_commits_where_the_consumer_starts():
    pending = Pending()
    pending.assigned({T0: 40, P0: 900})
    assert pending.commit_point() == {T0: 40, P0: 900}


def test_the_commit_point_waits_for_every_delivery_of_the_oldest_transition():
    pending = Pending()
    pending.assigned({T0: 0, T1: 0, P0: 0})
    pending.read_to(P0, 9)
    pending.read_to(T0, 3)
    pending.add(T0, 3, 2)  # two channels
    pending.read_to(P0, 19)
    pending.read_to(T0, 4)
    pending.add(T0, 4, 1)
    pending.read_to(T1, 7)
    assert pending.commit_point() == {T0: 3, T1: 8, P0: 10}
    pending.done(T0, 4)
    pending.done(T0, 3)
    assert pending.commit_point() == {T0: 3, T1: 8, P0: 10}
    pending.done(T0, 3)
    assert pending.commit_point() == {T0: 5, T1: 8, P0: 20}


def test_partitions_moved_away_are_not_committed_from_here():
    pending = Pending()
    pending.assigned({T0: 0, T1: 0})
    pending.read_to(T1, 5)
    pending.add(T1, 5, 1)
    pending.assigned({T0: 0})
    assert pending.commit_point() == {T0: 0}
    pending.done(T1, 5)  # a delivery finishing after the move changes nothing
    assert pending.commit_point() == {T0: 0}
