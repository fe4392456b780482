"""``pingstream transitions tail``: follow the transitions topic, one line per event."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TextIO

from runtime.eventlog.base import EventLog
from schemas.events import TOPIC_TRANSITIONS, IngestGap, Transition, decode


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_event(event) -> str | None:
    if isinstance(event, Transition):
        cause = f"  (ping {event.cause_event_id})" if event.cause_event_id else ""
        return (
            f"{_when(event.at)}  {event.check_id}  {event.from_status:>7} → {event.to_status:<7}"
            f"  {event.reason}{cause}"
        )
    if isinstance(event, IngestGap):
        seconds = (event.end - event.start).total_seconds()
        return f"{_when(event.start)}  INGEST GAP on partition {event.partition}: nothing heard for {seconds:.1f}s until {_when(event.end)}"
    return None


async def tail(event_log: EventLog, stop: asyncio.Event, out: TextIO, *, from_beginning: bool = False) -> None:
    """Print transitions as they are produced (and, with ``from_beginning``, all earlier ones) until ``stop``."""
    consumer = event_log.consumer([TOPIC_TRANSITIONS], group=None)
    await consumer.start()
    try:
        # The log has no seek: without from_beginning, records before the current end are read and skipped.
        skip_below = {} if from_beginning else dict(await consumer.end_offsets())
        while not stop.is_set():
            for r in await consumer.getmany(timeout_ms=200):
                if r.offset < skip_below.get((r.topic, r.partition), 0):
                    continue
                try:
                    line = format_event(decode(r.value))
                except Exception as exc:
                    line = f"undecodable record {r.topic}/{r.partition}@{r.offset}: {exc}"
                if line is not None:
                    out.write(line + "\n")
            out.flush()
    finally:
        await consumer.close()
