"""Reads of projected state for the API views: thin adapters from a request to reads/checks.py.

The edge never touches ClickHouse on the ping path; only API reads come here.
Without a ClickHouse client (an edge run without one) every check reads as new.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from checks.extensions import uses_rules
from reads import checks as queries

from .keys import CLICKHOUSE, REGISTRY


async def check_states(request: web.Request, check_ids: list[str]) -> dict[str, dict]:
    """Projected states; a check that uses pingstream's rules also gets the monitor's latest word
    (``state["monitor"]``), which decides its status (see ``checks.document.status``)."""
    ch = request.app.get(CLICKHOUSE)
    if ch is None or not check_ids:
        return {}
    states = await queries.check_states(ch, check_ids)
    registry = request.app.get(REGISTRY)
    checks = registry.checks if registry is not None else {}
    ruled = [i for i in check_ids if i in states and (c := checks.get(i)) is not None and uses_rules(c)]
    if ruled:
        for check_id, word in (await queries.monitor_statuses(ch, ruled)).items():
            states[check_id]["monitor"] = word
    return states


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
