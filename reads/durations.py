"""Analyst reads of run durations: a check's runs, its duration quantiles per bucket, fleet rankings.

Parameterised queries only (``{name:Type}``, bound by ClickHouse); the only SQL text made at
run time is the count of quantile placeholders, chosen here, never taken from a request.

The rollups (``durations_hourly`` / ``durations_daily``) carry t-digest states for p50, p95 and
p99, so those come from there; any other quantile is computed from ``runs`` with the same t-digest
estimator, so both paths agree in kind. Times are UTC; buckets are ``[start, start + size)``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from runtime.clickhouse import ClickHouse
from schemas.events import as_utc

ROLLUP_QUANTILES = (0.5, 0.95, 0.99)
BUCKETS = {"1h": ("durations_hourly", timedelta(hours=1), "toStartOfHour"),
           "1d": ("durations_daily", timedelta(days=1), "toStartOfDay")}
MAX_QUANTILES = 10
WEEK = timedelta(days=7)

_RUN_COLUMNS = ("event_id", "start_event_id", "rid", "started_at", "finished_at", "duration_s", "outcome", "exit_status")


def _naive_utc(dt: datetime) -> datetime:
    """What the client binds as a UTC DateTime without consulting the machine's time zone."""
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def _number(x: float | None) -> float | None:
    # An empty t-digest answers NaN, which JSON cannot carry.
    return None if x is None or math.isnan(x) else float(x)


def align(dt: datetime, bucket: str) -> datetime:
    """The start of the bucket ``dt`` falls in (UTC)."""
    dt = as_utc(dt)
    if bucket == "1d":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    return dt.replace(minute=0, second=0, microsecond=0)


async def runs(ch: ClickHouse, check_id: str, since: datetime, until: datetime, limit: int) -> list[dict]:
    """Runs that finished in ``[since, until)``, newest first."""
    rows = await ch.rows(
        f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs FINAL "
        "WHERE check_id = {c:UUID} AND finished_at >= {since:DateTime64(6, 'UTC')} "
        "AND finished_at < {until:DateTime64(6, 'UTC')} "
        "ORDER BY finished_at DESC, event_id LIMIT {limit:UInt32}",
        {"c": check_id, "since": _naive_utc(since), "until": _naive_utc(until), "limit": limit},
    )
    for r in rows:
        for key in ("event_id", "start_event_id", "rid"):
            r[key] = str(r[key]) if r[key] is not None else None
    return rows


async def durations(ch: ClickHouse, check_id: str, quantiles: list[float], bucket: str,
                    since: datetime, until: datetime) -> list[dict]:
    """Per bucket whose start lies in ``[align(since), until)``: runs, failures and the quantiles."""
    table, _, start_of = BUCKETS[bucket]
    params = {"c": check_id, "since": _naive_utc(align(since, bucket)), "until": _naive_utc(until)}
    if set(quantiles) <= set(ROLLUP_QUANTILES):
        sql = (
            "SELECT bucket, countMerge(runs) AS n_runs, countIfMerge(failures) AS n_failures, "
            "quantilesTDigestMerge(0.5, 0.95, 0.99)(duration) AS q "
            f"FROM {table} WHERE check_id = {{c:UUID}} "
            "AND bucket >= {since:DateTime('UTC')} AND bucket < {until:DateTime('UTC')} "
            "GROUP BY bucket ORDER BY bucket"
        )
        pick = [ROLLUP_QUANTILES.index(q) for q in quantiles]
    else:
        # Placeholders only: the values are bound by the server as Float64.
        params.update({f"q{i}": q for i, q in enumerate(quantiles)})
        levels = ", ".join(f"{{q{i}:Float64}}" for i in range(len(quantiles)))
        sql = (
            f"SELECT {start_of}(finished_at) AS bucket, count() AS n_runs, countIf(outcome = 'fail') AS n_failures, "
            f"quantilesTDigest({levels})(duration_s) AS q "
            "FROM runs FINAL WHERE check_id = {c:UUID} "
            "AND finished_at >= {since:DateTime('UTC')} AND bucket < {until:DateTime('UTC')} "
            "GROUP BY bucket ORDER BY bucket"
        )
        pick = list(range(len(quantiles)))
    return [
        {"bucket": r["bucket"], "runs": int(r["n_runs"]), "failures": int(r["n_failures"]),
         "quantiles": [_number(r["q"][i]) for i in pick]}
        for r in await ch.rows(sql, params)
    ]


