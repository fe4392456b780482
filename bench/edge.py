"""Edge throughput and latency beside a bare aiohttp handler, in one run.

    python bench/edge.py [--duration 10] [--connections 32,256] [--rate 2000] [--no-kafka] [--no-up]

Each server runs in its own process (uvloop, access log off), all of them up
at once, the load generator in this one, all on 127.0.0.1. The servers:
- ``bare``: an aiohttp handler that only answers ``OK``;
- ``sqlite``: the pingstream edge, each ping durably committed to the embedded log;
- ``kafka``: the pingstream edge producing with acks=all to a real broker
  (PINGSTREAM_KAFKA, else one started from the project's cached jars);
- ``up``: the whole embedded system as users start it (``pingstream up``: its edge processes, one
  per core but one by default, and the engine process projecting every ping into chdb meanwhile).
Prints requests/s and p50/p99 for a closed loop at full speed with each number
of connections given, the ratio to ``bare`` at the same number (and of ``up`` to the edge alone), the
server's CPU time per request (all its threads, all its processes), and p50/p99 for an open loop at a fixed rate.
A durable acknowledgement waits for a commit (an fsync, or the broker's acks), so
a closed loop with few connections measures that wait as much as the edge's
throughput: a commit can carry at most as many pings as there are connections.
Writes bench/results/edge.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import cpu_seconds  # noqa: E402
from bench.loadgen import closed_loop, open_loop  # noqa: E402
from bench.procs import scratch_broker  # noqa: E402
from runtime import kafkabroker  # noqa: E402
from runtime.config import default_edge_processes  # noqa: E402

SERVER = r"""
import asyncio, os, sys
import uvloop
from aiohttp import web

mode, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]

