"""Memory of ``pingstream up``: every process it runs, idle, under load and after it, split by where it lives.

    .venv/bin/python -m bench.memory [--rate 5000] [--duration 60] [--after 60] [--quick]

Starts ``pingstream up`` on a fresh data directory and one check, then reads the memory of the
supervisor and of every process below it (found from the process tree, so however many edges or other
children ``up`` starts are counted) from ``/proc/<pid>/smaps``: RSS and PSS (shared pages divided
among the processes that map them, so the interpreter's and libraries' pages the processes share count
once in the sum), each split into chdb's mapped library, other mapped files (the interpreter, other
extension modules) and anonymous memory (the heaps: Python's objects and glibc's arenas; in the engine
also chdb's allocations, whose own count, ``MemoryTracking``, is read through the SQL endpoint with the
size of chdb's global thread pool), and each process's thread count.
Readings: idle (after start-up), at the end of ``--duration`` seconds of pings sent at ``--rate`` per
second (open loop, bench/loadgen.py; the highest sum seen during the load is kept too), and ``--after``
seconds after the load stopped. The issue's bounds: RSS summed idle under 600 MB, loaded under 800 MB,
after within 10% of idle. Bounded in time: about ``20 + duration + after`` seconds (``--quick``: 10 s of
2,000 pings/s, read again 10 s after). Results go to ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import datetime, timezone
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script (python bench/memory.py), as the other benches are

from bench.loadgen import open_loop  # noqa: E402
from bench.procs import Sampling, Service, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "memory.json"
_MB = 1024 * 1024
PARTS = ("chdb_library", "other_files", "anonymous")
LIMITS_MB = {"idle": 600, "loaded": 800}


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def role(pid: int) -> str:
    """What a process of the tree is, from its command line (``pingstream.cli <command>``)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    argv = [a.decode(errors="replace") for a in argv if a]
    if "pingstream.cli" in argv:
        command = argv[argv.index("pingstream.cli") + 1:][:1]
        return {"up": "supervisor", "ingest": "edge"}.get(command[0] if command else "", command[0] if command else "?")
    return Path(argv[0]).name if argv else "?"


def split(pid: int) -> dict[str, dict[str, float]]:
    """One process's RSS and PSS in MB, each split into chdb's library, other mapped files, anonymous memory."""
    rss = dict.fromkeys(PARTS, 0)
    pss = dict.fromkeys(PARTS, 0)
    kind = "anonymous"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if not first.endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                fields = line.split(None, 5)
                path = fields[5].strip() if len(fields) > 5 else ""
                if not path or path.startswith("["):  # [heap], [stack], anonymous mappings
                    kind = "anonymous"
                elif "chdb" in Path(path).name:
                    kind = "chdb_library"
                else:
                    kind = "other_files"
            elif first == "Rss:":
                rss[kind] += int(line.split()[1]) * 1024
            elif first == "Pss:":
                pss[kind] += int(line.split()[1]) * 1024
    out = {}
    for name, parts in (("rss", rss), ("pss", pss)):
        out[name] = {k: round(v / _MB, 1) for k, v in parts.items()}
        out[name]["total"] = round(sum(parts.values()) / _MB, 1)
    return out


