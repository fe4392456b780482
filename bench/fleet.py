"""A big project through `pingstream up`: its checks created by pings, then every read that spans all of them.

    .venv/bin/python -m bench.fleet [--checks 10000] [--rounds 3] [--kafka] [--no-save]

Starts `pingstream up` (embedded; with ``--kafka``, its log on a scratch broker from the project's cached
jars, or on ``PINGSTREAM_KAFKA``) on a fresh data directory and creates ``--checks`` checks in its default
project with one ``?create=1`` ping each (16 at a time), waits until the Management API lists every one
of them with its ping, then times each read that covers the whole project ``--rounds`` times: the v3 list,
the Prometheus metrics, the project's badge, Overwatch's monitor list and an analytics ranking. Then
`up` is stopped, started again on the same data, and the list is read once more. Every answer must be
200 and name every check: a read that fails is the benchmark failing, not a figure. Results go to
``bench/results/fleet.json``.

In `up` the edges read ClickHouse through the engine's SQL endpoint, so these reads bind thousands of
check ids as parameters: the case that answered 503 from about 100 checks before December 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, not the checkout holding it
    sys.path.append(str(ROOT))

import aiohttp  # noqa: E402

from bench.checkout import describe  # noqa: E402
from bench.procs import Service, free_port, scratch_broker  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fleet.json"


async def create(session: aiohttp.ClientSession, up: Service, n: int) -> float:
    """``n`` checks made by their first ping; the pings' latency p99 in seconds."""
    latencies: list[float] = []
    queue = iter(range(n))
    started = last_report = time.monotonic()

    async def worker() -> None:
        nonlocal last_report
        for i in queue:
            sent = time.perf_counter()
            async with session.get(f"{up.url}/ping/{up.keys['ping_key']}/fleet-{i}?create=1") as r:
                await r.read()
                if r.status not in (200, 201):
                    raise SystemExit(f"ping {i} answered {r.status}")
            latencies.append(time.perf_counter() - sent)
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                done = len(latencies)
                print(f"  {done:,} of {n:,} checks created, {done / (last_report - started):,.0f}/s", flush=True)

    await asyncio.gather(*(worker() for _ in range(16)))
    latencies.sort()
    print(f"  {n:,} checks created in {time.monotonic() - started:.1f} s", flush=True)
    return latencies[int(len(latencies) * 0.99)]


async def read(session: aiohttp.ClientSession, up: Service, path: str) -> tuple[float, bytes]:
    key = up.keys["api_key"]
    sent = time.perf_counter()
    async with session.get(up.url + path, headers={"X-Api-Key": key, "Authorization": f"Bearer {key}"}) as r:
        body = await r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path.split('?')[0]} answered {r.status}: {body[:300]!r}")
    return time.perf_counter() - sent, body


def _listed(body: bytes) -> int:
    return sum(1 for c in json.loads(body)["checks"] if c["slug"].startswith("fleet-") and c["n_pings"] == 1)


async def measure(up: Service, n: int, rounds: int) -> dict:
    result: dict = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        result["create_ping_p99_s"] = await create(session, up, n)
        waited = time.monotonic()
        while _listed((await read(session, up, "/api/v3/checks/"))[1]) < n:
            if time.monotonic() - waited > 300:
                raise SystemExit("the list did not show every check with its ping within 300 s")
            await asyncio.sleep(0.5)
        result["all_listed_after_s"] = time.monotonic() - waited
        badges = json.loads((await read(session, up, "/api/v3/badges/"))[1])["badges"]
        reads = {
            "v3 list": "/api/v3/checks/",
            "Prometheus metrics": f"/projects/{up.keys['project_id']}/metrics/{up.keys['api_key_readonly']}",
            "project badge (json)": urlsplit(badges["*"]["json"]).path,
            "Overwatch monitors": "/api/v1/monitors",
            "analytics: slowest": "/api/v3/analytics/slowest",
        }
        for name, path in reads.items():
            times = []
            for _ in range(rounds):
                took, body = await read(session, up, path)
                times.append(took)
            if name == "v3 list" and _listed(body) != n:
                raise SystemExit(f"the list named {_listed(body)} of {n} checks")
            result[name] = {"median_s": statistics.median(times), "bytes": len(body)}
            print(f"  {name:22} {statistics.median(times) * 1e3:8.0f} ms (median of {rounds}), {len(body):,} bytes",
                  flush=True)
    return result


async def relisted(up: Service, n: int) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        took, body = await read(session, up, "/api/v3/checks/")
        if _listed(body) != n:
            raise SystemExit(f"after the restart the list named {_listed(body)} of {n} checks")
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kafka", action="store_true", help="the log on Kafka (PINGSTREAM_KAFKA, else a scratch broker)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    broker = scratch_broker() if args.kafka and not os.environ.get("PINGSTREAM_KAFKA") else None
    bootstrap = (broker.bootstrap if broker else os.environ["PINGSTREAM_KAFKA"]) if args.kafka else ""
    env = {"PINGSTREAM_DATA": str(work / "data"), "PINGSTREAM_KAFKA": bootstrap,
           "PINGSTREAM_KAFKA_PREFIX": f"fleet{os.getpid()}." if args.kafka else "",
           "PINGSTREAM_CHECK_LIMIT": str(args.checks + 1)}
    up = Service("up", env, free_port())
    try:
        started = time.monotonic()
        up.start()
        print(f"up ready in {time.monotonic() - started:.1f} s; creating {args.checks:,} checks", flush=True)
        result = asyncio.run(measure(up, args.checks, args.rounds))
        up.stop()
        started = time.monotonic()
        up = Service("up", env, up.port)
        up.start()
        result["restart_ready_s"] = time.monotonic() - started
        result["v3 list after restart_s"] = asyncio.run(relisted(up, args.checks))
        print(f"  restart: ready in {result['restart_ready_s']:.1f} s, the list "
              f"{result['v3 list after restart_s'] * 1e3:.0f} ms", flush=True)
    finally:
        up.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_save:
        results = RESULTS.with_name("fleet-kafka.json") if args.kafka else RESULTS
        results.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args),
                                       "this": describe(ROOT), "result": result}, indent=2) + "\n")
        print(f"saved {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
