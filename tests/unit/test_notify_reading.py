"""The notifier's reading of a batch: pings of checks no channel hears only move the read positions (taken
for each run of them at once), and a transition still sees the pings read before it, record by record."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from notify.service import Notifier
from runtime.config import Config
from runtime.consumer import Batch
from runtime.eventlog.base import Record, TopicPartition
from schemas.events import (
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    CheckConfig,
    CheckUpserted,
    PingEvent,
    Transition,
    encode,
    uuid7,
)

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
PROJECT = str(uuid7())


def _check(channels: tuple[str, ...]) -> CheckConfig:
    return CheckConfig(id=str(uuid7()), project_id=PROJECT, created=T0, channels=channels)


def _ping(check: CheckConfig, partition: int, offset: int) -> Record:
    event = PingEvent(event_id=str(uuid7()), check_id=check.id, project_id=PROJECT, kind="success",
                      received_at=T0 + timedelta(seconds=offset))
    return Record(TOPIC_PINGS, partition, offset, check.id.encode(), encode(event), 0)


def _transition(check: CheckConfig, offset: int) -> Record:
    event = Transition(event_id=str(uuid7()), check_id=check.id, project_id=PROJECT, from_status="up",
                       to_status="down", at=T0, reason="test", cause_event_id=str(uuid7()))
    return Record(TOPIC_TRANSITIONS, 0, offset, check.id.encode(), encode(event), int(time.time() * 1000))


async def test_unheard_pings_move_the_positions_and_a_transition_sees_what_was_read_before_it(tmp_path):
    heard, quiet = _check(("a-channel",)), _check(())
    notifier = Notifier(None, Config.from_env({"PINGSTREAM_DATA": str(tmp_path)}))
    for check in (heard, quiet):
        notifier.history.apply(CheckUpserted(event_id=str(uuid7()), check=check), 0)
    P0, P1, TR = TopicPartition(TOPIC_PINGS, 0), TopicPartition(TOPIC_PINGS, 1), TopicPartition(TOPIC_TRANSITIONS, 0)
    notifier.pending.assigned({P0: 0, P1: 0, TR: 0})
    notifier._committed_at = time.monotonic()  # no commit in this batch: the reading alone is looked at
    records = [
        _ping(quiet, 0, 0), _ping(heard, 0, 1), _ping(quiet, 0, 2), _ping(quiet, 1, 0),
        _transition(quiet, 0),
        _ping(quiet, 0, 3), _ping(quiet, 1, 1), _ping(quiet, 1, 2),
    ]
    await notifier.handle(Batch(records))

    assert notifier.pending.read == {P0: 4, P1: 3, TR: 1}
    [opened] = notifier.pending.open[TR].values()
    assert opened.pings_read == {P0: 3, P1: 1}  # the pings before the transition, as read record by record
    assert len(notifier.pings) == 1  # only the heard check's ping is kept

    silenced = CheckConfig(id=heard.id, project_id=PROJECT, created=T0, channels=())
    notifier.history.apply(CheckUpserted(event_id=str(uuid7()), check=silenced), 1)
    assert heard.id.encode() not in notifier.history.heard  # its channels removed: no longer heard
