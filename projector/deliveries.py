"""The notifier's delivery outcomes (``pingstream.deliveries``) into ClickHouse's ``notifications``.

A loop of its own in the projector process (its own consumer group): read a batch, insert its
rows, then commit. A batch read again after a crash is inserted again: the table keeps one row
per alert and channel (the latest outcome), and reads merge (``FINAL``). No deduplication (by
token, or by the block's hash, which the table's deduplication window would otherwise use):
a process killed between MergeTree's recording of a block's token and its part's rename leaves
the token without the part, and the block sent again under it would be dropped
(``Projector.check_replayed``).
"""

from __future__ import annotations

import asyncio
import logging

from runtime import metrics
from runtime.clickhouse import ClickHouse
from runtime.consumer import Batch, ConsumerShell, retry
from runtime.eventlog.base import EventLog
from schemas.events import TOPIC_DELIVERIES, Delivery, decode

log = logging.getLogger(__name__)

GROUP = "pingstream-projector-deliveries"
COLUMNS = ["event_id", "alert_id", "check_id", "project_id", "channel_id", "channel_kind", "event", "status",
           "attempts", "error", "at", "finished"]


def rows_of(records) -> list[tuple]:
    rows = []
    for r in records:
        try:
            d = decode(r.value)
        except Exception as exc:  # not a delivery at all: nothing to project
            log.error("undecodable delivery %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)
            continue
        if isinstance(d, Delivery):
            rows.append((d.event_id, d.alert_id, d.check_id, d.project_id, d.channel_id, d.channel_kind, d.event,
                         d.status, d.attempts, d.error, d.at, d.finished))
    return rows


async def run(event_log: EventLog, clickhouse: ClickHouse, stop: asyncio.Event) -> None:
    async def handle(batch: Batch) -> None:
        rows = rows_of(batch.records)
        if not rows:
            return

        def insert(client):
            client.insert("notifications", rows, column_names=COLUMNS, settings={"insert_deduplicate": 0})

        await retry("notifications insert", lambda: clickhouse.run(insert), stop=stop, logger=log)
        metrics.INSERT_ROWS.labels("notifications").inc(len(rows))

    async with event_log.consumer([TOPIC_DELIVERIES], group=GROUP) as consumer:
        await ConsumerShell("projector deliveries", consumer, handle, group=GROUP, logger=log).run(stop)
