"""kill -9 of the notifier mid-delivery, 10 times, while transitions keep coming.

The test process plays the monitor (it writes transitions into the embedded log) and the
receivers (a real HTTP server, answering after a random short delay so that kills land while
requests are in flight); ``pingstream notify`` runs as a real process that gets SIGKILL at random
moments and is started again. Afterwards every transition reached every subscribed channel, and
whatever arrived more than once arrived with the same idempotency key and signature id.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from bench.procs import Service
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import TOPIC_TRANSITIONS, Transition, encode, utcnow, uuid7
from tests.notify.fleet import notifier_started, seed_fleet
from tests.notify.receivers import http_receiver

KILLS = 10
pytestmark = pytest.mark.slow


async def test_notifier_kill_9_ten_times_loses_nothing(tmp_path):
    rng = random.Random()
    env = {"PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_KAFKA": "", "PINGSTREAM_PARTITIONS": "4",
           "PINGSTREAM_WEBHOOK_ALLOW_PRIVATE": "1", "PINGSTREAM_CLICKHOUSE": "off", "PINGSTREAM_LOG_LEVEL": "WARNING"}
    log = SqliteEventLog(tmp_path / "eventlog.sqlite3", default_partitions=4)
    await log.start()
    async with http_receiver() as rx:
        rx.delay_s = lambda: rng.uniform(0, 0.05)  # requests in flight when the kill comes
        project, checks = await seed_fleet(log, [rx.url + "/a", rx.url + "/b"], 40)
        notifier = Service("notify", env).start()
        try:
            deadline = time.monotonic() + 30
            while not notifier_started(tmp_path / "eventlog.sqlite3"):
                assert time.monotonic() < deadline and notifier.proc.poll() is None, notifier.tail()
                await asyncio.sleep(0.1)
            produced: list[str] = []
            status = {c.id: "up" for c in checks}
            stop = asyncio.Event()

            async def monitor() -> None:  # down and up in turn: each is an alert for the default channels
                while not stop.is_set():
                    check = rng.choice(checks)
                    frm = status[check.id]
                    to = "down" if frm == "up" else "up"
                    t = Transition(event_id=str(uuid7()), check_id=check.id, project_id=project.id, from_status=frm,
                                   to_status=to, at=utcnow(), reason="test", from_base=frm, to_base=to)
                    await log.produce(TOPIC_TRANSITIONS, encode(t), key=check.id.encode())
                    status[check.id] = to
                    produced.append(t.event_id)
                    await asyncio.sleep(0.01)

            producing = asyncio.create_task(monitor())
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                notifier.kill()
                notifier.start()
            await asyncio.sleep(1.0)
            stop.set()
            await producing
            want = set(produced)

            def done() -> bool:
                return all(want <= {r.headers["Idempotency-Key"] for r in rx.at(p)} for p in ("/a", "/b"))

            await rx.wait_for(done, timeout_s=60)
        finally:
            notifier.stop()
            await log.close()
        for path in ("/a", "/b"):
            got = rx.at(path)
            keys = Counter(r.headers["Idempotency-Key"] for r in got)
            assert set(keys) == want, "an alert lost, or one never produced"
            assert all(r.headers["webhook-id"] == r.headers["Idempotency-Key"] for r in got)
            print(f"notifier kill -9 x{KILLS}: {len(want)} transitions, channel {path}: {len(got)} requests, "
                  f"{sum(n - 1 for n in keys.values())} repeated (same key)")
