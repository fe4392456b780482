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
    .venv/bin/python -m bench.monitor --rules --memory-only  # 1M checks with the rules: memory only

``--outage`` runs the partial-outage fleet instead (issue #19's volume gate): N checks
(default 100,000) pinging every 10 minutes over 100 projects, with 3 earlier days of the
same volume as history; a third of every project goes quiet for 10 minutes, then pings
again. Prints the downs emitted (goal 0), the unknown outcomes, and how long after the
path is back until every quiet check is up and has pinged again; ``--no-gate`` runs it
without the gate. ``--outage --networks``: every project's checks ping from three source
networks (a third each), and the quiet third is one network; one check per project in each
of the two other networks really stops with the outage. Prints the downs of the quiet
network (goal 0), the real stops' downs and how late they came, and the resident memory
(``--stops`` without ``--networks``: the same real stops, the gate per project only).
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
from monitor.volume import DAY_MINUTES, VolumeGate, network_of, scope_of
from runtime.eventlog.base import Record
from schemas.events import (
    TOPIC_PINGS,
    CheckConfig,
    CheckUpserted,
    IngestAnomaly,
    PingEvent,
    Tick,
    Transition,
    Window,
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


def _id(i: int) -> str:
    return str(uuid.UUID(int=i + 1, version=4))


def configs(n: int, cron_share: float, rules: bool = False):
    """N checks over 100 projects: simple timeouts 1-5 min, a share of cron '*/5 * * * *' in a few zones.

    ``rules``: every check has failure_threshold 3 and recovery_threshold 2, every other one a
    max_runtime, one in ten a maintenance window of its own (a recurring one and a one-off one),
    one in ten depends on the check before it."""
    created = datetime.fromtimestamp(T0 - 86400, timezone.utc)
    zones = ["UTC", "Europe/Riga", "America/New_York", "Asia/Kolkata"]
    n_cron = int(n * cron_share)
    for i in range(n):
        kw = dict(kind="simple", timeout_s=60 * (1 + i % 5), grace_s=60)
        if i < n_cron:
            kw = dict(kind="cron", schedule="*/5 * * * *", tz=zones[i % len(zones)], grace_s=60)
        if rules:
            kw.update(failure_threshold=3, recovery_threshold=2)
            if i % 2:
                kw.update(max_runtime_s=600.0)
            if i % 10 == 3:
                kw.update(windows=(
                    Window(id=_id(n + i), cron="0 3 * * 6", duration_s=3600, tz=zones[i % len(zones)]),
                    Window(id=_id(2 * n + i), start=created, end=datetime.fromtimestamp(T0 + 7 * 86400, timezone.utc)),
                ))
            if i % 10 == 5:
                kw.update(depends_on=(_id(i - 1),))
        yield CheckConfig(id=_id(i), project_id=f"project-{i % 100}", created=created, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=1_000_000)
    ap.add_argument("--tick-s", type=float, default=1.0, help="stream seconds between ticks (the edge's interval)")
    ap.add_argument("--cron-share", type=float, default=0.2)
    ap.add_argument("--rules", action="store_true", help="thresholds, run time bounds, windows, dependencies")
    ap.add_argument("--memory-only", action="store_true", help="stop after every check is up (memory, fold rate)")
    ap.add_argument("--outage", action="store_true", help="the partial-outage fleet (volume gate)")
    ap.add_argument("--no-gate", action="store_true", help="--outage without the volume gate")
    ap.add_argument("--networks", action="store_true", help="--outage: three source networks, one goes quiet")
    ap.add_argument("--stops", action="store_true", help="--outage: the checks that really stop, without --networks")
    args = ap.parse_args()
    if args.outage:
        outage(args.checks if args.checks != 1_000_000 else 100_000, gate=not args.no_gate, networks=args.networks,
               stops=args.stops)
        return
    n = args.checks
    gc.freeze()  # long-lived data: spare the collector from walking it (as a long-running service would)
    base_rss = rss_mb()

    plans = PlanBook()
    for c in configs(n, args.cron_share, args.rules):
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
    if args.memory_only:
        rules = " with thresholds, run time bounds, windows, dependencies" if args.rules else ""
        print(f"checks                      {n:,} ({args.cron_share:.0%} cron){rules}, {PARTITIONS} partitions")
        print(f"resident memory             {held_rss:,.0f} MB with all checks up ({held_rss - base_rss:,.0f} MB above start)")
        print(f"per check                   {(held_rss - base_rss) * 1024 * 1024 / n:,.0f} bytes")
        print(f"pings folded (new→up)       {n / ping_s:,.0f} /s (decode + state machine + state record)")
        return

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

    rules = " with thresholds, run time bounds, windows, dependencies" if args.rules else ""
    print(f"checks                      {n:,} ({args.cron_share:.0%} cron){rules}, {PARTITIONS} partitions, tick {args.tick_s}s")
    print(f"resident memory             {held_rss:,.0f} MB with all checks up ({held_rss - base_rss:,.0f} MB above start)")
    print(f"per check                   {(held_rss - base_rss) * 1024 * 1024 / n:,.0f} bytes")
    print(f"pings folded (new→up)       {n / ping_s:,.0f} /s (decode + state machine + state record)")
    print(f"deadline transitions        {2 * downs / expiry_s:,.0f} /s (up→grace→down, incl. encode)")
    print(f"all transitions             {emitted:,} in {ping_s + expiry_s:.1f}s = {emitted / (ping_s + expiry_s):,.0f} /s")
    print(f"down-detection latency      p50 {pct(latencies, 0.5):.3f}s  p99 {pct(latencies, 0.99):.3f}s  max {max(latencies):.3f}s (stream time)")
    print(f"wall time per tick          p50 {pct(tick_wall, 0.5) * 1000:.1f}ms  p99 {pct(tick_wall, 0.99) * 1000:.1f}ms")
    print(f"downs detected              {downs:,} of {n:,}")


def outage(n: int, gate: bool, period_s: int = 600, quiet_from_min: int = 12, quiet_min: int = 10,
           networks: bool = False, stops: bool = False) -> None:
    """The partial-outage fleet: see the module's docstring."""
    gc.freeze()
    base_rss = rss_mb()
    projects = 100

    def addr(i: int) -> str:  # the third of the project a check is in is its network
        return f"10.{(i // projects) % 3}.{i % projects}.{(i // projects) % 250 + 1}" if networks else ""
    plans = PlanBook()
    created = datetime.fromtimestamp(T0 - 10 * 86400, timezone.utc)
    for i in range(n):
        plans.apply(CheckUpserted(event_id="x", check=CheckConfig(
            id=_id(i), project_id=f"project-{i % projects}", created=created, timeout_s=period_s, grace_s=60)))
    plans.changed.clear()
    volume = VolumeGate() if gate else None
    per_minute = n // projects * 60 // period_s
    if volume is not None:  # 3 earlier days of the same volume (as the monitor would have counted it)
        for p in range(projects):
            project = f"project-{p}"
            volume.counts[project] = {}
            volume.first[project] = int(T0 // 60) - 3 * DAY_MINUTES - 60
            for day in (1, 2, 3):
                for m in range(-30, 60):
                    volume.counts[project][int(T0 // 60) - day * DAY_MINUTES + m] = per_minute
            for k in range(3 if networks else 0):  # each network a third of it
                network = network_of(addr(k * projects + p))
                scope = scope_of(project, network)
                volume.networks.setdefault(project, set()).add(network)
                volume.counts[scope] = {}
                volume.first[scope] = volume.first[project]
                for day in (1, 2, 3):
                    for m in range(-30, 60):
                        volume.counts[scope][int(T0 // 60) - day * DAY_MINUTES + m] = per_minute // 3
    monitor = Monitor(plans, StreamClock(list(range(PARTITIONS)), gap_threshold_s=5.0), volume)
    offsets = [0] * PARTITIONS
    quiet = {_id(i) for i in range(n) if (i // projects) % 3 == 0}  # a third of every project
    # With networks: one check per project in each of the other two networks really stops with the outage.
    dead = {_id(i) for i in range(projects, 3 * projects)} if networks or stops else set()
    index = {_id(i): i for i in range(n)}
    last_heard: dict[str, float] = {}
    dead_downs: dict[str, float] = {}
    first_ping = {_id(i): (i * period_s) / n for i in range(n)}  # spread over the period

    def feed(event, partition: int) -> None:
        monitor.fold(Record(TOPIC_PINGS, partition, offsets[partition], None, encode(event), 0))
        offsets[partition] += 1

    downs = unknown = anomalies = 0
    quiet_downs = 0
    back_at = T0 + 60 * (quiet_from_min + quiet_min)
    recovered_at = heard_at = None
    order = sorted(first_ping, key=first_ping.get)
    started = time.perf_counter()
    pings = 0
    minutes = quiet_from_min + quiet_min + period_s // 60 + 3
    for m in range(minutes):
        start = T0 + 60 * m
        in_outage = quiet_from_min <= m < quiet_from_min + quiet_min
        # the checks whose slot falls in this minute ping (the quiet third not during the outage)
        for s in range(60):
            now = start + s
            lo, hi = (now - T0) % period_s, (now - T0) % period_s + 1
            for j in range(int(lo * n / period_s), int(hi * n / period_s)):
                check_id = order[j]
                if (in_outage and check_id in quiet) or (m >= quiet_from_min and check_id in dead):
                    continue
                at = now + (first_ping[check_id] % 1)
                last_heard[check_id] = at
                feed(PingEvent(event_id=f"p{pings}", check_id=check_id, project_id=plans.plans[check_id].project_id,
                               kind="success", received_at=datetime.fromtimestamp(at, timezone.utc),
                               remote_addr=addr(index[check_id])),
                     j % PARTITIONS)
                pings += 1
            stamp = datetime.fromtimestamp(now + 1, timezone.utc)
            for p in range(PARTITIONS):
                feed(Tick(event_id="t", at=stamp, partition=p), p)
            monitor.advance()
            out, _records = monitor.take()
            for e in out:
                if isinstance(e, Transition) and e.to_status == "down":
                    downs += 1
                    quiet_downs += e.check_id in quiet
                    if e.check_id in dead and e.check_id not in dead_downs:
                        # how late after it was due down (last ping + period + grace)
                        # in stream time, when emitted (the clock is at now + 1 after this second's ticks)
                        dead_downs[e.check_id] = now + 1 - (last_heard[e.check_id] + period_s + 60)
                elif isinstance(e, IngestAnomaly):
                    anomalies += 1
                    unknown += e.unknown
        if m >= quiet_from_min + quiet_min:
            if recovered_at is None and all(monitor.states[c].status == "up" for c in quiet):
                recovered_at = start + 60
            if heard_at is None and all(monitor.states[c].last_ping >= back_at for c in quiet):
                heard_at = start + 60
    wall = time.perf_counter() - started
    print(f"fleet                       {n:,} checks, every {period_s // 60} min, {projects} projects, "
          f"volume gate {'on' if gate else 'off'}")
    print(f"outage                      a third of every project quiet for {quiet_min} min "
          f"({len(quiet):,} checks)")
    print(f"downs emitted               {downs:,} ({quiet_downs:,} of them quiet checks)")
    print(f"unknown outcomes            {unknown:,} in {anomalies:,} ingest_anomaly events")
    recover = f"{recovered_at - back_at:.0f}s of stream time" if recovered_at else "not within the run"
    print(f"every quiet check up        {recover} after the path is back (minute resolution)")
    heard = f"{heard_at - back_at:.0f}s" if heard_at else "not within the run"
    print(f"every quiet check pinged    {heard} after (their next run: up to one {period_s // 60}-min period)")
    print(f"run                         {pings:,} pings, {minutes} min of stream time in {wall:.1f}s wall")
    if networks:
        print("source networks             3 per project (/24), the quiet third one of them")
    if dead:
        late = sorted(dead_downs.values())
        print(f"real stops (other networks) {len(dead_downs):,} of {len(dead):,} down, "
              f"emitted late by p50 {pct(late, 0.5):.0f}s max {pct(late, 1.0):.0f}s of stream time")
    print(f"resident memory             {rss_mb() - base_rss:,.0f} MB over the start ({rss_mb():,.0f} MB in all)")


if __name__ == "__main__":
    main()