def rollup_mb(pid: int) -> dict[str, float]:
    """RSS and PSS from ``smaps_rollup`` (cheap: for sampling during the load)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in ("Rss", "Pss"):
            values[key.lower()] = int(value.split()[0]) / 1024
    return values


def reading(root: int, sql=None) -> dict:
    processes = []
    for pid in descendants(root):
        try:
            processes.append({"pid": pid, "role": role(pid), "threads": len(os.listdir(f"/proc/{pid}/task")),
                              **split(pid)})
        except OSError:  # ended meanwhile
            continue
    processes.sort(key=lambda p: (p["role"] != "supervisor", p["role"] != "engine", p["pid"]))
    out = {"processes": len(processes)}
    for name in ("rss", "pss"):
        out[name] = {k: round(sum(p[name][k] for p in processes), 1) for k in (*PARTS, "total")}
    if sql is not None:
        out["engine"] = sql()
    out["per_process"] = processes
    return out


class Peak(Sampling):
    """The highest RSS and PSS summed over the tree, sampled every ``interval_s`` on a thread."""

    def __init__(self, root: int, interval_s: float = 2.0) -> None:
        super().__init__(interval_s)
        self.root = root
        self.rss_mb = self.pss_mb = 0.0

    def sample(self) -> None:
        rss = pss = 0.0
        for pid in descendants(self.root):
            try:
                r = rollup_mb(pid)
            except OSError:
                continue
            rss, pss = rss + r["rss"], pss + r["pss"]
        self.rss_mb, self.pss_mb = max(self.rss_mb, rss), max(self.pss_mb, pss)


def engine_metrics(sql_url: str, admin_key: str):
    """A function reading, through the SQL endpoint, chdb's own count of its allocations
    (``MemoryTracking``, MB) and the threads of its global thread pool (``GlobalThread``, busy
    ``GlobalThreadActive``): idle threads of that pool keep their stacks and allocator caches."""
    import urllib.request

    wanted = ("MemoryTracking", "GlobalThread", "GlobalThreadActive")
    query = ("SELECT metric, value FROM system.metrics WHERE metric IN ("
             + ", ".join(f"'{m}'" for m in wanted) + ") FORMAT TabSeparated").encode()

    def read() -> dict:
        request = urllib.request.Request(sql_url.rstrip("/") + "/", data=query,
                                         headers={"X-ClickHouse-User": "pingstream", "X-ClickHouse-Key": admin_key})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                values = dict(line.split("\t") for line in answer.read().decode().splitlines() if line)
        except (OSError, ValueError):
            return {}
        return {"memory_tracking_mb": round(int(values.get("MemoryTracking", 0)) / _MB, 1),
                "global_threads": int(values.get("GlobalThread", 0)),
                "global_threads_active": int(values.get("GlobalThreadActive", 0))}

    return read


def table(readings: dict[str, dict]) -> str:
    """Per process and summed, RSS and PSS split by part, for each reading."""
    lines = [f"{'':8} {'process':18} {'RSS':>7} {'PSS':>7}   {'PSS chdb lib':>12} {'other files':>11} {'anonymous':>9} "
             f"{'threads':>7}"]
    for when, r in readings.items():
        for p in r["per_process"]:
            lines.append(f"{when:8} {p['role'] + ' ' + str(p['pid']):18} {p['rss']['total']:7.1f} {p['pss']['total']:7.1f}"
                         f"   {p['pss']['chdb_library']:12.1f} {p['pss']['other_files']:11.1f} {p['pss']['anonymous']:9.1f} "
                         f"{p['threads']:7d}")
        engine = r.get("engine") or {}
        lines.append(f"{when:8} {'SUM (' + str(r['processes']) + ' processes)':18} {r['rss']['total']:7.1f} "
                     f"{r['pss']['total']:7.1f}   {r['pss']['chdb_library']:12.1f} {r['pss']['other_files']:11.1f} "
                     f"{r['pss']['anonymous']:9.1f}" + (f"   (chdb: MemoryTracking {engine['memory_tracking_mb']} MB, global pool "
                                                f"{engine['global_threads']} threads, {engine['global_threads_active']} busy)"
                                                if engine else ""))
    return "\n".join(lines)


async def _create_check(port: int, api_key: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        r = await session.post(f"http://127.0.0.1:{port}/api/v3/checks/", json={"name": "memory"},
                               headers={"X-Api-Key": api_key})
        check = (await r.json())["uuid"]
        for _ in range(100):  # the edge knows the check once its registry has it
            if (await session.head(f"http://127.0.0.1:{port}/ping/{check}")).status == 200:
                return check
            await asyncio.sleep(0.1)
    raise RuntimeError("the check never reached the edge's registry")


def _print_short(when: str, r: dict, extra: str = "") -> None:
    print(f"{when}: RSS {r['rss']['total']} MB, PSS {r['pss']['total']} MB (PSS: chdb library "
          f"{r['pss']['chdb_library']}, other files {r['pss']['other_files']}, anonymous {r['pss']['anonymous']}) "
          f"in {r['processes']} processes{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--after", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="10 s of 2,000 pings/s, read again 10 s after")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration, args.after = 2000, 10, 10
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        up = Service("up", {"PINGSTREAM_DATA": tmp, "PINGSTREAM_KAFKA": "", "PINGSTREAM_LOG_LEVEL": "WARNING"},
                     free_port()).start()
        try:
            check = asyncio.run(_create_check(up.port, up.keys["api_key"]))
            up.wait_output(r"SQL \(ClickHouse HTTP interface\)")
            sql = engine_metrics(up.keys["sql_url"], up.keys["admin_key"])
            time.sleep(10)  # settled: the projector and the monitor caught up with start-up
            idle = reading(up.proc.pid, sql)
            _print_short("idle", idle)
            with Peak(up.proc.pid) as peak:
                # A fixed pool of connections (requests wait in the generator when all are busy): all come
                # from one address, and beyond PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT an edge answers 429.
                load = asyncio.run(open_loop(up.port, f"/ping/{check}", args.rate, args.duration,
                                             connections=args.connections, max_connections=args.connections))
                loaded = reading(up.proc.pid, sql)
            # The sampler reads every 2 s; the reading at the end of the load counts too.
            loaded["peak_rss_mb"] = round(max(peak.rss_mb, loaded["rss"]["total"]), 1)
            loaded["peak_pss_mb"] = round(max(peak.pss_mb, loaded["pss"]["total"]), 1)
            _print_short("loaded", loaded, f"; peak RSS {loaded['peak_rss_mb']} MB; after {load['sent']} pings at "
                         f"{load['rps']:.0f}/s (statuses {load['statuses']}, p99 {load['p99_ms']:.0f} ms)")
            time.sleep(args.after)
            after = reading(up.proc.pid, sql)
            _print_short("after", after, f"; {args.after:g} s after the load")
        finally:
            up.stop()
    readings = {"idle": idle, "loaded": loaded, "after": after}
    print(table(readings))
    ratios = {k: round(after[k]["total"] / idle[k]["total"], 3) for k in ("rss", "pss")}
    verdict = {"idle_rss_under_600": idle["rss"]["total"] < LIMITS_MB["idle"],
               "loaded_rss_under_800": max(loaded["rss"]["total"], loaded["peak_rss_mb"]) < LIMITS_MB["loaded"],
               "after_within_10pct_of_idle": ratios["rss"] <= 1.10}
    print(f"after/idle: RSS {ratios['rss']:.2f}x, PSS {ratios['pss']:.2f}x; bounds met: {verdict}")
    result = {
        "note": "pingstream up (embedded), one check, open-loop GET pings from this process (bench/loadgen.py); "
                "RSS and PSS from /proc/<pid>/smaps of the supervisor and every process below it, split into "
                "chdb's mapped library, other mapped files and anonymous memory; engine: chdb's own count of its "
                "allocations and its global thread pool, through the SQL endpoint. PSS divides a file's pages among "
                "all processes on the machine that map it, other helpers' too (the chdb library's PSS halves when "
                "another process maps the same file). A shared machine (2 cores, other work beside), so the "
                "load's achieved rate may be below the asked one and figures are indicative",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "args": vars(args),
        "load": {k: load[k] for k in ("sent", "rps", "p50_ms", "p99_ms", "statuses")},
        **readings,
        "after_to_idle": ratios,
        "bounds_met": verdict,
    }
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
