"""Distributed mode through broker restarts, under load (issue #20).

Two edges, a projector and a monitor, one process each, on a broker run by the
launcher (``python -m runtime.kafkabroker run --dir D``). Under a steady load
spread over both edges the broker is stopped for 15 s, then for 45 s, and each
time started again by the launcher on the same directory. Asserted:

- during an outage pings are answered 503 + Retry-After at once (p99 < 100 ms, or under 1.5 times the
  p99 of the 200s before the outage on a machine that answers those slower), not after an
  acknowledgement timeout;
- within 5 s of the broker serving again, both edges answer 200 (no restart);
- every ping answered 200 is in the pings topic exactly once, and in ClickHouse;
- the projector and the monitor resume by themselves (ready again, caught up; a
  check that falls silent after the outages goes down), and no steady check
  was called down;
- each edge logs a bounded number of lines during an outage.
"""

from __future__ import annotations

import asyncio
import faulthandler
import itertools
import re
import time
from collections import Counter

import aiohttp

from bench.procs import free_port, parse_keys, run_cli, sql
from runtime.eventlog.kafka import KafkaEventLog
from schemas.events import TOPIC_PINGS, TOPIC_TRANSITIONS, PingEvent, Transition, decode

OUTAGES_S = (15, 45)
RATE = 1000  # pings/s over both edges (aimed at; a busy 2-core box may do less)
WORKERS = 40
STEADY = 20
TIMEOUT_S, GRACE_S = 3, 2
BACK_WITHIN_S = 5.0
P99_503_MS = 100.0
MAX_LINES_PER_OUTAGE = 150  # per edge
CAUGHT_UP = 100  # records of lag


class Load:
    """WORKERS paced keep-alive connections POSTing unique bodies to the checks over both edges, on
    raw asyncio streams (aiohttp's client costs several times the CPU, which on a busy 2-core box
    shows up as latency of the server); every answer is kept as (sent at, latency, edge, status, body)."""

    def __init__(self, edges: list[int], checks: list[str]) -> None:
        self.edges, self.checks = edges, checks
        self.answers: list[tuple[float, float, int, object, str]] = []
        self.retry_after_missing = 0
        self._seq = itertools.count()
        self._stop = asyncio.Event()

    async def _worker(self, w: int) -> None:
        interval = WORKERS / RATE
        next_at = time.monotonic() + w * interval / WORKERS
        edge = w % len(self.edges)
        conn = None
        while not self._stop.is_set():
            n = next(self._seq)
            body = f"r{n}"
            request = (f"POST /ping/{self.checks[n % len(self.checks)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
            sent = time.monotonic()
            status = "error"
            for _ in range(2):  # a kept-alive connection the edge closed while idle: once more on a new one
                reused = conn is not None
                try:
                    if conn is None:
                        async with asyncio.timeout(10):
                            conn = await asyncio.open_connection("127.0.0.1", self.edges[edge])
                    reader, writer = conn
                    writer.write(request)
                    async with asyncio.timeout(30):
                        head = await reader.readuntil(b"\r\n\r\n")
                        status = int(head[9:12])
                        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                        await reader.readexactly(length)
                    if status == 503 and b"retry-after:" not in head.lower():
                        self.retry_after_missing += 1
                    break
                except (OSError, asyncio.IncompleteReadError, TimeoutError, AttributeError):
                    status = "error"
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    if not reused:
                        break
            self.answers.append((sent, time.monotonic() - sent, edge, status, body))
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn[1].close()

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(w) for w in range(WORKERS)))

    def stop(self) -> None:
        self._stop.set()

    def between(self, start: float, end: float) -> list:
        return [a for a in self.answers if start <= a[0] < end]


