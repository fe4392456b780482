"""A channel whose endpoint hangs does not delay another channel: the healthy channel's alert
latency (transition written → request received) is measured without and with a hanging one."""

from __future__ import annotations

import asyncio
import statistics
import time

from tests.notify.receivers import http_receiver
from tests.notify.rig import rig

N = 150


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def _healthy_latencies(tmp_path, with_hanging: bool) -> tuple[list[float], int]:
    async with rig(tmp_path, PINGSTREAM_NOTIFY_TIMEOUT_S="30", PINGSTREAM_NOTIFY_RETRY_S="60") as r, \
            http_receiver() as rx:
        rx.hang.add("/hanging")
        if with_hanging:
            await r.channel(kind="webhook", url=rx.url + "/hanging")
        await r.channel(kind="webhook", url=rx.url + "/healthy")
        checks = [await r.check(name=f"job-{i}") for i in range(10)]
        await r.start()
        sent: dict[str, float] = {}
        for i in range(N):
            check = checks[i % len(checks)]
            frm, to = ("up", "down") if (i // len(checks)) % 2 == 0 else ("down", "up")
            t = await r.transition(check, frm, to)
            sent[t.event_id] = time.time()
            await asyncio.sleep(0.01)
        await rx.wait_for(lambda: len(rx.at("/healthy")) >= N, timeout_s=30)
        latencies = [x.at - sent[x.headers["Idempotency-Key"]] for x in rx.at("/healthy")]
        return latencies, len(rx.at("/hanging"))


async def test_a_hanging_endpoint_never_delays_another_channel(tmp_path):
    alone, _ = await _healthy_latencies(tmp_path / "alone", with_hanging=False)
    beside, hung = await _healthy_latencies(tmp_path / "beside", with_hanging=True)
    print(f"healthy channel p99: {p99(alone) * 1000:.0f} ms alone, {p99(beside) * 1000:.0f} ms beside a hanging "
          f"endpoint ({hung} requests hanging there); median {statistics.median(alone) * 1000:.0f} / "
          f"{statistics.median(beside) * 1000:.0f} ms")
    assert hung >= 1  # the hanging channel really was being sent to (and held its workers)
    assert len(beside) == N
    # Indicative bound on a shared machine: the same order as alone, and well under a second.
    assert p99(beside) < max(2 * p99(alone), p99(alone) + 0.3)
    assert p99(beside) < 1.0
