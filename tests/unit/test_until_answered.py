"""A service of the distributed mode started before its broker or its ClickHouse server answers waits for
them (``pingstream.cli._until_answered``, on ``runtime.backoff``, the loop every retry uses); the end-to-end
form is in tests/e2e/test_faults.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pingstream import cli
from runtime import backoff
from runtime.clickhouse import Unreachable
from runtime.consumer import retry
from runtime.kafkabroker import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_a_failure_that_may_mend_is_tried_again_with_growing_waits_until_it_works(caplog):
    attempts = []

    async def start():
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise Unreachable("ClickHouse at http://127.0.0.1:1 does not answer: refused")
        return "answered"

    got = await backoff.until_answered(start, may_mend=lambda exc: isinstance(exc, Unreachable),
                                       stop=asyncio.Event(), first_s=0.01, max_s=0.02)
    assert got == "answered" and len(attempts) == 4
    waits = [b - a for a, b in zip(attempts, attempts[1:])]
    assert waits[0] >= 0.01 and waits[1] >= 0.02 and waits[2] >= 0.02  # doubled, then capped
    warned = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(warned) == 3 and "does not answer" in warned[0] and "trying again in 0.01 s" in warned[0]


async def test_a_stop_ends_the_wait_at_once_and_another_failure_is_raised_at_once():
    stop = asyncio.Event()
    attempts = []

    async def unreachable():
        attempts.append(1)
        asyncio.get_running_loop().call_later(0.05, stop.set)  # as SIGTERM while it waits
        raise Unreachable("not yet")

    started = time.monotonic()
    assert await cli._until_answered(unreachable, lambda exc: isinstance(exc, Unreachable), stop) is False
    assert time.monotonic() - started < 0.4 and attempts == [1]  # not the 0.5 s wait, and no try after the stop

    async def refused():
        raise ValueError("a wrong password does not mend by waiting")

    with pytest.raises(ValueError):
        await cli._until_answered(refused, lambda exc: isinstance(exc, Unreachable), asyncio.Event())


async def test_a_shell_step_stopped_while_it_waits_gives_up_at_once():
    """A batch step whose database is away gives up as soon as the service stops, not after its wait (up to 30 s):
    the batch stays uncommitted and is read again."""
    stop = asyncio.Event()

    async def insert():
        raise ConnectionError("database away")

    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    with pytest.raises(backoff.Stopped):
        await retry("insert", insert, stop=stop, first_backoff_s=5)
    assert time.monotonic() - started < 2


def test_a_projector_whose_clickhouse_server_does_not_answer_waits_then_stops_on_sigterm(tmp_path):
    """No traceback, no exit: it says so and asks again until SIGTERM, then ends with 0."""
    env = {**os.environ, "PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_KAFKA": "",
           "PINGSTREAM_CLICKHOUSE": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([sys.executable, "-m", "pingstream.cli", "projector"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while sum("trying again" in line for line in lines) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert sum("does not answer" in line and "trying again" in line for line in lines) >= 2, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)


_HOLD = "import chdb, sys, time; c = chdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(float(sys.argv[2]))"


def test_a_projector_whose_engine_another_process_holds_waits_for_it(tmp_path):
    """Another process holds the embedded engine's data path (a ``pingstream sql`` run a moment before, an
    engine still stopping): the projector waits for it, then opens it, instead of ending."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "clickhouse"), "6"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    proc = None
    try:
        assert holder.stdout.readline().strip() == "held"
        env = {**os.environ, "PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_KAFKA": "", "PINGSTREAM_SQL_PORT": "0",
               "PINGSTREAM_SQL_NATIVE_PORT": "off"}
        env.pop("PINGSTREAM_CLICKHOUSE", None)
        proc = subprocess.Popen([sys.executable, "-m", "pingstream.cli", "projector"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.monotonic() + 90
        while not any("SQL (ClickHouse HTTP interface)" in line for line in lines) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert "held by another process" in text, text
        assert "SQL (ClickHouse HTTP interface)" in text, text  # opened once the holder let it go
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, text + out
    finally:
        for p in (proc, holder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
