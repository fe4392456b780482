"""Prometheus metrics of every service, in one registry per process.

Service-level series only: no label names a check or a project, since ``/metrics`` takes no key
and a check's uuid is all a ping needs. A project's checks are in its own Prometheus endpoint
(``/projects/<uuid>/metrics/<read-only key>``, ingest/prometheus.py).

The edge serves them on ``GET /metrics``; a projector, monitor or notifier running
in a process of its own serves them on ``PINGSTREAM_METRICS_PORT`` (0 = off),
beside ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

_children: dict = {}


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
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


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
