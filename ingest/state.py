"""Reads of projected state for the API: thin adapters over projector.queries.

The edge never touches ClickHouse on the ping path; only API reads come here.
Without a ClickHouse client (an edge run without one) every check reads as new.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from schemas.events import CheckConfig

from .keys import CLICKHOUSE


def _clickhouse(request: web.Request):
    return request.app.get(CLICKHOUSE)


async def check_states(request: web.Request, check_ids: list[str]) -> dict[str, dict]:
    ch = _clickhouse(request)
    if ch is None or not check_ids:
        return {}
    from projector import queries

    return await queries.check_states(ch, check_ids)


async def pings(request: web.Request, check_id: str, limit: int) -> list[dict]:
    ch = _clickhouse(request)
    if ch is None:
        return []
    from projector import queries

    return await queries.pings(ch, check_id, limit)


async def ping_body(request: web.Request, check_id: str, n: int) -> bytes | None:
    ch = _clickhouse(request)
    if ch is None:
        return None
    from projector import queries

    return await queries.ping_body(ch, check_id, n)


async def flips(request: web.Request, check_id: str, since: datetime | None, until: datetime | None) -> list[dict]:
    ch = _clickhouse(request)
    if ch is None:
        return []
    from projector import queries

    return await queries.flips(ch, check_id, since=since, until=until)


def next_ping(check: CheckConfig, last_ping: datetime | None) -> datetime | None:
    """When the next ping is expected (upstream's ``next_ping``): None before the first ping."""
    if last_ping is None:
        return None
    from monitor.schedule import next_expected, to_datetime

    return to_datetime(next_expected(check.kind, check.timeout_s, check.schedule, check.tz, last_ping.timestamp()))