# Up to this many checks, the project's check ids go into the query (an array parameter); a
# bigger project is filtered by project alone and its deleted checks are dropped here instead.
MAX_ID_FILTER = 2000


async def _fleet(ch: ClickHouse, select: str, having_order: str, project_id: str, check_ids: list[str],
                 since: datetime, until: datetime, limit: int, extra: dict | None = None) -> list[tuple]:
    """Per check rows of the project's current checks, from hourly buckets in ``[since, until)``.

    ``select`` and ``having_order`` are this module's constants, never request text.
    """
    if not check_ids:
        return []
    by_ids = len(check_ids) <= MAX_ID_FILTER
    sql = (
        f"SELECT check_id, {select} FROM durations_hourly "
        "WHERE project_id = {p:UUID} "
        "AND bucket >= {since:DateTime('UTC')} AND bucket < {until:DateTime('UTC')} "
        + ("AND check_id IN {ids:Array(UUID)} " if by_ids else "")
        + f"GROUP BY check_id {having_order}"
        + (" LIMIT {limit:UInt32}" if by_ids else "")
    )
    params = {"p": project_id, "since": _naive_utc(align(since, "1h")), "until": _naive_utc(until),
              "limit": limit, **(extra or {})}
    if by_ids:
        params["ids"] = list(check_ids)
    # A deleted check's old rows stay out of the rankings.
    wanted = set(check_ids)
    rows = await ch.rows(sql, params)
    return [(str(r["check_id"]), *list(r.values())[1:]) for r in rows if str(r["check_id"]) in wanted][:limit]


async def slowest(ch: ClickHouse, project_id: str, check_ids: list[str], since: datetime, until: datetime,
                  limit: int) -> list[dict]:
    """Checks by p95 duration (hourly buckets in range), slowest first."""
    rows = await _fleet(
        ch, "countMerge(runs) AS n, countIfMerge(failures), quantilesTDigestMerge(0.5, 0.95, 0.99)(duration) AS q",
        "HAVING n > 0 ORDER BY q[2] DESC, check_id", project_id, check_ids, since, until, limit)
    return [{"check_id": c, "runs": int(n), "failures": int(f),
             "p50": _number(q[0]), "p95": _number(q[1]), "p99": _number(q[2])} for c, n, f, q in rows]


async def failure_rates(ch: ClickHouse, project_id: str, check_ids: list[str], since: datetime,
                        until: datetime, limit: int) -> list[dict]:
    """failures / runs per check (hourly buckets in range), highest rate first."""
    rows = await _fleet(
        ch, "countMerge(runs) AS n, countIfMerge(failures) AS f, f / n AS rate",
        "HAVING n > 0 ORDER BY rate DESC, f DESC, check_id", project_id, check_ids, since, until, limit)
    return [{"check_id": c, "runs": int(n), "failures": int(f), "failure_rate": float(rate)}
            for c, n, f, rate in rows]


async def p95_growth(ch: ClickHouse, project_id: str, check_ids: list[str], until: datetime,
                     limit: int) -> list[dict]:
    """Checks whose p95 grew most: the week before ``until`` against the week before that.

    Growth is relative ((now - before) / before); checks without runs in both weeks, or with a
    zero p95 before, have no growth to rank and are left out.
    """
    start, mid, end = window(until)
    rows = await _fleet(
        ch,
        "countMergeIf(runs, bucket >= {mid:DateTime('UTC')}) AS n_now, "
        "countMergeIf(runs, bucket < {mid:DateTime('UTC')}) AS n_before, "
        "quantilesTDigestMergeIf(0.5, 0.95, 0.99)(duration, bucket >= {mid:DateTime('UTC')})[2] AS now, "
        "quantilesTDigestMergeIf(0.5, 0.95, 0.99)(duration, bucket < {mid:DateTime('UTC')})[2] AS before",
        "HAVING n_now > 0 AND n_before > 0 AND before > 0 ORDER BY (now - before) / before DESC, check_id",
        project_id, check_ids, start, end, limit, {"mid": _naive_utc(mid)})
    return [{"check_id": c, "runs": int(n_now), "runs_before": int(n_before),
             "p95": _number(now), "p95_before": _number(before), "growth": _number((now - before) / before)}
            for c, n_now, n_before, now, before in rows]


def window(until: datetime) -> tuple[datetime, datetime, datetime]:
    """The (start, middle, end) of the two weeks ``p95_growth`` compares."""
    end = align(until, "1h")
    return end - 2 * WEEK, end - WEEK, end
