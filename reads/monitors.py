"""What the Overwatch monitor documents need beyond a check's projected state.

Parameterised queries only; FINAL where exactness matters.
"""

from __future__ import annotations

from runtime.clickhouse import ClickHouse


async def last_completion_failed(ch: ClickHouse, check_ids: list[str]) -> set[str]:
    """The checks whose latest success-or-failure ping (HTTP ping or checkin) was a failure.

    Tells a check that is down because it reported a failure from one that is down because it
    missed its deadline: after a failure no deadline runs until the next success."""
    if not check_ids:
        return set()
    rows = await ch.rows_by_ids(
        "SELECT check_id, argMax(kind, (received_at, n)) AS last_kind FROM pings FINAL "
        "WHERE check_id IN {ids:Array(UUID)} AND kind IN ('success', 'fail') GROUP BY check_id",
        check_ids,
    )
    return {str(r["check_id"]) for r in rows if r["last_kind"] == "fail"}
