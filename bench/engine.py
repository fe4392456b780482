"""The CPU `pingstream up` spends at fixed ping rates, in steady state, per process.

    python -m bench.engine [--rates 1000,6000] [--duration 30] [--settle 5] [--baseline DIR] [--rounds 2] [--runs]
                           [--fresh] [--no-save]

Starts `pingstream up` (embedded, as users start it) with one check and sends it GET pings in an open loop
(with ``--runs``, every other one to ``/start``, so half of them end a run; at rate 0, none: the idle system),
each rate for ``--duration`` seconds, one rate after the other (with ``--fresh``, each in an `up` of its own: a
rate that follows others in the same `up` also pays the merges of their parts). Each process's CPU is read from
/proc once a second; the first ``--settle`` seconds of each rate are left out (start-up, the first batches and
their parts), the rest averaged. Prints the cores of the engine (the projector, the monitor and the notifier in one
process) and of the edges, and the engine's CPU per ping.

The edge's closed-loop benchmark (bench/edge.py) measures `up` against the edge alone at full speed; this one
measures what the engine costs below that, where fleets mostly are: its fixed costs per batch (the inserts'
analysis and parts, the log's commits) weigh more there than its cost per ping.

``--baseline DIR`` names another checkout of pingstream: its `up` runs interleaved with this one's (baseline,
this, baseline, this ...), each start on a fresh data directory, and the ratios this/baseline of the engine's
cores are printed per round and rate. Writes bench/results/engine.json unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from bench.checkout import describe  # noqa: E402
from bench.cpu import cpu_seconds  # noqa: E402
from bench.edge import UpServer, _children  # noqa: E402
from bench.loadgen import open_loop, request_bytes  # noqa: E402
from bench.procs import Sampling  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "engine.json"


def _role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return "gone"
    return "engine" if "engine" in command else "edges"


class Sampler(Sampling):
    """Each second, the CPU each role of `up` (supervisor, engine, edges) used in it, in cores."""

    def __init__(self, supervisor: int) -> None:
        super().__init__(1.0)
        self.roles = {supervisor: "supervisor", **{pid: _role(pid) for pid in _children(supervisor)}}
        self.seconds: list[dict[str, float]] = []
        self._last, self._at = self._cpu(), time.monotonic()

    def _cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, role in self.roles.items():
            out[role] = out.get(role, 0.0) + (cpu_seconds(pid) or 0.0)
        return out

    def sample(self) -> None:
        now, cpu = time.monotonic(), self._cpu()
        self.seconds.append({role: (cpu[role] - self._last.get(role, 0.0)) / (now - self._at) for role in cpu})
        self._last, self._at = cpu, now


def measure(root: Path, rates: list[float], duration_s: float, settle_s: float, runs: bool = False) -> list[dict]:
    """One start of `up` from the checkout ``root``; each rate in turn. ``runs``: every other ping a start, so
    about half of them end a run (a fleet whose jobs report their starts), instead of successes alone."""
    data = tempfile.mkdtemp(prefix="bench-engine-")
    server = UpServer(os.path.join(data, "up"), {}, root=root)
    out = []
    try:
        path = f"/ping/{server.check_id}"
        start, success = request_bytes(path + "/start"), request_bytes(path)

        def request(i: int) -> bytes:
            return start if runs and i % 2 == 0 else success

        for rate in rates:
            with Sampler(server.proc.pid) as sampler:
                if rate > 0:
                    result = uvloop.run(open_loop(server.port, request, rate, duration_s))
                else:  # idle: no pings, the edges' clock ticks only
                    time.sleep(duration_s)
                    result = {"p99_ms": 0.0, "statuses": {}}
            steady = sampler.seconds[int(settle_s):] or sampler.seconds
            engine = statistics.fmean(s.get("engine", 0.0) for s in steady)
            edges = statistics.fmean(s.get("edges", 0.0) for s in steady)
            out.append({
                "rate": rate, "engine_cores": engine, "edge_cores": edges,
                "engine_us_per_ping": engine / rate * 1e6 if rate else None,
                "edge_us_per_ping": edges / rate * 1e6 if rate else None,
                "engine_cores_min": min(s.get("engine", 0.0) for s in steady),
                "engine_cores_max": max(s.get("engine", 0.0) for s in steady),
                "seconds": len(steady), "p99_ms": result["p99_ms"], "statuses": result["statuses"],
            })
            per_ping = f"{engine / rate * 1e6:6.1f} us/ping, " if rate else ""
            print(f"  {root.name:>12} {rate:7.0f}/s: engine {engine:.3f} cores ({per_ping}"
                  f"{out[-1]['engine_cores_min']:.2f}-{out[-1]['engine_cores_max']:.2f} per second), "
                  f"edges {edges:.3f} cores; ack p99 {result['p99_ms']:.1f} ms {result['statuses']}", flush=True)
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", data], check=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,6000", help="pings per second, comma-separated (0: idle)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per rate")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of each rate left out at its start")
    parser.add_argument("--baseline", help="another checkout whose `up` runs interleaved with this one's")
    parser.add_argument("--rounds", type=int, default=1, help="starts of `up` per variant")
    parser.add_argument("--runs", action="store_true", help="every other ping a start (half the pings end a run)")
    parser.add_argument("--fresh", action="store_true", help="a fresh `up` for each rate, not one for them all")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    variants = ([("baseline", Path(args.baseline).resolve())] if args.baseline else []) + [("this", ROOT)]
    runs: dict[str, list[list[dict]]] = {name: [] for name, _ in variants}
    print(f"`pingstream up` at {', '.join(f'{r:.0f}' for r in rates)} pings/s"
          f"{' (every other one a start)' if args.runs else ''}, {args.duration:.0f} s each "
          f"(the first {args.settle:.0f} s left out), {args.rounds} round(s)"
          + (f"; baseline: {describe(variants[0][1])}" if args.baseline else ""), flush=True)
    for _ in range(args.rounds):
        for name, root in variants:
            if args.fresh:  # a start of `up` per rate: no rate measured on the parts and merges of the ones before
                runs[name].append([m for rate in rates
                                   for m in measure(root, [rate], args.duration, args.settle, args.runs)])
            else:
                runs[name].append(measure(root, rates, args.duration, args.settle, args.runs))

    summary = {}
    for i, rate in enumerate(rates):
        line = {name: statistics.median(r[i]["engine_cores"] for r in runs[name]) for name, _ in variants}
        summary[f"{rate:.0f}"] = line
        text = ", ".join(f"{name} {cores:.3f} cores" + (f" ({cores / rate * 1e6:.1f} us/ping)" if rate else "")
                         for name, cores in line.items())
        if args.baseline:
            ratios = [b[i]["engine_cores"] / a[i]["engine_cores"] for a, b in zip(runs["baseline"], runs["this"])]
            summary[f"{rate:.0f}"]["ratios"] = ratios
            text += f"; this/baseline per round {[round(r, 2) for r in ratios]}"
        print(f"engine at {rate:.0f} pings/s (median of {args.rounds}): {text}")
    if not args.no_save:
        RESULTS.write_text(json.dumps({
            "args": {**vars(args), "baseline": describe(Path(args.baseline)) if args.baseline else None},
            "this": describe(ROOT), "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "runs": runs, "summary": summary,
        }, indent=1) + "\n")
        print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
