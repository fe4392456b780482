"""The embedded log on a full disk: 503 with Retry-After and a clear log line, never a false 200,
and no corruption once space returns. (A full disk is simulated with SQLite's own page limit,
which fails writes with the same SQLITE_FULL error a full file system gives.)"""

from __future__ import annotations

import asyncio
import logging


async def _on_writer(log, fn):
    return await asyncio.get_running_loop().run_in_executor(log._writer, fn)


async def _set_page_limit(log, pages: int | None) -> None:
    def run() -> None:
        (count,) = log._conn.execute("PRAGMA page_count").fetchone()
        log._conn.execute(f"PRAGMA max_page_count={int(count if pages is None else pages)}")

    await _on_writer(log, run)


async def test_full_disk_answers_503_then_recovers_without_corruption(edge, caplog):
    check = await edge.add_check()
    assert (await edge.client.post(f"/ping/{check.id}", data=b"before")).status == 200
    await _set_page_limit(edge.log, None)  # no page may be added: the "disk" is full
    caplog.set_level(logging.ERROR)
    statuses = []
    for i in range(20):
        r = await edge.client.post(f"/ping/{check.id}", data=b"x" * 90 + str(i).encode())
        statuses.append(r.status)
        if r.status == 503:
            assert r.headers["Retry-After"]
            assert (await r.text()) == "service unavailable"
    assert 503 in statuses, "a full disk must refuse pings"
    assert any("event log write" in rec.getMessage() and "full" in rec.getMessage() for rec in caplog.records)

    await _set_page_limit(edge.log, 1_000_000)  # space is back
    assert (await edge.client.post(f"/ping/{check.id}", data=b"after")).status == 200

    def integrity() -> str:
        return edge.log._conn.execute("PRAGMA integrity_check").fetchone()[0]

    assert await _on_writer(edge.log, integrity) == "ok"
    bodies = [e.body for e in await edge.events()]
    # exactly the pings answered 200 are in the log: none lost, none that were refused
    assert len(bodies) == 2 + statuses.count(200)
    assert bodies[0] == b"before" and bodies[-1] == b"after"
