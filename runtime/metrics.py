"""Prometheus metrics of every service, in one registry per process.

Service-level series only: no label names a check or a project, since ``/metrics`` takes no key
and a check's uuid is all a ping needs. A project's checks are in its own Prometheus endpoint
(``/projects/<uuid>/metrics/<read-only key>``, ingest/prometheus.py).

The edge serves them on ``GET /metrics``; a projector, monitor or notifier running
in a process of its own serves them on ``PINGSTREAM_METRICS_PORT`` (0 = off),
beside ``/healthz`` and ``/readyz``.

Edges sharing a port (``pingstream up``'s) share their series too (``share_with_peers``): each
serves its own on a Unix socket in a directory they have in common, and so does ``up``'s engine
process (the projector's, the monitor's and the notifier's series, the consumer lag, the embedded
log's retention). Whichever edge a ``/metrics`` request lands on answers the sum over all of them:
counters and histograms added up, a gauge at its lowest (``pingstream_log_available`` is 0 while one
process cannot reach the log). A process that ended takes its counts with it: the sums drop, as a
counter does when its process restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from runtime import health, server_header

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_RESPONSES = Counter(
    "pingstream_http_responses", "HTTP answers of the edge", ["endpoint", "code"], registry=REGISTRY
)
BAD_REQUESTS = Counter(
    "pingstream_http_bad_requests", "Malformed requests refused by the edge's HTTP layer, by what was wrong",
    ["reason"], registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "pingstream_http_connections_refused",
    "Connections refused because their client address held PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT already",
    registry=REGISTRY,
)
PINGS = Counter("pingstream_pings", "Pings recorded by the edge, by kind", ["kind", "source"], registry=REGISTRY)
PRODUCE_SECONDS = Histogram(
    "pingstream_log_produce_seconds", "Time until the event log acknowledged a record", ["backend"],
    buckets=_FAST, registry=REGISTRY,
)
PRODUCE_ERRORS = Counter(
    "pingstream_log_produce_errors", "Records the event log could not acknowledge", ["backend"], registry=REGISTRY
)
LOG_AVAILABLE = Gauge(
    "pingstream_log_available", "1 while the event log acknowledges records, 0 while it is known unreachable",
    ["backend"], registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "pingstream_consumer_lag", "Records not yet consumed, per partition", ["group", "topic", "partition"],
    registry=REGISTRY,
)
BATCH_RECORDS = Histogram(
    "pingstream_batch_records", "Records per consumed batch", ["service"],
    buckets=(1, 10, 100, 1000, 5000, 10_000, 25_000, 50_000, 100_000), registry=REGISTRY,
)
INSERT_SECONDS = Histogram(
    "pingstream_clickhouse_insert_seconds", "ClickHouse insert latency", ["table"], buckets=_FAST, registry=REGISTRY
)
INSERT_ROWS = Counter("pingstream_clickhouse_rows", "Rows inserted into ClickHouse", ["table"], registry=REGISTRY)
TRANSITIONS = Counter(
    "pingstream_transitions", "Status transitions emitted by the monitor", ["from_status", "to_status"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "pingstream_dead_letters", "Records sent to the dead-letter topic", ["service"], registry=REGISTRY
)
SQL_QUERIES = Counter(
    "pingstream_sql_queries", "Queries the SQL endpoint ran on the engine, by protocol and outcome (ok, error)",
    ["protocol", "outcome"], registry=REGISTRY,
)
SQL_SECONDS = Histogram(
    "pingstream_sql_query_seconds", "Time a query of the SQL endpoint held the engine's thread (the projector's too)",
    ["protocol"], buckets=_FAST, registry=REGISTRY,
)

_children: dict = {}


def total(counter: Counter) -> float:
    """A counter's count summed over its labels (in this process)."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def child(metric, *labels: str):
    """``metric.labels(*labels)``, cached: the edge counts every answer, and prometheus_client's
    ``labels()`` takes a lock and builds a key each time. For series that are never removed."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


async def record_lag(group: str, consumer, positions: dict) -> int | None:
    """Set the lag gauges from the consumer's end offsets and the next offsets to read; the total
    lag over the partitions with a known position (None: the end offsets could not be had)."""
    try:
        ends = await consumer.end_offsets()
    except Exception as exc:  # lag is best effort: never let it stop a service
        log.debug("end offsets unavailable: %s", exc)
        return None
    total = 0
    for tp, end in ends.items():
        position = positions.get(tp)
        if position is not None:
            lag = max(0, end - position)
            total += lag
            CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lag)
    return total


class Timer:
    """``with Timer(histogram.labels(...)):`` observes the block's wall time."""

    __slots__ = ("_h", "_t")

    def __init__(self, histogram) -> None:
        self._h = histogram

    def __enter__(self) -> "Timer":
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._h.observe(time.perf_counter() - self._t)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


async def metrics_handler(request: web.Request) -> web.Response:
    body = exposition() if _peers is None else merge([families(), *await _peers.gather()])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- several processes behind one port ---

PEER_TIMEOUT_S = 1.0  # an edge that does not give its series within this is left out of the sum

Families = list  # [(name, type, help, [(sample name, labels, value), ...]), ...]: one process's series


def families(registry: CollectorRegistry = REGISTRY) -> Families:
    """This process's series as plain data, for another process to merge."""
    return [(m.name, m.type, m.documentation, [(x.name, x.labels, x.value) for x in m.samples])
            for m in registry.collect()]


def merge(processes: list[Families]) -> bytes:
    """The exposition of several processes' series as one: each series' values added up, but a
    gauge's (and a ``_created`` timestamp's) lowest."""
    merged: dict[str, tuple[str, str, dict]] = {}
    for process in processes:
        for name, kind, doc, samples in process:
            values = merged.setdefault(name, (kind, doc, {}))[2]
            for sample, labels, value in samples:
                key = (sample, tuple(labels.items()))
                if key not in values:
                    values[key] = value
                elif kind == "gauge" or sample.endswith("_created"):
                    values[key] = min(values[key], value)
                else:
                    values[key] += value
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merged))
    return generate_latest(registry)


class _Merged:
    def __init__(self, merged: dict) -> None:
        self._merged = merged

    def collect(self):
        for name, (kind, doc, values) in self._merged.items():
            metric = Metric(name, doc, kind)
            for (sample, labels), value in values.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric


class Peers:
    """This process's series on a Unix socket in ``directory`` (named for its pid), and the other
    processes' there gathered on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{os.getpid()}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(families()).encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def gather(self) -> list[Families]:
        """The series of every other process with a socket in the directory that answers in time."""
        others = [p for p in self.directory.glob("*.sock") if p != self.path]
        answers = await asyncio.gather(*(self._ask(p) for p in others))
        return [a for a in answers if a is not None]

    @staticmethod
    async def _ask(path: Path) -> Families | None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    return json.loads(await reader.read())
                finally:
                    writer.close()
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # an edge that ended without removing it: nobody listens
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("metrics of the process at %s not had: %s", path, exc)
        return None


_peers: Peers | None = None


async def share_with_peers(directory: Path) -> Peers:
    """From now on this process's ``/metrics`` answers for every process sharing ``directory``."""
    global _peers
    peers = Peers(directory)
    await peers.start()
    _peers = peers
    return peers


async def stop_sharing() -> None:
    global _peers
    peers, _peers = _peers, None
    if peers is not None:
        await peers.stop()


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    """/metrics, /healthz and /readyz (``runtime.health``) for services without an edge in their process."""
    if not port:
        await stop.wait()
        return
    app = web.Application()
    server_header.install(app)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
