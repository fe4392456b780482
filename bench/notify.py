"""Notifier throughput and latency: transitions written at a fixed rate into the embedded log,
delivered by ``pingstream notify`` (a process of its own) as signed webhooks to a local receiver.

    .venv/bin/python -m bench.notify [--rate 1000] [--seconds 5] [--checks 1000] [--channels 1]

Open loop: every 10 ms the bench writes rate/100 transitions (down and up in turn, each an
alert for the default channels). Latency is per alert, from the moment its transition was
written (acknowledged by the log) to the moment the receiver got the request. Prints
transitions/s delivered and p50/p99/max; the goal is p99 under 1 s at 1,000 transitions/s.
Bounded: the run ends ``--seconds`` after the start plus at most 30 s of draining.
Results go to ``bench/results/notify.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.procs import Service
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import TOPIC_TRANSITIONS, CheckConfig, Transition, encode, utcnow, uuid7
from tests.notify.fleet import notifier_started, seed_fleet
from tests.notify.receivers import http_receiver

RESULTS = Path(__file__).resolve().parent / "results" / "notify.json"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args) -> dict:
    data = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    env = {"PINGSTREAM_DATA": str(data), "PINGSTREAM_KAFKA": "", "PINGSTREAM_PARTITIONS": "4",
           "PINGSTREAM_WEBHOOK_ALLOW_PRIVATE": "1", "PINGSTREAM_CLICKHOUSE": "off", "PINGSTREAM_LOG_LEVEL": "WARNING"}
    log = SqliteEventLog(data / "eventlog.sqlite3", default_partitions=4)
    await log.start()
    async with http_receiver() as rx:
        project, checks = await seed_fleet(log, [f"{rx.url}/c{i}" for i in range(args.channels)], args.checks,
                                           "bench")
        notifier = Service("notify", env).start()
        try:
            while not notifier_started(data / "eventlog.sqlite3"):
                if notifier.proc.poll() is not None:
                    raise RuntimeError(notifier.tail())
                await asyncio.sleep(0.1)
            written: dict[str, float] = {}
            status = {c.id: "up" for c in checks}
            per_tick = max(1, args.rate // 100)
            began = time.monotonic()
            n = 0

            async def one(check: CheckConfig) -> None:
                frm = status[check.id]
                to = "down" if frm == "up" else "up"
                status[check.id] = to
                t = Transition(event_id=str(uuid7()), check_id=check.id, project_id=project.id, from_status=frm,
                               to_status=to, at=utcnow(), reason="bench", from_base=frm, to_base=to)
                await log.produce(TOPIC_TRANSITIONS, encode(t), key=check.id.encode())
                written[t.event_id] = time.time()

            while time.monotonic() - began < args.seconds:
                tick = began + n / (args.rate / per_tick) * 1.0
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                await asyncio.gather(*(one(checks[(n * per_tick + k) % len(checks)]) for k in range(per_tick)))
                n += 1
            write_s = time.monotonic() - began
            want = len(written) * args.channels
            try:
                await rx.wait_for(lambda: len(rx.received) >= want, timeout_s=30)
            except AssertionError:
                pass  # report what arrived
        finally:
            notifier.stop()
            await log.close()
    got = [r for r in rx.received if r.headers.get("Idempotency-Key") in written]
    latencies = [r.at - written[r.headers["Idempotency-Key"]] for r in got]
    first = min(written.values())
    span = max(r.at for r in got) - first if got else float("nan")
    result = {
        "rate_asked": args.rate, "written": len(written), "write_rate": round(len(written) / write_s),
        "channels": args.channels, "delivered": len(got), "expected": len(written) * args.channels,
        "delivered_per_s": round(len(got) / span) if got else 0,
        "p50_ms": round(statistics.median(latencies) * 1000) if got else None,
        "p99_ms": round(_quantile(latencies, 0.99) * 1000) if got else None,
        "max_ms": round(max(latencies) * 1000) if got else None,
        "load_average_1m": round(os.getloadavg()[0], 1),  # other work on the machine: figures are indicative
    }
    print(f"notify: {result['written']} transitions written at {result['write_rate']}/s (asked {args.rate}/s), "
          f"{result['delivered']}/{result['expected']} alerts delivered to {args.channels} channel(s) at "
          f"{result['delivered_per_s']}/s; transition → delivered p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
