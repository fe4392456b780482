"""Clock pulses: a Tick to every partition of the pings topic about once a second.

The monitor's clock advances only on event timestamps; ticks keep it moving
when no pings arrive, and their absence tells it that the edge itself was deaf
(so no check is called down for pingstream's own outage).
"""

from __future__ import annotations

import asyncio
import logging

from runtime import health
from runtime.eventlog.base import EventLog, LogUnavailable
from schemas.events import TOPIC_PINGS, Tick, encode, utcnow, uuid7

log = logging.getLogger(__name__)


async def run_ticker(event_log: EventLog, interval_s: float, stop: asyncio.Event) -> None:
    partitions = await event_log.partitions(TOPIC_PINGS)
    beat = health.loop("ticker", max(30.0, 10 * interval_s))
    try:
        await _tick(event_log, interval_s, stop, partitions, beat)
    finally:
        health.forget("ticker")


async def _tick(event_log: EventLog, interval_s: float, stop: asyncio.Event, partitions: list[int], beat) -> None:
    while not stop.is_set():
        beat.beat()
        at = utcnow()
        try:
            await asyncio.gather(
                *(
                    event_log.produce(
                        TOPIC_PINGS, encode(Tick(event_id=uuid7(), at=at, partition=p)), partition=p
                    )
                    for p in partitions
                )
            )
        except LogUnavailable as exc:
            log.warning("tick not logged: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except asyncio.TimeoutError:
            pass