async def main():
    if mode == "bare":
        async def ok(request):
            return web.Response(text="OK")
        app = web.Application()
        app.router.add_route("*", "/ping/{tail:.+}", ok)
        check_id = "x"
        cleanup = None
    else:
        from ingest.app import create_app
        from runtime.config import Config
        from runtime.eventlog import open_eventlog
        from runtime.registry import Registry, create_project, save_check
        from schemas.events import CheckConfig, utcnow, uuid7
        # The load comes from one address with up to hundreds of connections: no per-address bound.
        env = {"PINGSTREAM_DATA": data, "PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT": "0"}
        if mode == "kafka":
            env["PINGSTREAM_KAFKA"] = os.environ["BENCH_KAFKA"]
        config = Config.from_env(env)
        log = open_eventlog(config)
        await log.start()
        registry = Registry()
        project = await create_project(log, "bench", registry)
        check = CheckConfig(id=str(uuid7()), project_id=project.id, created=utcnow())
        await save_check(log, registry, check)
        app = create_app(config, log, registry, None)
        check_id = check.id
        cleanup = log.close
    if mode == "bare":
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    else:  # as `pingstream up` serves it
        from ingest.service import serve, tune_gc
        tune_gc()
        runner, _ = await serve(app, config, "127.0.0.1", port)
    print("ready", check_id, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    if cleanup:
        await cleanup()

uvloop.run(main())
"""


class Server:
    def __init__(self, mode: str, data_dir: str, env: dict) -> None:
        self.mode = mode
        self.port = kafkabroker.free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode, str(self.port), data_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True,
        )
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"{mode} server did not start")
        self.check_id = line[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)


class UpServer:
    """``pingstream up`` (embedded) with one check, pinged by its uuid."""

    def __init__(self, data_dir: str, env: dict, root: Path = ROOT) -> None:
        from bench.procs import Service

        self.mode = "up"
        self.port = kafkabroker.free_port()
        env = {"PINGSTREAM_DATA": data_dir, "PINGSTREAM_KAFKA": "", "PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT": "0",
               "PINGSTREAM_LOG_LEVEL": "WARNING"}
        self.service = Service("up", env, self.port, root=root)
        try:
            self.service.start()
            if default_edge_processes() > 0:  # supervised: the port opens with the first edge; wait for them all
                self.service.wait_output(r"up: \d+ edge process")
            url = f"http://127.0.0.1:{self.port}/api/v3/checks/"
            request = urllib.request.Request(url, data=b'{"name": "bench"}', method="POST",
                                             headers={"X-Api-Key": self.service.keys["api_key"]})
            with urllib.request.urlopen(request, timeout=30) as answer:
                self.check_id = json.load(answer)["uuid"]
        except BaseException:
            self.service.stop()
            raise
        self.proc = self.service.proc

    def stop(self) -> None:
        self.service.stop()

    def cpu(self) -> float | None:
        """All of up's processes: the supervisor, its engine and its edges."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        seconds = [cpu_seconds(pid) for pid in pids]
        return None if None in seconds else sum(seconds)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def closed(server: Server, connections: int, seconds: float) -> dict:
    path = f"/ping/{server.check_id}"
    cpu_before = server.cpu()
    full = await closed_loop(server.port, path, connections, seconds)
    cpu_after = server.cpu()
    # CPU per answered request: steadier than req/s on a shared machine whose speed drifts.
    full["server_cpu_us_per_request"] = (
        (cpu_after - cpu_before) / full["requests"] * 1e6 if cpu_before is not None and full["requests"] else None
    )
    return full


async def measure(servers: dict[str, Server], args) -> dict:
    """Every server is up at once and the closed loops take turns, round after round, so a drift in
    the machine's speed (large on shared machines) falls on all of them alike; each round's ratio
    to bare is taken within the round, and the median round is reported."""
    for server in servers.values():
        await closed_loop(server.port, f"/ping/{server.check_id}", args.connections[0], 1.0)  # warm-up
    results = {mode: {"closed_loop": {}} for mode in servers}
    for connections in args.connections:
        rounds = {mode: [] for mode in servers}
        for _ in range(args.rounds):
            for mode, server in servers.items():
                rounds[mode].append(await closed(server, connections, args.duration / args.rounds))
        for mode in servers:
            ratios = sorted(r["rps"] / b["rps"] for r, b in zip(rounds[mode], rounds["bare"]))
            median = sorted(rounds[mode], key=lambda r: r["rps"])[len(rounds[mode]) // 2]
            results[mode]["closed_loop"][str(connections)] = {
                **median, "ratio_to_bare": ratios[len(ratios) // 2], "ratio_range": [ratios[0], ratios[-1]],
                "rounds": rounds[mode],
            }
            if mode == "up":  # the goal: the whole system at least 0.8x the edge alone
                to_edge = sorted(r["rps"] / e["rps"] for r, e in zip(rounds["up"], rounds["sqlite"]))
                results[mode]["closed_loop"][str(connections)]["ratio_to_edge"] = to_edge[len(to_edge) // 2]
    for mode, server in servers.items():
        results[mode]["open_loop"] = await open_loop(server.port, f"/ping/{server.check_id}", args.rate, args.duration)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server and connection count")
    parser.add_argument("--connections", type=lambda v: [int(n) for n in v.split(",")], default=[32, 256],
                        help="closed-loop connection counts, comma-separated")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--rounds", type=int, default=5, help="turns each server takes per connection count")
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--no-up", action="store_true", help="leave out the row `up` (the whole system)")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    broker = None
    modes = ["bare", "sqlite"]
    if not args.no_kafka:
        bootstrap = os.environ.get("PINGSTREAM_KAFKA")
        if not bootstrap:
            broker = scratch_broker()
            bootstrap = broker.bootstrap
        env["BENCH_KAFKA"] = bootstrap
        modes.append("kafka")
    servers: dict[str, Server] = {}
    data = tempfile.TemporaryDirectory(prefix="bench-edge-")
    try:
        for mode in modes:
            servers[mode] = Server(mode, os.path.join(data.name, mode), env)
        if not args.no_up:
            servers["up"] = UpServer(os.path.join(data.name, "up"), env)
        results = asyncio.run(measure(servers, args))
    finally:
        for server in servers.values():
            server.stop()
        data.cleanup()
        if broker is not None:
            broker.stop()

    print(f"\nclosed loop, {args.rounds} rounds of {args.duration / args.rounds:g}s per server, the median round:")
    print(f"{'server':8} {'conns':>5} {'req/s':>9} {'ratio':>6} {'(range)':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'cpu us/req':>10}  statuses")
    for connections in map(str, args.connections):
        for mode, r in results.items():
            c = r["closed_loop"][connections]
            cpu = c["server_cpu_us_per_request"]
            low, high = c["ratio_range"]
            to_edge = f"  ({c['ratio_to_edge']:.2f}x the edge alone)" if "ratio_to_edge" in c else ""
            print(f"{mode:8} {connections:>5} {c['rps']:9.0f} {c['ratio_to_bare']:6.2f} {low:5.2f}-{high:<5.2f} "
                  f"{c['p50_ms']:7.2f} {c['p99_ms']:7.2f} {cpu if cpu is None else round(cpu):>10}  {c['statuses']}"
                  f"{to_edge}")
    print(f"\nopen loop at {args.rate:.0f} pings/s for {args.duration:g}s:")
    for mode, r in results.items():
        o = r["open_loop"]
        print(f"{mode:8} p50 {o['p50_ms']:6.2f} ms  p99 {o['p99_ms']:6.2f} ms  {o['statuses']}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "edge.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
