"""Trying again: the one loop for whatever may come back by waiting (a broker, a ClickHouse server, a database).

``until_answered(attempt, ...)`` awaits ``attempt()`` until it returns, and returns what it returned. A failure
that waiting may mend (``may_mend``; by default any ``Exception``) is one log line and is tried again
``first_s`` later, then twice as long each time up to ``max_s``; any other failure is raised at once. A set
``stop`` ends a wait at once: the loop then raises ``Stopped`` instead of trying again, as it does when an
attempt fails while ``stop`` is set. Without ``stop`` it tries until it is cancelled.

Its users: a service's start waiting for its log and its ClickHouse (``pingstream.cli``), a Kafka consumer's
join (``runtime.eventlog.kafka_consumer``), and every step of a consumer shell's batch (``runtime.consumer.retry``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Stopped(Exception):
    """A step still failed when the process was stopped: what it was for is left undone (a batch stays
    uncommitted, a service does not start)."""


def _any(_exc: Exception) -> bool:
    return True


async def _stopped_within(stop: asyncio.Event | None, delay_s: float) -> bool:
    """Wait ``delay_s``, less if ``stop`` is set meanwhile; True when it is."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return False
    return True


async def until_answered(
    attempt: Callable[[], Awaitable[T]],
    *,
    may_mend: Callable[[Exception], bool] = _any,
    stop: asyncio.Event | None = None,
    describe: Callable[[Exception], str] = str,
    logger: logging.Logger = log,
    level: int = logging.WARNING,
    first_s: float = 0.5,
    max_s: float = 10.0,
    on_try: Callable[[], None] | None = None,
) -> T:
    """``attempt()``'s result, once it works (see the module's docstring). ``describe(exc)`` is the log line
    of a failure, before "; trying again in N s"; ``on_try`` is called before each attempt (a watchdog's beat:
    waiting on a database is not hanging)."""
    delay = first_s
    while True:
        if on_try is not None:
            on_try()
        try:
            return await attempt()
        except Exception as exc:
            if not may_mend(exc):
                raise
            said = describe(exc)
            if stop is not None and stop.is_set():
                raise Stopped(f"{said} (stopping)") from exc
            logger.log(level, "%s; trying again in %g s", said, delay)
        if await _stopped_within(stop, delay):
            raise Stopped(f"{said} (stopped while waiting to try again)")
        delay = min(delay * 2, max_s)
