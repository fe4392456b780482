"""Monitor core at scale: memory, transitions/s, down-detection latency in stream time.

Drives ``monitor.state.Monitor`` (the service minus the log I/O: decode,
stream clock, state machine, deadline heap, encoding of transitions and state
records) with N scheduled checks:

1. every check pings once (new → up), spread over a minute of stream time;
2. the edge's ticks move the clock, every check goes up → grace → down.

Prints resident memory with all N checks held, transitions/s through the
core, and down-detection latency = stream time when the transition is
emitted − (expected time + grace), p50/p99. Latency is bounded by the tick
interval (the clock only moves on events); the wall time to process one
tick's deadlines is printed too, since it adds to real detection latency.

    .venv/bin/python -m bench.monitor               # 1,000,000 checks
    .venv/bin/python -m bench.monitor --checks 100000
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import uuid
from datetime import datetime, timezone

from monitor.clock import StreamClock
from monitor.plans import PlanBook
from monitor.state import Monitor
from runtime.eventlog.base import Record
from schemas.events import (
    TOPIC_PINGS,
    CheckConfig,
    CheckUpserted,
    PingEvent,
    Tick,
    Transition,
    encode,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PARTITIONS = 8


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def configs(n: int, cron_share: float):
    """N checks over 100 projects: simple timeouts 1-5 min, a share of cron '*/5 * * * *' in a few zones."""
    created = datetime.fromtimestamp(T0 - 86400, timezone.utc)
    zones = ["UTC", "Europe/Riga", "America/New_York", "Asia/Kolkata"]
    n_cron = int(n * cron_share)
    for i in range(n):
        kw = dict(kind="simple", timeout_s=60 * (1 + i % 5), grace_s=60)
        if i < n_cron:
            kw = dict(kind="cron", schedule="*/5 * * * *", tz=zones[i % len(zones)], grace_s=60)
        yield CheckConfig(id=str(uuid.UUID(int=i + 1, version=4)), project_id=f"project-{i % 100}", created=created, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=1_000_000)
    ap.add_argument("--tick-s", type=float, default=1.0, help="stream seconds between ticks (the edge's interval)")
    ap.add_argument("--cron-share", type=float, default=0.2)
    args = ap.parse_args()
    n = args.checks
    gc.freeze()  # long-lived data: spare the collector from walking it (as a long-running service would)
    base_rss = rss_mb()

    plans = PlanBook()
    for c in configs(n, args.cron_share):
        plans.apply(CheckUpserted(event_id="x", check=c))
    plans.changed.clear()
    monitor = Monitor(plans, StreamClock(list(range(PARTITIONS)), gap_threshold_s=5.0))
    offsets = [0] * PARTITIONS

    def feed(event, partition: int) -> None:
        monitor.fold(Record(TOPIC_PINGS, partition, offsets[partition], None, encode(event), 0))
        offsets[partition] += 1

    def tick(at: float) -> None:
        stamp = datetime.fromtimestamp(at, timezone.utc)
        for p in range(PARTITIONS):
            feed(Tick(event_id="t", at=stamp, partition=p), p)

    # 1. one success ping per check, spread over 60 s of stream time
    tick(T0)
    emitted = 0
    started = time.perf_counter()
    ids = list(plans.plans)
    for i, check_id in enumerate(ids):
        at = T0 + 60.0 * i / n
        event = PingEvent(
            event_id=f"ping-{i}",
            check_id=check_id,
            project_id=plans.plans[check_id].project_id,
            kind="success",
            received_at=datetime.fromtimestamp(at, timezone.utc),
        )
        feed(event, i % PARTITIONS)
        if i % 10_000 == 9_999:
            out, _records = monitor.take()
            emitted += len(out)
            [encode(e) for e in out]
    out, _ = monitor.take()
    emitted += len(out)
    ping_s = time.perf_counter() - started
    del ids
    gc.collect()
    held_rss = rss_mb()

    # 2. ticks until every check is down
    latencies: list[float] = []
    tick_wall: list[float] = []
    downs = 0
    now = T0
    started = time.perf_counter()
    while downs < n and now < T0 + 3 * 3600:
        now += args.tick_s
        t = time.perf_counter()
        tick(now)
        monitor.advance()
        out, _records = monitor.take()
        for e in out:
            encode(e)
            if isinstance(e, Transition) and e.to_status == "down":
                downs += 1
                due = e.at.timestamp()
                latencies.append(now - due)
        emitted += len(out)
        tick_wall.append(time.perf_counter() - t)
    expiry_s = time.perf_counter() - started

    print(f"checks                      {n:,} ({args.cron_share:.0%} cron), {PARTITIONS} partitions, tick {args.tick_s}s")
    print(f"resident memory             {held_rss:,.0f} MB with all checks up ({held_rss - base_rss:,.0f} MB above start)")
    print(f"per check                   {(held_rss - base_rss) * 1024 * 1024 / n:,.0f} bytes")
    print(f"pings folded (new→up)       {n / ping_s:,.0f} /s (decode + state machine + state record)")
    print(f"deadline transitions        {2 * downs / expiry_s:,.0f} /s (up→grace→down, incl. encode)")
    print(f"all transitions             {emitted:,} in {ping_s + expiry_s:.1f}s = {emitted / (ping_s + expiry_s):,.0f} /s")
    print(f"down-detection latency      p50 {pct(latencies, 0.5):.3f}s  p99 {pct(latencies, 0.99):.3f}s  max {max(latencies):.3f}s (stream time)")
    print(f"wall time per tick          p50 {pct(tick_wall, 0.5) * 1000:.1f}ms  p99 {pct(tick_wall, 0.99) * 1000:.1f}ms")
    print(f"downs detected              {downs:,} of {n:,}")


if __name__ == "__main__":
    main()
