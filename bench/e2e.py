"""End to end: pings at rising fixed rates → how long until each is queryable in ClickHouse.

    python bench/e2e.py [--rates 250,500,1000,2000,3000] [--duration 8] [--modes embedded,kafka] [--rounds 3]

An open-loop generator (requests leave on schedule whatever the answers do; a
new connection when every open one waits for an answer, as from a fleet)
POSTs pings with a unique body to a system started fresh for every rate:
- ``embedded``: ``pingstream up`` as users start it (SQLite log, edges and the process holding chdb);
- ``kafka``: ``pingstream ingest`` (``--kafka-edges`` edge processes sharing
  the port) + ``projector`` + ``monitor`` as their own processes on a real
  broker (PINGSTREAM_KAFKA, else one from the cached jars).
After the load and a drain period the system is stopped and every row's
``inserted_at`` (when ClickHouse made it visible) is compared with the ping's
scheduled send time: that is the ping → queryable latency, per ping, with
queueing anywhere (client, edge, log, projector) counted. A ping not visible
when the system stops counts as infinitely late.

The latency is also split at the edge's ``received_at``: before it (the generator and the
edge's accept queue) and after it (ack, log, projector, insert). ``cpu_cores`` is each process
tree's CPU over the load, in cores (the broker's and the generator's too): who holds the
machine; ``runqueue_threads`` how many of its threads waited for a core, on average.
``--batches`` logs the projector's batches (``batches.projector`` at DEBUG; in ``up``, its engine
process's) and summarises them as the pings see them: records per batch, how old its oldest record
was when it was read (the log's share), cut (the batch window's) and committed, how long the
projector took to handle and to commit it.

Prints a table, writes bench/results/e2e.json and bench/results/e2e.png
(latency p50/p99 against rate). Loopback only; bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import open_loop, percentile, post_bytes  # noqa: E402
from bench.cpu import cpu_seconds  # noqa: E402
from bench.memory import descendants  # noqa: E402
from bench.procs import Service, free_port, parse_keys, run_cli, scratch_broker, sql  # noqa: E402

N_CHECKS = 64


async def _create_checks(port: int, api_key: str) -> list[str]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ids = []
        for i in range(N_CHECKS):
            r = await session.post(f"http://127.0.0.1:{port}/api/v3/checks/", json={"name": f"bench-{i}"},
                                   headers={"X-Api-Key": api_key})
            ids.append((await r.json())["uuid"])
        return ids


def _start(mode: str, data: Path, bootstrap: str | None, args) -> tuple[list[Service], Service, dict, dict]:
    """The services, the edge among them, the projector's env (for queries) and the keys."""
    # --connections may exceed the per-address bound of the edge: the load comes from one address.
    base = {"PINGSTREAM_DATA": str(data), "PINGSTREAM_LOG_LEVEL": "WARNING", "PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT": "0"}
    batches = {"PINGSTREAM_LOG_LEVEL": "WARNING,batches.projector=DEBUG,projector=INFO"} if args.batches else {}
    if mode == "embedded":  # up's projector runs in its engine process, which writes to up's output
        up = Service("up", {**base, "PINGSTREAM_KAFKA": "", **batches}, free_port()).start()
        return [up], up, up.env, up.keys
    common = {**base, "PINGSTREAM_KAFKA": bootstrap, "PINGSTREAM_KAFKA_PREFIX": f"b{os.urandom(4).hex()}.",
              "PINGSTREAM_PARTITIONS": "8"}
    keys = parse_keys(run_cli("project", "create", "bench", env=common))
    projector = Service("projector", {**common, **batches}).start()
    monitor = Service("monitor", {**common, "PINGSTREAM_DATA": str(data / "monitor")}).start()
    # The distributed edge as deployed on one machine: `pingstream ingest` supervising
    # PINGSTREAM_EDGE_PROCESSES edges on one port (SO_REUSEPORT).
    edge = Service("ingest", {**common, "PINGSTREAM_DATA": str(data / "edge"), "PINGSTREAM_CLICKHOUSE": "off",
                              "PINGSTREAM_EDGE_PROCESSES": str(args.kafka_edges)}, free_port()).start()
    return [edge, projector, monitor], edge, projector.env, keys


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds on a core and seconds runnable but waiting for one, summed over ``pid``'s live threads
    (Linux ``/proc/<pid>/task/*/schedstat``)."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran / 1e9, waited / 1e9


def _cpu(trees: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per named process tree (``self``: this process, the generator): CPU seconds so far, and
    seconds its threads waited for a core (of the threads alive now)."""
    out = {}
    for name, pid in trees.items():
        pids = [os.getpid()] if name == "self" else descendants(pid)
        if name == "self":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime
        else:
            cpu = sum(filter(None, map(cpu_seconds, pids)))
        out[name] = (cpu, sum(_schedstat(p)[1] for p in pids))
    return out


_BATCH_LINE = re.compile(r"batch: (\d+) records, oldest (\S+) ms old when read, (\S+) ms when cut, (\S+) ms when "
                         r"committed; waited (\S+) ms for the handler, handled in (\S+) ms, committed in (\S+) ms")


def _batches(output: list[str]) -> dict | None:
    """The projector's batch lines, summarised as the pings see them (each batch weighted by its
    records, so the idle batches of a few ticks before and after the load do not count as half):
    the median and the largest of each figure (ms; records)."""
    rows = [tuple(float(x) for x in m.groups()) for line in output if (m := _BATCH_LINE.search(line))]
    if not rows:
        return None
    names = ("records", "age_read_ms", "age_cut_ms", "age_committed_ms", "waited_ms", "handled_ms", "commit_ms")
    out = {"batches": len(rows)}
    for i, name in enumerate(names):
        weighted = sorted((r[i], r[0]) for r in rows if not math.isnan(r[i]))
        half, seen, median = sum(n for _, n in weighted) / 2, 0.0, None
        for value, n in weighted:
            seen += n
            if seen >= half:
                median = value
                break
        out[name] = {"p50": median, "max": weighted[-1][0] if weighted else None}
    return out


async def _wait_registry(port: int, check_id: str) -> None:
    """Until the last check is known wherever a connection lands (several edges follow the registry)."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        in_a_row = 0
        for _ in range(400):
            known = (await session.head(f"http://127.0.0.1:{port}/ping/{check_id}")).status == 200
            in_a_row = in_a_row + 1 if known else 0
            if in_a_row >= 20:
                return
            await asyncio.sleep(0.01 if in_a_row else 0.1)


def _settle(timeout_s: float = 10.0) -> None:
    """Before a run: the dirty pages the last one left (its log, its parts, their deletion) written out, so that
    its writeback does not land on the next run's fsyncs (the broker syncs every produce: a Kafka run right
    after an embedded one measured p99 0.96-1.24 s at 10,000/s, 0.40-0.53 s alone)."""
    os.sync()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _dirty_kb() > 32 * 1024:
        time.sleep(0.2)


def _dirty_kb() -> int:
    """Dirty and under-writeback memory, kB (Linux /proc/meminfo; 0 elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return 0
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("Dirty", "Writeback"))


def run_rate(mode: str, rate: float, args, bootstrap: str | None, broker_pid: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{mode}-") as tmp:
        procs, edge, query_env, keys = _start(mode, Path(tmp), bootstrap, args)
        try:
            checks = asyncio.run(_create_checks(edge.port, keys["api_key"]))
            asyncio.run(_wait_registry(edge.port, checks[-1]))
            tag = f"r{int(rate)}-"
            paths = [f"/ping/{c}" for c in checks]

            def request(i: int) -> bytes:
                return post_bytes(paths[i % len(paths)], f"{tag}{i}".encode())

            trees = {p.command: p.proc.pid for p in procs} | {"self": 0}
            if broker_pid is not None:
                trees["broker"] = broker_pid
            cpu_before, started = _cpu(trees), time.monotonic()
            load = uvloop.run(open_loop(edge.port, request, rate, args.duration, connections=args.connections,
                                        max_connections=args.max_connections))
            cpu_after, elapsed = _cpu(trees), time.monotonic() - started
            time.sleep(args.drain)
        finally:
            for p in procs:
                p.stop()
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for p in procs:
                    (Path(args.logs) / f"{mode}-{int(rate)}-{p.command}.log").write_text("".join(p.output))
        rows = sql(query_env, f"SELECT body, toUnixTimestamp64Micro(inserted_at) AS at, "
                              f"toUnixTimestamp64Micro(received_at) AS received FROM pings "
                              f"WHERE startsWith(body, '{tag}')")
    start, sent = load["wall_start"], load["sent"]
    latencies, before_edge, after_edge = [], [], []
    for row in rows:
        i = int(row["body"][len(tag):])
        scheduled, received, at = start + i / rate, int(row["received"]) / 1e6, int(row["at"]) / 1e6
        latencies.append(at - scheduled)
        before_edge.append(received - scheduled)
        after_edge.append(at - received)
    visible = len(latencies)
    for values in (latencies, before_edge, after_edge):
        values.sort()
    latencies += [math.inf] * (sent - visible)  # never visible: infinitely late
    projector = next((p for p in procs if p.command in ("projector", "up")), None)
    return {
        "mode": mode, "rate": rate, "sent": sent, "acked": load["statuses"].get(200, 0), "visible": visible,
        "statuses": load["statuses"], "ack_p50_ms": load["p50_ms"], "ack_p99_ms": load["p99_ms"],
        "achieved_rps": load["rps"], "connections": load["connections"],
        "visible_p50_s": percentile(latencies, 0.50), "visible_p99_s": percentile(latencies, 0.99),
        "before_edge_p99_s": percentile(before_edge, 0.99),
        "after_edge_p50_s": percentile(after_edge, 0.50), "after_edge_p99_s": percentile(after_edge, 0.99),
        "cpu_cores": {name: round((cpu_after[name][0] - cpu_before[name][0]) / elapsed, 2) for name in trees},
        # Threads waiting for a core, on average over the load (run queue): the machine was short of cores.
        "runqueue_threads": {name: round((cpu_after[name][1] - cpu_before[name][1]) / elapsed, 2) for name in trees},
        "projector_batches": _batches(projector.output) if projector is not None and args.batches else None,
    }


def _plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode in sorted({r["mode"] for r in results}):
        rs = [r for r in results if r["mode"] == mode]
        rates = [r["rate"] for r in rs]
        for key, style in (("visible_p50_s", "--"), ("visible_p99_s", "-")):
            values = [min(r[key], 30.0) for r in rs]
            ax.plot(rates, values, style, marker="o", label=f"{mode} {key.split('_')[1]}")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("offered pings/s (open loop)")
    ax.set_ylabel("ping → queryable in ClickHouse (s, log scale; lost = 30)")
    ax.set_yscale("log")
    ax.set_title("pingstream end to end on loopback")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="250,500,1000,2000,3000")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per rate")
    parser.add_argument("--drain", type=float, default=4.0, help="seconds allowed to catch up before stopping")
    parser.add_argument("--connections", type=int, default=64,
                        help="connections opened first; more are opened when all wait for an answer")
    parser.add_argument("--max-connections", type=int, default=1024,
                        help="at most this many connections; beyond, requests wait in the generator (counted)")
    parser.add_argument("--kafka-edges", type=int, default=2, help="edge processes of `pingstream ingest` (kafka)")
    parser.add_argument("--modes", default="embedded,kafka")
    parser.add_argument("--batches", action="store_true", help="log and summarise the projector's batches")
    parser.add_argument("--logs", help="write each service's output to this directory (<mode>-<rate>-<command>.log)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per rate and mode, the modes taking turns; the median round (by p99) is kept")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    modes = args.modes.split(",")

    broker, bootstrap = None, os.environ.get("PINGSTREAM_KAFKA")
    if "kafka" in modes and not bootstrap:
        broker = scratch_broker(partitions=8)
        bootstrap = broker.bootstrap
    rounds: dict[tuple[str, float], list[dict]] = {}
    try:
        # Rate by rate, the modes taking turns: on a shared machine both meet the same conditions.
        for rate in rates:
            for _ in range(args.rounds):
                for mode in modes:
                    _settle()
                    started = time.monotonic()
                    r = run_rate(mode, rate, args, bootstrap, broker.process.pid if broker and broker.process else None)
                    rounds.setdefault((mode, rate), []).append(r)
                    print(f"{mode:8} {rate:6.0f}/s sent {r['sent']:6d} acked {r['acked']:6d} visible {r['visible']:6d} "
                          f"ack p99 {r['ack_p99_ms']:7.1f} ms  visible p50 {r['visible_p50_s']:6.3f} s "
                          f"p99 {r['visible_p99_s']:6.3f} s  ({time.monotonic() - started:.0f} s)", flush=True)
                    print(f"{'':8} before the edge p99 {r['before_edge_p99_s']:6.3f} s, after it p50 "
                          f"{r['after_edge_p50_s']:6.3f} / p99 {r['after_edge_p99_s']:6.3f} s; cores "
                          + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items())
                          + "; waiting for a core " + ", ".join(f"{k} {v:.2f}" for k, v in r["runqueue_threads"].items()),
                          flush=True)
                    if r["projector_batches"]:
                        b = r["projector_batches"]
                        print(f"{'':8} projector: {b['batches']} batches; p50 (per ping) / max: "
                              + ", ".join(f"{k} {v['p50']:.0f}/{v['max']:.0f}" for k, v in b.items() if k != "batches"),
                              flush=True)
    finally:
        if broker is not None:
            broker.stop()
    results = []
    for mode in modes:
        for rate in rates:
            runs = sorted(rounds[(mode, rate)], key=lambda r: r["visible_p99_s"])
            results.append({**runs[len(runs) // 2], "rounds_p99_s": [r["visible_p99_s"] for r in runs]})

    summary = {}
    for mode in modes:
        ok = [r["rate"] for r in results if r["mode"] == mode and r["visible_p99_s"] < 1.0 and r["visible"] == r["sent"]]
        summary[mode] = {"max_rate_p99_under_1s": max(ok) if ok else 0}
        print(f"{mode}: highest rate with every ping visible and p99 < 1 s: {summary[mode]['max_rate_p99_under_1s']:.0f}/s")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    def finite(v):
        if isinstance(v, list):
            return [finite(x) for x in v]
        return None if isinstance(v, float) and math.isinf(v) else v

    clean = [{k: finite(v) for k, v in r.items()} for r in results]
    (out / "e2e.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "args": vars(args), "summary": summary, "results": clean}, indent=2))
    if _plot(results, out / "e2e.png"):
        print(f"plot: {(out / 'e2e.png').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
