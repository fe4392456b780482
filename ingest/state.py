"""Reads of projected state for the API views: thin adapters from a request to reads/checks.py.

The edge never touches ClickHouse on the ping path; only API reads come here.
Without a ClickHouse client (an edge run without one) every check reads as new.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from reads import checks as queries

from .keys import CLICKHOUSE


async def check_states(request: web.Request, check_ids: list[str]) -> dict[str, dict]:
    ch = request.app.get(CLICKHOUSE)
    if ch is None or not check_ids:
        return {}
    return await queries.check_states(ch, check_ids)


async def pings(request: web.Request, check_id: str, limit: int) -> list[dict]:
    ch = request.app.get(CLICKHOUSE)
    if ch is None:
        return []
    return await queries.pings(ch, check_id, limit)


async def ping_body(request: web.Request, check_id: str, n: int) -> bytes | None:
    ch = request.app.get(CLICKHOUSE)
    if ch is None:
        return None
    return await queries.ping_body(ch, check_id, n)


async def flips(request: web.Request, check_id: str, since: datetime | None, until: datetime | None) -> list[dict]:
    ch = request.app.get(CLICKHOUSE)
    if ch is None:
        return []
    return await queries.flips(ch, check_id, since=since, until=until)
