"""The CPU a Kafka edge spends handing its pings to the broker: pingstream's producer (aiokafka) beside librdkafka.

    python -m bench.produce [--records 60000] [--rate 10000] [--chunk 25] [--rounds 3] [--no-save]

What `pingstream ingest` does per ping on Kafka, without the HTTP: a keyed record (350 bytes, 2,000 keys, as
many checks) handed over, then its durable acknowledgement awaited (acks=all, idempotent; the broker fsyncs
what it acknowledges). ``--chunk`` records go out per turn of the event loop, ``--rate`` records a second, as
an edge's connections bring them. Two clients take turns, each in a process of its own, on the same broker:

- ``aiokafka``: ``runtime.eventlog.kafka.KafkaEventLog.send``, the edge's own path (two producer lanes);
- ``librdkafka``: ``runtime.eventlog.rdkafka.RdKafkaEventLog.send`` (``PINGSTREAM_KAFKA_CLIENT=librdkafka``):
  one confluent-kafka producer whose C threads batch, encode and send, its delivery reports served on the loop.

Prints each round's CPU per record (all threads of the process, from ``os.times``), the rate achieved and the
acknowledgement's p50/p99, then the medians and the ratio librdkafka / aiokafka of the CPU per record. The broker
is PINGSTREAM_KAFKA if set, else one started from the project's cached jars. librdkafka comes with the ``bench``
extra (``pip install -e '.[bench]'``); without it only aiokafka runs. Writes bench/results/produce.json unless
``--no-save``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import cpu_seconds  # noqa: E402 (after the checkout is on the path)
from runtime.config import KAFKA_CLIENTS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "produce.json"
WARM_UP = 200  # records sent and acknowledged before the measured ones (connections, metadata, producer ids)


def _records(n: int) -> list[tuple[bytes, bytes]]:
    body = b"x" * 342
    return [(b"check-%05d" % (i % 2000), body + b"%08d" % i) for i in range(n)]


async def _paced(send, records: list, rate: float, chunk: int) -> tuple[float, float, list[float]]:
    """Send ``records`` ``chunk`` per loop turn at ``rate``; wait for every acknowledgement. Returns the CPU
    seconds, the wall seconds and each record's acknowledgement latency."""
    latencies: list[float] = []
    futures = []
    cpu0, t0 = cpu_seconds(), time.monotonic()
    for i in range(0, len(records), chunk):
        sent = time.monotonic()
        for key, value in records[i:i + chunk]:
            fut = send(key, value)
            fut.add_done_callback(lambda _f, sent=sent: latencies.append(time.monotonic() - sent))
            futures.append(fut)
        await asyncio.sleep(max(0.0, t0 + (i + chunk) / rate - time.monotonic()))
    await asyncio.gather(*futures)  # a failed delivery fails the run
    return cpu_seconds() - cpu0, time.monotonic() - t0, latencies


async def _run(client: str, bootstrap: str, topic: str, records: list, rate: float, chunk: int):
    from runtime.eventlog import kafka_log_class

    log = kafka_log_class(client)(bootstrap, default_partitions=8, producers=2)  # librdkafka's takes one
    await log.start()
    try:
        await log.ensure_topics([topic])
        await asyncio.gather(*(log.send(topic, v, key=k) for k, v in records[:WARM_UP]))
        return await _paced(lambda k, v: log.send(topic, v, key=k), records[WARM_UP:], rate, chunk)
    finally:
        await log.close()


def _child(client: str, bootstrap: str, topic: str, n: int, rate: float, chunk: int) -> None:
    import uvloop

    cpu, wall, latencies = uvloop.run(_run(client, bootstrap, topic, _records(n + WARM_UP), rate, chunk))
    latencies.sort()
    print(json.dumps({"client": client, "records": n, "cpu_us_per_record": cpu / n * 1e6, "records_per_s": n / wall,
                      "ack_p50_ms": latencies[len(latencies) // 2] * 1e3,
                      "ack_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=10_000.0, help="records a second")
    parser.add_argument("--chunk", type=int, default=25, help="records per turn of the event loop")
    parser.add_argument("--rounds", type=int, default=3, help="turns each client takes")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CLIENT", "BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.records, args.rate, args.chunk)
        return

    clients = list(KAFKA_CLIENTS)
    from bench.procs import scratch_broker

    bootstrap, broker = os.environ.get("PINGSTREAM_KAFKA"), None
    if not bootstrap:
        broker = scratch_broker(partitions=8)
        bootstrap = broker.bootstrap
    runs: dict[str, list[dict]] = {c: [] for c in clients}
    prefix = f"bench-produce-{os.urandom(3).hex()}"
    try:
        for round_ in range(1, args.rounds + 1):
            for client in clients:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.produce", "--records", str(args.records), "--rate", str(args.rate),
                     "--chunk", str(args.chunk), "--child", client, bootstrap, f"{prefix}-{round_}-{client}"],
                    cwd=ROOT, capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise SystemExit(f"{client} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                runs[client].append(r)
                print(f"round {round_} {client:10} {r['cpu_us_per_record']:6.1f} us CPU per record, "
                      f"{r['records_per_s']:7.0f} records/s, ack p50 {r['ack_p50_ms']:5.1f} ms, "
                      f"p99 {r['ack_p99_ms']:5.1f} ms", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    medians = {c: statistics.median(r["cpu_us_per_record"] for r in rs) for c, rs in runs.items()}
    summary = ", ".join(f"{c} {us:.1f} us" for c, us in medians.items())
    print(f"CPU per record (median of {args.rounds}): {summary}")
    if "librdkafka" in medians:
        print(f"ratio librdkafka / aiokafka: {medians['librdkafka'] / medians['aiokafka']:.2f}; at {args.rate:.0f} "
              f"records/s that is {(medians['aiokafka'] - medians['librdkafka']) * args.rate / 1e6:.2f} cores less")
    if not args.no_save:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "args": {k: v for k, v in vars(args).items() if k != "child"},
                                       "median_cpu_us_per_record": medians, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
