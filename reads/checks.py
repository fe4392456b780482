"""A check's projected state, ping log, ping bodies and flips, for the Management API.

Parameterised queries only; FINAL where exactness matters.
"""

from __future__ import annotations

from datetime import datetime

from runtime.clickhouse import ClickHouse

# Transitions written before they carried Healthchecks' stored status: flips were changes between up and
# down, grace and a running job counting as up.
_BUCKET = {"up": "up", "grace": "up", "started": "up", "down": "down", "new": "new", "paused": "paused"}


async def check_states(ch: ClickHouse, check_ids: list[str]) -> dict[str, dict]:
    rows = await ch.rows_by_ids(
        "SELECT check_id, status, status_at, last_ping, last_start, last_duration_s, n_pings, started "
        "FROM check_state FINAL WHERE check_id IN {ids:Array(UUID)}",
        check_ids,
    )
    return {str(r["check_id"]): r for r in rows}


async def monitor_statuses(ch: ClickHouse, check_ids: list[str]) -> dict[str, dict]:
    """The monitor's latest word on each check: ``{to_status, to_base, at}`` of its newest transition."""
    rows = await ch.rows_by_ids(
        "SELECT check_id, argMax(t.to_status, t.at) AS status, argMax(t.to_base, t.at) AS base, max(t.at) AS newest "
        "FROM transitions AS t WHERE t.check_id IN {ids:Array(UUID)} GROUP BY check_id",
        check_ids,
    )
    return {str(r["check_id"]): {"to_status": r["status"], "to_base": r["base"], "at": r["newest"]} for r in rows}


async def pings(ch: ClickHouse, check_id: str, limit: int) -> list[dict]:
    rows = await ch.rows(
        "SELECT n, kind, received_at, scheme, remote_addr, method, user_agent, rid, duration_s, exit_status, "
        "body_size FROM pings FINAL WHERE check_id = {c:UUID} ORDER BY n DESC LIMIT {limit:UInt32}",
        {"c": check_id, "limit": limit},
    )
    for r in rows:
        r["rid"] = str(r["rid"]) if r["rid"] is not None else None
    return rows


async def ping_body(ch: ClickHouse, check_id: str, n: int) -> bytes | None:
    rows = await ch.rows(
        "SELECT body FROM pings FINAL WHERE check_id = {c:UUID} AND n = {n:UInt64} LIMIT 1",
        {"c": check_id, "n": n},
        column_formats={"body": "bytes"},
    )
    return bytes(rows[0]["body"]) if rows else None


async def flips(ch: ClickHouse, check_id: str, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """Healthchecks' flips: every change of its stored status (new, up, down, paused), as
    ``{at, from_status, to_status, held, rule}`` in those terms, newest first (as its order_by("-id")).
    ``held`` and ``rule`` are pingstream's (why its alerts were held, which rule made it; '' for none)."""
    rows = await ch.rows(
        "SELECT at, from_status, to_status, from_base, to_base, held, rule FROM transitions FINAL WHERE check_id = {c:UUID} "
        "AND (from_base != to_base OR (to_base = '' AND to_status IN ('up', 'down'))) "
        "AND at >= {since:DateTime64(6, 'UTC')} AND at < {until:DateTime64(6, 'UTC')} "
        "ORDER BY at DESC, event_id DESC",
        {"c": check_id, "since": since or datetime(1970, 1, 2), "until": until or datetime(2200, 1, 1)},
    )
    out = []
    for r in rows:
        frm, to = (r.pop("from_base"), r.pop("to_base"))
        if to:
            out.append(dict(r, from_status=frm, to_status=to))
        elif _BUCKET.get(r["from_status"]) != _BUCKET.get(r["to_status"]):
            out.append(r)
    return out


async def notifications(ch: ClickHouse, check_id: str, limit: int) -> list[dict]:
    """The check's alert deliveries, newest first (one row per alert and channel: the last outcome)."""
    return await ch.rows(
        "SELECT alert_id, channel_id, channel_kind, event, status, attempts, error, at, finished "
        "FROM notifications FINAL WHERE check_id = {c:String} ORDER BY at DESC, channel_id LIMIT {limit:UInt32}",
        {"c": check_id, "limit": limit},
    )
