"""Memory of ``pingstream up``: resident set idle, under load, and after it, split by where it lives.

    .venv/bin/python -m bench.memory [--rate 5000] [--duration 60] [--after 60] [--quick]

Starts ``pingstream up`` on a fresh data directory and one check, then reads the
resident memory of the process and of every process below it from
``/proc/<pid>/smaps``, split into chdb's mapped library, other mapped files (the
interpreter, other extension modules), and anonymous memory (the heaps: Python's
objects, chdb's allocations). Readings: idle (after start-up), at the end of
``--duration`` seconds of pings sent at ``--rate`` per second (open loop), and
``--after`` seconds after the load stopped. The issue's bounds: idle under 600 MB,
loaded under 800 MB, after within 10% of idle. Bounded in time: about
``10 + duration + after`` seconds (``--quick``: 10 s of 2,000 pings/s, 10 s after).
Results go to ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.loadgen import open_loop
from bench.procs import Service, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
_MB = 1024 * 1024


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


def split_rss(pid: int) -> dict[str, float]:
    """One process's resident MB: chdb's library, other mapped files, anonymous memory."""
    parts = {"chdb_library": 0, "other_files": 0, "anonymous": 0}
    kind = "anonymous"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                fields = line.split(None, 5)
                path = fields[5].strip() if len(fields) > 5 else ""
                if not path or path.startswith("["):  # [heap], [stack], anonymous
                    kind = "anonymous"
                elif "chdb" in Path(path).name:
                    kind = "chdb_library"
                else:
                    kind = "other_files"
            elif first == "Rss:":
                parts[kind] += int(line.split()[1]) * 1024
    return {k: round(v / _MB, 1) for k, v in parts.items()}


def reading(root: int) -> dict:
    processes = {}
    for pid in descendants(root):
        try:
            processes[pid] = split_rss(pid)
        except OSError:  # ended meanwhile
            continue
    total = {k: round(sum(p[k] for p in processes.values()), 1) for k in ("chdb_library", "other_files", "anonymous")}
    return {"rss_mb": round(sum(total.values()), 1), **total, "processes": len(processes),
            "per_process": {str(pid): p for pid, p in processes.items()}}


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
            time.sleep(5)  # settled: the projector and the monitor caught up with start-up
            idle = reading(up.proc.pid)
            print(f"idle:   {idle['rss_mb']} MB (chdb library {idle['chdb_library']}, other files "
                  f"{idle['other_files']}, anonymous {idle['anonymous']}) in {idle['processes']} process(es)", flush=True)
            load = asyncio.run(open_loop(up.port, f"/ping/{check}", args.rate, args.duration,
                                         connections=args.connections))
            loaded = reading(up.proc.pid)
            print(f"loaded: {loaded['rss_mb']} MB (chdb library {loaded['chdb_library']}, anonymous "
                  f"{loaded['anonymous']}) after {load['sent']} pings at {load['rps']:.0f}/s "
                  f"(statuses {load['statuses']}, p99 {load['p99_ms']:.0f} ms)", flush=True)
            time.sleep(args.after)
            after = reading(up.proc.pid)
            print(f"after:  {after['rss_mb']} MB (chdb library {after['chdb_library']}, anonymous "
                  f"{after['anonymous']}) {args.after:g} s after the load; "
                  f"{after['rss_mb'] / idle['rss_mb']:.2f}x idle", flush=True)
        finally:
            up.stop()
    result = {
        "note": "pingstream up (embedded), one check, open-loop GET pings; RSS from /proc/<pid>/smaps summed over "
                "the process tree; a shared machine, so the load's achieved rate may be below the asked one",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "args": vars(args),
        "load": {k: load[k] for k in ("sent", "rps", "p50_ms", "p99_ms", "statuses")},
        "idle": idle, "loaded": loaded, "after": after,
        "after_to_idle": round(after["rss_mb"] / idle["rss_mb"], 3),
    }
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
