"""Runs the edge: registry follower, clock ticker and the HTTP server.

Health (``runtime.health``, served as ``/healthz`` and ``/readyz``): alive while
the follower and the ticker turn; ready while the log is reachable and the
registry caught up. While the log is away every ping is answered 503 at once,
and the lines that would repeat for each refused ping or tick are throttled.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web

from runtime import health, logthrottle, memory, metrics
from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.base import EventLog
from runtime.registry import Registry, follow

from .app import create_app
from .fastpath import EdgeSite
from .ticker import run_ticker

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 10.0
STOP_TASKS_S = 12.0  # then the ticker and the follower have had their chance to end

# One warning per refused ping or missed tick is thousands of lines a second during an outage.
logthrottle.throttle("ingest.pings", "ingest.fastpath", "ingest.ticker", "ingest.views")


async def start_registry(event_log: EventLog, stop: asyncio.Event) -> tuple[Registry, asyncio.Task]:
    """A registry caught up with the log, and the task that keeps it following."""
    registry = Registry()
    ready = asyncio.Event()
    task = asyncio.create_task(follow(registry, event_log, ready, stop, name="edge registry"), name="registry-follow")
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready_wait.cancel()
        task.result()  # raises what stopped the follower
    return registry, task


def make_runner(app: web.Application, config: Config) -> web.AppRunner:
    """The edge's HTTP runner. aiohttp arms its keep-alive timer when a connection opens and again after
    each response, and closes the connection if no complete request head arrived by then: with a short
    idle timeout that is the cut-off for a client trickling its request line and headers (slowloris),
    or opening connections and sending nothing. A trickling body is cut by the ping handler."""
    return web.AppRunner(
        app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, keepalive_timeout=config.idle_timeout_s
    )


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a process that allocates a few short-lived objects per
    ping: what exists at start (the registry included) is moved out of the collector's view, and
    the youngest generation is collected every 50,000 allocations instead of 700 (bench/edge.py
    shows the effect on CPU per ping). Once per process, at start, after the registry is loaded
    (what is frozen is never collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(app: web.Application, config: Config, host: str, port: int) -> tuple[web.AppRunner, EdgeSite]:
    """The edge's app listening on host:port, connections starting on the fast ping path
    (ingest/fastpath/). ``runner.cleanup()`` stops it, letting pings in flight finish."""
    runner = make_runner(app, config)
    await runner.setup()
    site = EdgeSite(runner, host, port, idle_timeout_s=config.idle_timeout_s,
                    shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, backlog=1024, reuse_port=config.reuse_port or None)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


async def run(
    config: Config,
    event_log: EventLog,
    clickhouse: ClickHouse | None,
    stop: asyncio.Event,
    registry: Registry | None = None,
    started: asyncio.Event | None = None,
) -> None:
    follower = None
    if registry is None:
        registry, follower = await start_registry(event_log, stop)
    ticker = asyncio.create_task(run_ticker(event_log, config.tick_interval_s, stop), name="ticker")
    # After a load, what the edge's allocators kept of it goes back (runtime.memory).
    trimmer = asyncio.create_task(memory.release_when_idle(lambda: metrics.total(metrics.PINGS), stop, name="edge"),
                                  name="memory-release")
    watcher = None
    if clickhouse is not None and not clickhouse.embedded:
        # A ClickHouse server (or the SQL endpoint of `up`'s engine process) may go away while the
        # edge runs: pings still go to the log, but reads cannot be answered, and /readyz says so.
        clickhouse.unreachable = "not asked yet"
        health.check("read model", lambda: clickhouse.unreachable)
        watcher = asyncio.create_task(clickhouse.watch(stop), name="read-model-watch")
    app = create_app(config, event_log, registry, clickhouse)
    tune_gc()
    if config.edge_metrics_dir is not None:  # one of several edges on the port: /metrics sums them all
        await metrics.share_with_peers(config.edge_metrics_dir)
    runner, _ = await serve(app, config, config.host, config.port)
    log.info("edge serving on http://%s:%d", config.host, config.port)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        # Stop accepting, let in-flight pings finish their durable produce, then stop the rest.
        await runner.cleanup()
        await metrics.stop_sharing()
        tasks = [t for t in (ticker, follower, watcher, trimmer) if t is not None]
        done, pending = await asyncio.wait(tasks, timeout=STOP_TASKS_S)
        for task in pending:
            log.warning("%s did not stop within %g s; cancelled", task.get_name(), STOP_TASKS_S)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
        log.info("edge stopped")
