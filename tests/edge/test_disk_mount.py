"""The embedded log on a real small file system: a tmpfs that fills up under load, a disk turning
read-only, and an edge started on a read-only mount. Under load: 503 with Retry-After and a clear log line while the disk refuses writes,
never a false 200, pings accepted again once the disk is back, and every ping answered 200 is in the
log exactly once with SQLite's integrity check passing.

Mounting needs root (as on our machines and in CI); where mount is refused the tests skip and say so,
and tests/edge/test_disk_full.py still covers a full disk through SQLite's page limit."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.app import create_app
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import Registry, create_project
from tests.edge.conftest import Edge
from tests.edge.server import EdgeTestServer

ROOT = Path(__file__).resolve().parents[2]


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); test_disk_full.py covers a full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
async def edge_on(small_fs, aiohttp_client):
    config = Config.from_env({"PINGSTREAM_DATA": str(small_fs)}, ping_body_limit=10_000)
    log = SqliteEventLog(config.sqlite_path, default_partitions=2)
    await log.start()
    registry = Registry()
    project = await create_project(log, "test", registry)
    client = await aiohttp_client(EdgeTestServer(create_app(config, log, registry, clickhouse=None)))
    try:
        yield Edge(client, log, registry, project, config), small_fs
    finally:
        await client.close()
        await log.close()


async def _ping(edge: Edge, check_id: str, i: int) -> int:
    r = await edge.client.post(f"/ping/{check_id}", data=f"{i:06d}".encode() + b"x" * 4000)
    if r.status == 503:
        assert r.headers["Retry-After"] and (await r.text()) == "service unavailable"
    return r.status


async def _on_writer(edge: Edge, fn):
    return await asyncio.get_running_loop().run_in_executor(edge.log._writer, fn)


async def _check_log(edge: Edge, acked: list[int]) -> None:
    integrity = await _on_writer(edge, lambda: edge.log._conn.execute("PRAGMA integrity_check").fetchone()[0])
    assert integrity == "ok"
    logged = [int(e.body[:6]) for e in await edge.events()]
    assert sorted(logged) == sorted(acked), "the log must hold exactly the pings answered 200"


async def test_a_file_system_that_fills_up(edge_on, caplog):
    edge, mnt = edge_on
    check = await edge.add_check()
    caplog.set_level(logging.ERROR)
    acked, refused = [], 0
    for i in range(2000):  # 1 MiB fills after a few hundred 4 KB pings
        status = await _ping(edge, check.id, i)
        if status == 200:
            acked.append(i)
        else:
            assert status == 503
            refused += 1
            if refused >= 10:
                break
    print(f"full tmpfs: {len(acked)} pings acked, then {refused} answered 503")
    assert refused >= 10 and acked, "a full disk must refuse pings (and the first ones fit)"
    assert any("event log write" in r.getMessage() for r in caplog.records)

    assert _mount("-o", "remount,size=64m", str(mnt)).returncode == 0  # space is back
    for i in range(10_000, 10_020):
        assert await _ping(edge, check.id, i) == 200
        acked.append(i)
    await _check_log(edge, acked)


async def test_a_disk_turning_read_only_under_load(edge_on, caplog):
    """A mounted file system with files open for writing cannot be remounted read-only from user
    space (the kernel answers "busy"), so the turn is made in SQLite: PRAGMA query_only fails every
    write with SQLITE_READONLY, the error a read-only database gives."""
    edge, mnt = edge_on
    assert _mount("-o", "remount,size=64m", str(mnt)).returncode == 0
    check = await edge.add_check()
    acked = [i for i in range(20) if await _ping(edge, check.id, i) == 200]
    assert len(acked) == 20
    caplog.set_level(logging.ERROR)
    await _on_writer(edge, lambda: edge.log._conn.execute("PRAGMA query_only=ON"))
    try:
        statuses = [await _ping(edge, check.id, i) for i in range(100, 120)]
    finally:
        await _on_writer(edge, lambda: edge.log._conn.execute("PRAGMA query_only=OFF"))
    assert set(statuses) == {503}, "no ping may be acknowledged while the disk is read-only"
    assert any("event log write" in r.getMessage() and "readonly" in r.getMessage() for r in caplog.records)
    for i in range(200, 220):
        assert await _ping(edge, check.id, i) == 200
        acked.append(i)
    await _check_log(edge, acked)


def test_an_edge_started_on_a_read_only_file_system_says_so(small_fs):
    """A real read-only mount at start: one clear line and a non-zero exit, no traceback."""

    async def fill() -> None:
        async with SqliteEventLog(small_fs / "eventlog.sqlite3") as log:
            await log.produce("pingstream.pings", b"{}")

    asyncio.run(fill())
    ro = _mount("-o", "remount,ro", str(small_fs))
    assert ro.returncode == 0, ro.stderr
    env = {**os.environ, "PINGSTREAM_DATA": str(small_fs), "PINGSTREAM_PORT": "0", "PINGSTREAM_CLICKHOUSE": "off"}
    for data_dir in (small_fs, small_fs / "new"):
        env["PINGSTREAM_DATA"] = str(data_dir)
        done = subprocess.run([sys.executable, "-m", "pingstream.cli", "ingest"], env=env, capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("pingstream: ") and ("unable to open" in last or "Read-only" in last), last
