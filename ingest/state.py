"""Reads of projected state for the API views: thin adapters from a request to reads/.

The edge never touches ClickHouse on the ping path; only API reads come here. Reads never lie:
without a reachable read model (an edge run with ``PINGSTREAM_CLICKHOUSE=off``, a server that is
down) every read raises ``ReadModelUnavailable``, answered ``503 {"error": "read model unavailable:
<what is missing>"}``, instead of inventing state (``status: new``, ``n_pings: 0``). What the edge
knows from the registry alone (a check's configuration) needs no read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Awaitable, Callable, TypeVar

from aiohttp import web

from checks.extensions import uses_rules
from reads import checks as queries
from reads import monitors
from runtime.clickhouse import ClickHouse, Unavailable, describe

from .keys import CLICKHOUSE, CONFIG, REGISTRY
from .views import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReadModelUnavailable(ApiError):
    """503 naming what is missing; no state is made up in its place."""

    def __init__(self, what: str) -> None:
        super().__init__(f"read model unavailable: {what}", 503)


def read_model(request: web.Request) -> ClickHouse:
    """The edge's ClickHouse, or ``ReadModelUnavailable`` when it runs without one."""
    ch = request.app.get(CLICKHOUSE)
    if ch is None:
        raise ReadModelUnavailable(describe(request.app[CONFIG].clickhouse))
    return ch


async def read(request: web.Request, query: Callable[..., Awaitable[T]], *args, **kwargs) -> T:
    """``query(clickhouse, *args, **kwargs)``; a read model that is missing, unreachable or failing is a 503."""
    ch = read_model(request)
    try:
        return await query(ch, *args, **kwargs)
    except Unavailable as exc:
        raise ReadModelUnavailable(str(exc)) from None
    except Exception:
        log.exception("read model query %s failed", getattr(query, "__name__", query))
        raise ReadModelUnavailable(f"{ch.describe()} failed the query") from None


async def check_states(request: web.Request, check_ids: list[str]) -> dict[str, dict]:
    """Projected states; a check that uses pingstream's rules also gets the monitor's latest word
    (``state["monitor"]``), which decides its status (see ``checks.document.status``)."""
    if not check_ids:
        return {}
    states = await read(request, queries.check_states, check_ids)
    registry = request.app.get(REGISTRY)
    checks = registry.checks if registry is not None else {}
    ruled = [i for i in check_ids if i in states and (c := checks.get(i)) is not None and uses_rules(c)]
    if ruled:
        for check_id, word in (await read(request, queries.monitor_statuses, ruled)).items():
            states[check_id]["monitor"] = word
    return states


async def last_completion_failed(request: web.Request, check_ids: list[str]) -> set[str]:
    if not check_ids:
        return set()
    return await read(request, monitors.last_completion_failed, check_ids)


async def pings(request: web.Request, check_id: str, limit: int) -> list[dict]:
    return await read(request, queries.pings, check_id, limit)


async def ping_body(request: web.Request, check_id: str, n: int) -> bytes | None:
    return await read(request, queries.ping_body, check_id, n)


async def flips(request: web.Request, check_id: str, since: datetime | None, until: datetime | None) -> list[dict]:
    return await read(request, queries.flips, check_id, since=since, until=until)


async def notifications(request: web.Request, check_id: str, limit: int) -> list[dict]:
    return await read(request, queries.notifications, check_id, limit)
