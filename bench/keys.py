"""What remembering ``Idempotency-Key`` pings costs: memory per remembered id and time per keyed ping.

    .venv/bin/python -m bench.keys [--checks 1000] [--days 1.5] [--every-s 60] [--rounds 2] [--no-save]

A fleet of ``--checks`` checks, each sending a keyed ping every ``--every-s`` seconds of its own time for
``--days`` days (so the 24-hour window fills, then slides: the hourly prunes run), one retry in twenty.
Each keyed ping is what the projector's fold and the monitor do with it: ``repeat`` (a retry is skipped),
then ``add``. Two ways of remembering the ids are run on the same pings, in one process, interleaved:

- ``packed``: ``checks.idempotency.RecentIds`` (ids as 16 bytes in arrays, an open-addressed table);
- ``dict``: a dict of the ids' strings and times per check, pruned the same way: what RecentIds was
  until December 2026, kept here as the reference.

Printed per round: the ids remembered at the end, the bytes each costs (``tracemalloc``: Python's
allocations, the id strings included, as a decoded ping's id lives on only in the structure), and the
microseconds per keyed ping (the faster of two passes); then the ratios packed/dict. Results go to ``bench/results/keys.json``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.checkout import save  # noqa: E402
from checks import idempotency  # noqa: E402
from checks.idempotency import RecentIds, ping_event_id  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "keys.json"


class DictIds:
    """The reference: ``RecentIds`` as it was, the ids' strings in a dict (the same window, prune and bound)."""

    __slots__ = ("seen", "pruned_at")

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # insertion order = order applied
        self.pruned_at = 0.0

    def __len__(self) -> int:
        return len(self.seen)

    def repeat(self, event_id: str, at: float) -> bool:
        first = self.seen.get(event_id)
        return first is not None and abs(at - first) <= idempotency.WINDOW_S

    def add(self, event_id: str, at: float) -> list[str]:
        seen = self.seen
        seen.pop(event_id, None)  # a key reused after the window: newest again
        seen[event_id] = at
        dropped: list[str] = []
        if at - self.pruned_at >= 3600.0:
            self.pruned_at = at
            horizon = at - idempotency.WINDOW_S
            dropped = [i for i, t in seen.items() if t < horizon]
        bound = idempotency.MAX_KEYS_PER_CHECK
        if len(seen) - len(dropped) > bound:
            gone = set(dropped)
            excess = len(seen) - len(gone) - bound + bound // 10
            dropped += list(islice((i for i in seen if i not in gone), excess))
        if dropped:
            for i in dropped:
                del seen[i]
            self.seen = dict(seen)  # a fresh table: deleted slots are not carried along
        return dropped


def pings(checks: int, days: float, every_s: float, seed: int) -> list[tuple[int, str, float]]:
    """(check index, id text, time) in time order; one ping in twenty is a retry of the check's last one."""
    rng = random.Random(seed)
    out, last = [], {}
    steps = int(days * 86400 / every_s)
    for step in range(steps):
        for c in range(checks):
            at = step * every_s + c * every_s / checks
            if c in last and rng.random() < 0.05:
                out.append((c, last[c], at))  # a retry: the same id
            else:
                last[c] = ping_event_id(f"check-{c}", f"{step}")
                out.append((c, last[c], at))
    return out


def feed(kind, stream: list[tuple[int, str, float]], checks: int, own: bool = False) -> tuple[list, int, float]:
    """The tables after the stream, the retries skipped, and the seconds it took. ``own``: each id a string of
    its own, as a ping decoded from the log has (it lives on only where the table keeps it)."""
    tables = [kind() for _ in range(checks)]
    retries = 0
    started = time.perf_counter()
    for c, event_id, at in stream:
        if own:
            event_id = (event_id + " ")[:-1]
        table = tables[c]
        if table.repeat(event_id, at):
            retries += 1
        else:
            table.add(event_id, at)
    return tables, retries, time.perf_counter() - started


def run(kind, stream: list[tuple[int, str, float]], checks: int) -> dict:
    """Timed on its own (the faster of two passes: the first may be the one that grows the process), then again
    under ``tracemalloc`` (which slows every allocation) for the memory."""
    elapsed = float("inf")
    for _ in range(2):
        gc.collect()
        tables, retries, took = feed(kind, stream, checks)
        elapsed = min(elapsed, took)
        del tables
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tables, _, _ = feed(kind, stream, checks, own=True)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ids = sum(len(t) for t in tables)
    return {"ids": ids, "bytes_per_id": held / ids, "us_per_ping": 1e6 * elapsed / len(stream), "retries": retries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--days", type=float, default=1.5)
    parser.add_argument("--every-s", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    stream = pings(args.checks, args.days, args.every_s, seed=11)
    print(f"{len(stream):,} keyed pings over {args.checks:,} checks ({time.perf_counter() - t0:.1f} s to make)",
          flush=True)
    rounds = []
    for r in range(args.rounds):
        got = {}
        for name, kind in (("packed", RecentIds), ("dict", DictIds)):
            got[name] = run(kind, stream, args.checks)
            g = got[name]
            print(f"round {r + 1} {name:6}: {g['ids']:,} ids held, {g['bytes_per_id']:.1f} bytes/id, "
                  f"{g['us_per_ping']:.2f} us/keyed ping, {g['retries']:,} retries skipped", flush=True)
        assert got["packed"]["ids"] == got["dict"]["ids"] and got["packed"]["retries"] == got["dict"]["retries"]
        rounds.append({"packed": got["packed"], "dict": got["dict"],
                       "memory_ratio": got["packed"]["bytes_per_id"] / got["dict"]["bytes_per_id"],
                       "time_ratio": got["packed"]["us_per_ping"] / got["dict"]["us_per_ping"]})
        print(f"round {r + 1} packed/dict: memory {rounds[-1]['memory_ratio']:.2f}x, "
              f"time {rounds[-1]['time_ratio']:.2f}x", flush=True)
    summary = {
        "memory_ratio": statistics.median(x["memory_ratio"] for x in rounds),
        "time_ratio": statistics.median(x["time_ratio"] for x in rounds),
    }
    print(f"median packed/dict: memory {summary['memory_ratio']:.2f}x, time {summary['time_ratio']:.2f}x")
    if not args.no_save:
        save(RESULTS, ROOT, args, rounds, summary)


if __name__ == "__main__":
    main()