async def _get(session, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as r:
            return r.status, await r.text()
    except aiohttp.ClientError as exc:
        return 0, str(exc)


async def _until_ready(session, urls: list[str], timeout_s: float, procs: list = ()) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        answers = [await _get(session, f"{u}/readyz") for u in urls]
        if all(status == 200 for status, _ in answers):
            return
        assert time.monotonic() < deadline, f"not ready: {answers}\n" + "\n".join(p.tail(50) for p in procs)
        await asyncio.sleep(0.5)


def _lag(metrics_text: str, group: str) -> int:
    return sum(int(float(v)) for v in re.findall(
        rf'^pingstream_consumer_lag\{{[^}}]*group="{group}"[^}}]*\}} (\S+)$', metrics_text, re.M))


async def _read_topic(bootstrap: str, topic: str) -> list:
    log = KafkaEventLog(bootstrap)
    await log.start()
    consumer = log.consumer([topic], group=None)
    await consumer.start()
    try:
        ends, seen, out = await consumer.end_offsets(), Counter(), []
        deadline = time.monotonic() + 60
        while any(seen[tp.partition] < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for r in await consumer.getmany(max_records=10_000, timeout_ms=500):
                seen[r.partition] = r.offset + 1
                out.append(decode(r.value))
        return out
    finally:
        await consumer.close()
        await log.close()


async def test_the_system_rides_out_broker_restarts_under_load(launched_broker, services, tmp_path):
    # A hang anywhere fails the test with every thread's stack rather than stalling the suite.
    faulthandler.dump_traceback_later(600, exit=False)
    try:
        async with asyncio.timeout(600):
            await _ride_out(launched_broker, services, tmp_path)
    finally:
        faulthandler.cancel_dump_traceback_later()


async def _ride_out(launched_broker, services, tmp_path):
    broker = launched_broker
    common = {"PINGSTREAM_KAFKA": broker.bootstrap, "PINGSTREAM_PARTITIONS": "4",
              "PINGSTREAM_MIN_TIMEOUT_S": "1", "PINGSTREAM_TICK_INTERVAL_S": "0.5"}
    keys = parse_keys(run_cli("project", "create", "restarts", env={**common, "PINGSTREAM_DATA": str(tmp_path / "cli")}))
    edges = [services("ingest", {**common, "PINGSTREAM_DATA": str(tmp_path / f"edge{i}"), "PINGSTREAM_CLICKHOUSE": "off"},
                      port=True) for i in range(2)]
    ports = {"projector": free_port(), "monitor": free_port()}
    projector = services("projector", {**common, "PINGSTREAM_DATA": str(tmp_path / "projector"),
                                       "PINGSTREAM_METRICS_PORT": ports["projector"]})
    monitor = services("monitor", {**common, "PINGSTREAM_DATA": str(tmp_path / "monitor"),
                                   "PINGSTREAM_METRICS_PORT": ports["monitor"]})
    consumers = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    edge_urls = [e.url for e in edges]
    figures: dict = {"outages": []}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        checks = []
        for i in range(STEADY + 1):
            r = await session.post(f"{edges[0].url}/api/v3/checks/", headers={"X-Api-Key": keys["api_key"]},
                                   json={"name": f"c{i}", "timeout": TIMEOUT_S, "grace": GRACE_S})
            assert r.status == 201, await r.text()
            checks.append((await r.json())["uuid"])
        steady, silent = checks[:STEADY], checks[STEADY]
        await _until_ready(session, edge_urls + list(consumers.values()), timeout_s=90)

        load = Load([e.port for e in edges], steady + [silent])
        running = asyncio.create_task(load.run())
        await asyncio.sleep(5)
        for outage_s in OUTAGES_S:
            lines = [len(e.output) for e in edges]
            broker.stop()  # SIGTERM to the launcher: the broker shuts down cleanly
            down_at = time.monotonic()
            await asyncio.sleep(outage_s)
            during = load.between(down_at, time.monotonic())
            logged = [len(e.output) - n for e, n in zip(edges, lines)]
            broker.start()  # the launcher again, same --dir: same data, port, cluster id (the load pauses meanwhile)
            up_at = time.monotonic()
            firsts = []
            while len(firsts) < len(edges):
                await asyncio.sleep(0.05)
                firsts = [min((a[0] + a[1] for a in load.between(up_at, time.monotonic()) if a[2] == i and a[3] == 200),
                              default=None) for i in range(len(edges))]
                firsts = [f for f in firsts if f is not None]
                assert time.monotonic() - up_at < 30, f"edges not answering 200 30 s after the broker came back: {firsts}"
            latencies = sorted(a[1] for a in during)
            statuses = Counter(a[3] for a in during)
            p99_ms = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
            outage = {"outage_s": outage_s, "pings_during": len(during), "statuses_during": dict(statuses),
                      "p99_503_ms": round(p99_ms, 1), "first_200_after_s": round(max(firsts) - up_at, 2),
                      "edge_lines_during": logged}
            slices = {}
            for a in during:
                slices.setdefault(int(a[0] - down_at), []).append(a[1])
            outage["p99_ms_per_second"] = [round(sorted(v)[int(0.99 * (len(v) - 1))] * 1000) for _, v in sorted(slices.items())]
            outage["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None
            before = sorted(a[1] for a in load.between(down_at - 5, down_at - 1))
            outage["p99_ms_before"] = round(before[int(0.99 * (len(before) - 1))] * 1000, 1) if before else None
            figures["outages"].append(outage)
            print("outage:", outage)
            assert statuses[503] > 0.9 * len(during), outage
            # A loaded machine answers everything slower (the 200s' p99 before an outage was 131 ms once beside
            # a second suite worker, and the 503s' 112.5 ms): what must not show is the acknowledgement timeout.
            assert p99_ms < max(P99_503_MS, 1.5 * (outage["p99_ms_before"] or 0.0)), outage
            assert max(firsts) - up_at < BACK_WITHIN_S, outage
            assert max(logged) < MAX_LINES_PER_OUTAGE, (outage, edges[0].tail(60))
            await asyncio.sleep(8)
        load.stop()
        await running
        assert load.retry_after_missing == 0

        # The silent check: pinged once now, then silent; the monitor (resumed by itself) calls it down.
        assert (await session.post(f"{edges[0].url}/ping/{silent}")).status == 200
        await asyncio.sleep(1)  # the steady checks' last pings are in; they stop now too
        stopped_at = time.time()
        await _until_ready(session, list(consumers.values()), timeout_s=60, procs=[projector, monitor])
        for name, url in consumers.items():
            deadline = time.monotonic() + 60
            # Ticks keep arriving (a few per partition per second): caught up is within a few of them.
            while (lag := _lag(text := (await _get(session, f"{url}/metrics"))[1], f"pingstream-{name}")) > CAUGHT_UP:
                assert time.monotonic() < deadline, (
                    f"{name} still {lag} records behind:\n"
                    + "\n".join(line for line in text.splitlines() if "consumer_lag{" in line) + "\n"
                    + {"projector": projector, "monitor": monitor}[name].tail(40))
                await asyncio.sleep(1)

    acked = [a[4] for a in load.answers if a[3] == 200]
    statuses = Counter(a[3] for a in load.answers)
    assert set(statuses) <= {200, 503}, statuses
    # Every acknowledged ping is in the log exactly once.
    events = await _read_topic(broker.bootstrap, TOPIC_PINGS)
    logged = Counter(e.body.decode() for e in events if isinstance(e, PingEvent) and e.body.startswith(b"r"))
    lost = [b for b in acked if b not in logged]
    twice = [b for b in acked if logged[b] > 1]
    assert not lost, f"{len(lost)} acknowledged pings not in the log"
    assert not twice, f"{len(twice)} acknowledged pings in the log twice"

    # The monitor: the silent check goes down, no steady check ever did.
    deadline = time.monotonic() + 45
    while True:
        transitions = [e for e in await _read_topic(broker.bootstrap, TOPIC_TRANSITIONS) if isinstance(e, Transition)]
        downs = {t.check_id: t for t in transitions if t.to_status == "down"}
        if silent in downs or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert silent in downs, (f"the monitor did not resume: the silent check never went down "
                             f"({len(transitions)} transitions):\n" + monitor.tail(60))
    false_downs = [t for t in transitions if t.to_status == "down" and t.check_id in steady
                   and t.at.timestamp() < stopped_at]
    assert not false_downs, f"{len(false_downs)} steady checks called down"

    # The projector: every acknowledged ping is in ClickHouse, once.
    projector.stop()
    rows = sql(projector.env, "SELECT body, count() AS n FROM pings FINAL WHERE startsWith(body, 'r') GROUP BY body")
    stored = {r["body"]: int(r["n"]) for r in rows}
    assert not [b for b in acked if b not in stored], "acknowledged pings missing in ClickHouse"
    assert not [b for b, n in stored.items() if n > 1], "pings stored twice in ClickHouse"
    figures.update(acked=len(acked), lost=len(lost), in_log_twice=len(twice), statuses=dict(statuses),
                   rate=round(len(load.answers) / (load.answers[-1][0] - load.answers[0][0])))
    print("broker restarts:", figures)
    monitor.stop()
