"""``pingstream`` command line: run the services, manage projects, follow transitions.

    pingstream up                 the whole system (embedded default): PINGSTREAM_EDGE_PROCESSES edges sharing the
                                  port and one engine process, supervised (0: everything in one process)
    pingstream engine             projector + monitor + notifier + the SQL endpoint around the embedded engine
                                  (what `up` runs beside its edges)
    pingstream ingest|projector|monitor|notify|webhooks   one service per process (against Kafka); ingest runs
                                  PINGSTREAM_EDGE_PROCESSES edges sharing the port when that is set above 1
    pingstream project create NAME
    pingstream channel add|list|rm  a project's alert channels
    pingstream transitions tail
    pingstream sql "SELECT ..."   query the configured ClickHouse (embedded and held by a running process:
                                  through that process's SQL endpoint)
    pingstream admin-key          print the installation's admin key (the SQL endpoint's password)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Awaitable, Callable
from urllib.parse import quote

from checks.spec import project_name_error
from schemas.events import Project

from runtime import adminkey, health, memory, metrics, supervisor
from runtime.backoff import Stopped, until_answered
from runtime.clickhouse import ClickHouse, Held, Unavailable, Unreachable
from runtime.config import Config, ConfigError, tls_server_context
from runtime.eventlog import open_eventlog
from runtime.eventlog.base import LogUnavailable
from runtime.registry import create_project

log = logging.getLogger("pingstream")
STOP_S = 20.0  # after a stop (or a service failing), what has not ended by then is cancelled


def _install_signals(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: graceful stop (stop accepting, flush, commit, close). Second: exit now."""
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signame)
            os._exit(1)
        log.info("%s: stopping gracefully (send again to exit at once)", signame)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)


def _print_project(config: Config, project: Project, out=None) -> None:
    print(
        f"project {project.name!r} ({project.id})\n"
        f"  ping key:          {project.ping_key}\n"
        f"  API key:           {project.api_key}\n"
        f"  read-only API key: {project.api_key_readonly}\n"
        f"  example ping:      curl {config.public_url}/ping/{project.ping_key}/my-job?create=1\n"
        f"  Prometheus:        {config.public_url}/projects/{project.id}/metrics/{project.api_key_readonly}",
        file=out or sys.stdout,
        flush=True,
    )


async def _open_clickhouse(config: Config, migrate: bool, stop: asyncio.Event) -> ClickHouse | None:
    """The configured ClickHouse, started; None when the process was stopped first. A writer (the projector)
    asks again (``runtime.backoff``, as ``_until_answered``) when a server does not answer yet, and, for
    ``ENGINE_RELEASE_S`` in all, waits while another process holds the embedded engine's data path: one
    stopping (``up`` killed with -9: its children got SIGTERM and finish their last batch), or a
    ``pingstream sql`` run while no process served it. A reader (an edge) given a path another process holds
    ends at once."""
    held_until = asyncio.get_running_loop().time() + ENGINE_RELEASE_S
    if migrate and not await _engine_released(config, stop, held_until):
        return None

    def may_mend(exc: Exception) -> bool:
        if isinstance(exc, Unreachable):
            return True
        return migrate and isinstance(exc, Held) and asyncio.get_running_loop().time() < held_until

    async def start() -> ClickHouse:
        clickhouse = ClickHouse(config.clickhouse, config.clickhouse_database, migrate=migrate)
        try:
            await clickhouse.start()
        except BaseException:
            await clickhouse.close()
            raise
        return clickhouse

    try:
        return await until_answered(start, may_mend=may_mend, stop=stop, logger=log)
    except Stopped:
        return None


async def _until_answered(start: Callable[[], Awaitable[None]], may_mend: Callable[[Exception], bool],
                          stop: asyncio.Event) -> bool:
    """``start()`` until it works (True), or until the process is stopped (False). A failure that waiting
    may mend (``may_mend``: a broker or a server that does not answer yet; a service of the distributed
    mode may start before them) is a warning line, and is tried again (``runtime.backoff``: 0.5 s later,
    then 1, 2, 4... up to 10 s); any other is raised."""
    try:
        await until_answered(start, may_mend=may_mend, stop=stop, logger=log)
    except Stopped:
        return False
    return True


SQL_PORT_FILE = "sql-port"  # in the data directory while a process serves the SQL endpoint


async def _start_sql_server(config: Config, clickhouse: ClickHouse):
    """The ClickHouse HTTP interface of this process's embedded engine (runtime/sqlserver.py), with the
    admin key created (and printed) on first start."""
    from runtime.sqlserver import SqlServer

    key, created = adminkey.load_or_create(config.data_dir)
    tls = tls_server_context(config.sql_tls_cert, config.sql_tls_key) if config.sql_tls_cert else None
    server = SqlServer(clickhouse, key, config.sql_host, config.sql_port,
                       max_execution_time_s=config.sql_max_execution_time_s,
                       max_result_rows=config.sql_max_result_rows, port_file=config.data_dir / SQL_PORT_FILE,
                       tls=tls, https_port=config.sql_https_port)
    await server.start()
    if created:
        print(f"admin key: {key}  (the SQL endpoint's password; `pingstream admin-key` prints it again)", flush=True)
    print(f"SQL (ClickHouse HTTP interface): {server.url}  user {adminkey.USER}, password: the admin key", flush=True)
    if server.https_url:
        print(f"SQL (ClickHouse HTTPS interface): {server.https_url}  the same user and password", flush=True)
    from runtime.nativeserver import NativeServer

    for port, what, variable, context in (
            (config.sql_native_port, "native protocol", "PINGSTREAM_SQL_NATIVE_PORT", None),
            (config.sql_native_tls_port if tls else None, "native protocol, TLS", "PINGSTREAM_SQL_NATIVE_TLS_PORT",
             tls)):
        if port is None:
            continue
        native = NativeServer(server, config.sql_host, port, context)
        try:
            await native.start()
        except OSError as exc:  # the port taken: the system runs, without the native protocol
            print(f"SQL (ClickHouse {what}): not served: {config.sql_host}:{port}: {exc.strerror} ({variable})",
                  flush=True)
        else:
            server.on_stop(native.stop)
            print(f"SQL (ClickHouse {what}): {native.address}  the same user and password", flush=True)
    return server


async def _run_services(config: Config, names: list[str]) -> None:
    """The services ``names`` in this process. ``up``: the whole system in one process; ``engine``: the
    projector, the monitor and the maintenance of the embedded log around the embedded engine, which it
    serves to the edges over SQL (what supervised ``up`` runs beside its edges)."""
    from ingest import service as edge_service

    whole = "up" in names or "engine" in names
    # `up`'s engine: its series are in the edges' /metrics, through a socket beside theirs.
    shares_metrics = "ingest" not in names and config.edge_metrics_dir is not None
    stop = asyncio.Event()
    _install_signals(stop)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    event_log = open_eventlog(config)
    # The embedded log's failure (a path it cannot open) does not mend by waiting.
    if not await _until_answered(event_log.start, lambda exc: bool(config.kafka) and isinstance(exc, LogUnavailable),
                                 stop):
        return
    health.check("event log", lambda: event_log.unavailable)
    clickhouse = None
    sql_server = None
    try:
        if "projector" in names or ("ingest" in names and config.clickhouse != "off"):
            # Only the projector writes (and migrates the DDL); an edge reads, perhaps through a read-only endpoint.
            clickhouse = await _open_clickhouse(config, migrate="projector" in names, stop=stop)
            if clickhouse is None:
                return
        tasks = []
        if clickhouse is not None and clickhouse.embedded and config.sql_port is not None:
            sql_server = await _start_sql_server(config, clickhouse)
        if "ingest" in names:
            registry, follower = await edge_service.start_registry(event_log, stop)
            if "up" in names and not registry.projects:
                project = await create_project(event_log, "default", registry)
                print("created the default project:", flush=True)
                _print_project(config, project)
            elif "up" in names:
                _print_project(config, next(iter(registry.projects.values())))
            serving = asyncio.Event()
            tasks.append(edge_service.run(config, event_log, clickhouse, stop, registry=registry, started=serving))
            tasks.append(follower)
            tasks.append(_notify_when(serving, stop))
        if "projector" in names:
            from projector import service as projector_service

            tasks.append(projector_service.run(config, event_log, clickhouse, stop))
            tasks.append(memory.release_when_idle(
                lambda: clickhouse.bulk_inserts, stop, lambda: clickhouse.run(clickhouse.release_memory), name="engine"))
        if "monitor" in names:
            from monitor import service as monitor_service

            tasks.append(monitor_service.run(config, event_log, stop))
        if "notify" in names:
            from notify import service as notify_service

            tasks.append(notify_service.run(config, event_log, stop))
        if "webhooks" in names or (whole and config.webhooks):
            from notify.webhooks import run_webhooks

            tasks.append(run_webhooks(event_log, dict(config.webhooks).get, stop))
        if whole and config.kafka is None:
            from runtime.eventlog import retention

            tasks.append(retention.maintain(event_log, retention.policy_for(config), stop, config.retention_interval_s))
        if shares_metrics:
            await metrics.share_with_peers(config.edge_metrics_dir)
        if "ingest" not in names and config.metrics_port:
            tasks.append(metrics.serve(config.host, config.metrics_port, stop))
        running = [asyncio.ensure_future(t) for t in tasks]
        if "ingest" not in names:
            supervisor.notify_ready()  # an edge says so once it serves (_notify_when)
        # One service failing stops the others: a half-running pipeline is worse than none. The
        # process then exits non-zero, for its supervisor to restart it.
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        # Bounded: a service that does not end within STOP_S (a close waiting on a missing broker) is cancelled.
        _, pending = await asyncio.wait(running, timeout=STOP_S)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d service(s) did not stop within %g s; cancelled", len(pending), STOP_S)
            await asyncio.wait(pending, timeout=5)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
    finally:
        if shares_metrics:
            await metrics.stop_sharing()
        if sql_server is not None:
            await sql_server.stop()
        await event_log.close()  # bounded too (Kafka: a few seconds to flush, then it goes)
        if clickhouse is not None:
            await clickhouse.close()


ENGINE_RELEASE_S = 60.0


async def _engine_released(config: Config, stop: asyncio.Event, deadline: float) -> bool:
    """Wait (looking every 0.2 s) until no other process holds the embedded engine, or ``deadline`` (the
    loop's time) passes; False when the process was stopped first."""
    from runtime.clickhouse import held_by_another_process

    if held_by_another_process(config.clickhouse):
        log.info("the embedded engine is held by another process (one stopping?); waiting up to %g s",
                 deadline - asyncio.get_running_loop().time())
    while held_by_another_process(config.clickhouse) and asyncio.get_running_loop().time() < deadline:
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
            return False
        except TimeoutError:
            pass
    return True


async def _notify_when(started: asyncio.Event, stop: asyncio.Event) -> None:
    """Tell a supervisor this process is ready once ``started`` is set (or never, if stopped first)."""
    waiting = asyncio.ensure_future(started.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    stopping.cancel()
    if started.is_set():
        supervisor.notify_ready()


async def _default_project(config: Config) -> None:
    """Create the default project on the first start of ``up``; print its keys (every start)."""
    from ingest import service as edge_service

    stop = asyncio.Event()
    async with open_eventlog(config) as event_log:
        registry, follower = await edge_service.start_registry(event_log, stop)
        try:
            if not registry.projects:
                project = await create_project(event_log, "default", registry)
                print("created the default project:", flush=True)
            else:
                project = next(iter(registry.projects.values()))
        finally:
            stop.set()
            await follower
    _print_project(config, project)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the edges' address with SO_REUSEPORT: a port in use fails here with one
    line, port 0 becomes a port of our own, and it stays ours while the edges come and go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _supervise(config: Config) -> int:
    """``up`` on every core: one engine process (the embedded engine, the projector, the monitor, the SQL
    endpoint), then ``edge_processes`` edges sharing the port, reading through the engine's SQL
    endpoint; each restarted if it dies; on SIGINT/SIGTERM the edges stop first, then the engine."""
    from runtime.kafkabroker import free_port
    from runtime.supervisor import Child

    stop = asyncio.Event()
    _install_signals(stop)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    reserved = _reserve_port(config.host, config.port)
    port = reserved.getsockname()[1]
    argv = [sys.executable, "-m", "pingstream.cli"]
    env = {**os.environ, "PINGSTREAM_PORT": str(port), "PINGSTREAM_DATA": str(config.data_dir)}
    engine_env = dict(env)
    metrics_dir = _edge_metrics_dir(config)
    edge_env = _edge_env(env, metrics_dir[0])
    # The engine offers its series there too (the projector's, the monitor's, the consumer lag, the log's
    # retention), so /metrics on the port answers for the whole system.
    engine_env["PINGSTREAM_EDGE_METRICS_DIR"] = metrics_dir[0]
    if config.embedded_clickhouse:
        key, created = adminkey.load_or_create(config.data_dir)
        if created:
            print(f"admin key: {key}  (the SQL endpoint's password; `pingstream admin-key` prints it again)", flush=True)
        # The edges read through the engine's SQL endpoint: on a port fixed for the supervisor's life, so
        # a restarted engine is found where the edges look. With the endpoint off, on loopback only.
        sql_host = "127.0.0.1" if config.sql_port is None else config.sql_host
        sql_port = config.sql_port or free_port()
        engine_env.update(PINGSTREAM_SQL_HOST=sql_host, PINGSTREAM_SQL_PORT=str(sql_port))
        reach = "127.0.0.1" if sql_host in ("0.0.0.0", "::", "") else sql_host
        edge_env["PINGSTREAM_CLICKHOUSE"] = f"http://{adminkey.USER}:{quote(key, safe='')}@{reach}:{sql_port}"
    await _default_project(config)
    children = [Child("engine", [*argv, "engine"], engine_env, stop_timeout_s=STOP_S + 10)]
    children += [Child(f"edge {n + 1}", [*argv, "ingest"], edge_env, stop_timeout_s=STOP_S)
                 for n in range(config.edge_processes)]
    edges = "1 edge process" if config.edge_processes == 1 else f"{config.edge_processes} edge processes"
    return await _run_children(children, stop, reserved,
                               f"up: {edges} on http://{config.host}:{port} and one engine process", metrics_dir)


def _edge_env(env: dict[str, str], metrics_dir: str) -> dict[str, str]:
    """A supervised edge's environment: it binds the shared port with SO_REUSEPORT and is one process
    (PINGSTREAM_EDGE_PROCESSES is the supervisor's, not for the child to supervise again); its
    ``/metrics`` answers for all the edges, through sockets in ``metrics_dir``."""
    return {**env, "PINGSTREAM_REUSE_PORT": "1", "PINGSTREAM_EDGE_PROCESSES": "1",
            "PINGSTREAM_EDGE_METRICS_DIR": metrics_dir}


_SOCKET_PATH_MAX = 100  # bytes of a Unix socket's path (108 on Linux, 104 on BSDs), with room for "<pid>.sock"


def _edge_metrics_dir(config: Config) -> tuple[str, bool]:
    """Where a supervisor's edges put their metrics sockets, and whether it is to be removed at the end:
    ``edges`` in the data directory (kept: stale sockets are dropped by the first edge that finds
    nobody answering), or a temporary directory when that path is too long for a socket."""
    edges = config.data_dir.resolve() / "edges"
    if len(os.fsencode(edges)) + len("/4194304.sock") <= _SOCKET_PATH_MAX:
        edges.mkdir(exist_ok=True)
        return str(edges), False
    return tempfile.mkdtemp(prefix="pingstream-edges-"), True


async def _supervise_edges(config: Config) -> int:
    """``ingest`` with PINGSTREAM_EDGE_PROCESSES > 1: that many edge processes sharing the port
    (SO_REUSEPORT), each restarted if it dies, as ``up`` runs its edges; the rest of the distributed
    system (projector, monitor, notify) runs in processes of its own anyway."""
    from runtime.supervisor import Child

    stop = asyncio.Event()
    _install_signals(stop)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    reserved = _reserve_port(config.host, config.port)
    port = reserved.getsockname()[1]
    metrics_dir = _edge_metrics_dir(config)
    env = _edge_env({**os.environ, "PINGSTREAM_PORT": str(port), "PINGSTREAM_DATA": str(config.data_dir)},
                    metrics_dir[0])
    argv = [sys.executable, "-m", "pingstream.cli", "ingest"]
    children = [Child(f"edge {n + 1}", argv, env, stop_timeout_s=STOP_S) for n in range(config.ingest_processes)]
    banner = f"ingest: {config.ingest_processes} edge processes on http://{config.host}:{port}"
    return await _run_children(children, stop, reserved, banner, metrics_dir)


async def _run_children(children, stop: asyncio.Event, reserved: socket.socket, banner: str,
                        metrics_dir: tuple[str, bool]) -> int:
    """Start ``children`` in order (each ready before the next), keep them running until ``stop``,
    then stop them in reverse order; the reserved port is held until then, and the edges' metrics
    directory, when temporary, removed then."""
    from runtime.supervisor import ChildFailed, Supervisor

    processes = Supervisor()
    try:
        for child in children:
            starting = asyncio.ensure_future(processes.start(child))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                break
            starting.result()
        else:
            print(banner, flush=True)
            supervisor.notify_ready()
            await stop.wait()
    except ChildFailed as exc:
        print(f"pingstream: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await processes.stop()
        reserved.close()
        if metrics_dir[1]:
            shutil.rmtree(metrics_dir[0], ignore_errors=True)
    return 0


async def _project_create(config: Config, name: str) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_eventlog(config) as event_log:
        project = await create_project(event_log, name)
    _print_project(config, project)


async def _transitions_tail(config: Config) -> None:
    from notify.tail import tail

    stop = asyncio.Event()
    _install_signals(stop)
    async with open_eventlog(config) as event_log:
        await tail(event_log, stop, sys.stdout)


def _sql_endpoint(config: Config):
    """A client of the SQL endpoint of the process holding the embedded engine, or None if none serves one."""
    import clickhouse_connect

    key = adminkey.read(config.data_dir)
    try:
        port = int((config.data_dir / SQL_PORT_FILE).read_text())
    except (OSError, ValueError):
        port = config.sql_port
    if key is None or not port:
        return None
    host = "127.0.0.1" if config.sql_host in ("0.0.0.0", "::", "") else config.sql_host
    return clickhouse_connect.get_client(host=host, port=port, username=adminkey.USER, password=key,
                                         database=config.clickhouse_database)


def _sql(config: Config, query: str, fmt: str) -> int:
    """Run one query on the configured ClickHouse and print the result. With embedded chdb held by a running
    process (``up``, a projector), through that process's SQL endpoint."""
    from clickhouse_connect.driver.exceptions import ClickHouseError as ClientError

    from runtime.clickhouse import connect, held_by_another_process

    if config.clickhouse == "off":
        print("pingstream: PINGSTREAM_CLICKHOUSE=off", file=sys.stderr)
        return 2
    if held_by_another_process(config.clickhouse):
        try:
            client = _sql_endpoint(config)
        except ClientError as exc:
            print(f"pingstream: the SQL endpoint did not answer: {str(exc)[:300]}", file=sys.stderr)
            return 1
        if client is None:
            print("pingstream: the embedded ClickHouse is held by a running process that serves no SQL endpoint "
                  "(PINGSTREAM_SQL_PORT=off); stop it first, or turn the endpoint on", file=sys.stderr)
            return 1
    else:
        try:
            client = connect(config.clickhouse, config.clickhouse_database, migrate=False)  # a reader: no DDL
        except Exception as exc:
            print(f"pingstream: cannot open ClickHouse ({exc.__class__.__name__}: {str(exc)[:200]})", file=sys.stderr)
            return 1
    try:
        result = client.query(query)
        if fmt == "json":
            import json

            for row in result.named_results():
                print(json.dumps(row, default=str))
        else:
            print("\t".join(result.column_names))
            for row in result.result_rows:
                print("\t".join("" if v is None else str(v) for v in row))
    except ClientError as exc:
        print(f"pingstream: {str(exc)[:1000]}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _admin_key(config: Config) -> int:
    key, _ = adminkey.load_or_create(config.data_dir)
    print(key)
    return 0


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pingstream", description="Heartbeat monitoring pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole system: edges on every core and the engine, supervised")
    sub.add_parser("engine", help="run the projector, the monitor and the SQL endpoint around the embedded engine")
    sub.add_parser("ingest", help="run the HTTP edge")
    sub.add_parser("projector", help="run the projector (log -> ClickHouse)")
    sub.add_parser("monitor", help="run the monitor (state machine -> transitions)")
    sub.add_parser("notify", help="run the notifier (transitions -> alerts to the projects' channels)")
    sub.add_parser("webhooks", help="POST each transition to its project's PINGSTREAM_WEBHOOKS URL (short form)")
    channel = sub.add_parser("channel", help="manage a project's alert channels")
    channel_sub = channel.add_subparsers(dest="action", required=True)
    add = channel_sub.add_parser("add", help="add a channel (it is alerted from now on) and print it")
    add.add_argument("--project", required=True, help="project id or name")
    add.add_argument("--kind", required=True, choices=["webhook", "email", "apprise"])
    add.add_argument("--name", default="")
    add.add_argument("--url", help="webhook URL or Apprise URL")
    add.add_argument("--email", help="e-mail address")
    add.add_argument("--events", default="down,up",
                     help="comma-separated: down, up, started, grace, failure, paused, ingest_gap (default down,up)")
    add.add_argument("--method", default="POST", help="webhook: GET, POST or PUT")
    add.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="webhook: an extra header")
    add.add_argument("--body", help="webhook: body template ($NAME, $STATUS, $BODY, ...); default: a JSON document")
    ls = channel_sub.add_parser("list", help="list a project's channels")
    ls.add_argument("--project", required=True, help="project id or name")
    rm = channel_sub.add_parser("rm", help="remove a channel")
    rm.add_argument("channel_id")
    project = sub.add_parser("project", help="manage projects")
    project_sub = project.add_subparsers(dest="action", required=True)
    create = project_sub.add_parser("create", help="create a project and print its keys")
    create.add_argument("name")
    sql = sub.add_parser("sql", help="run a query on the configured ClickHouse and print the rows")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["tsv", "json"], default="tsv")
    sub.add_parser("admin-key", help="print the installation's admin key (the SQL endpoint's password)")
    transitions = sub.add_parser("transitions", help="follow the transitions topic")
    transitions.add_argument("action", choices=["tail"])
    args = parser.parse_args(argv)

    _configure_logging(os.environ.get("PINGSTREAM_LOG_LEVEL", "INFO"))
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"pingstream: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("up", "engine", "projector") and config.clickhouse == "off":
        print("pingstream: the projector needs ClickHouse; PINGSTREAM_CLICKHOUSE=off is for edges only", file=sys.stderr)
        return 2
    supervisor.die_with_supervisor()
    _use_uvloop()
    try:
        return _command(args, config)
    except (LogUnavailable, Unavailable, OSError) as exc:
        # An event log that cannot be opened, a port in use, an unwritable data directory, an embedded
        # engine another process holds: one line.
        print(f"pingstream: {exc}", file=sys.stderr)
        return 1


def _configure_logging(spec: str) -> None:
    """``PINGSTREAM_LOG_LEVEL``: a level, then optionally ``,logger=level`` pairs (``WARNING,batches=DEBUG``)."""
    level, *pairs = (part.strip() for part in spec.split(","))
    logging.basicConfig(level=level.upper() or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for pair in filter(None, pairs):
        name, _, value = pair.partition("=")
        logging.getLogger(name.strip()).setLevel(value.strip().upper() or "DEBUG")


def _command(args, config: Config) -> int:
    if args.command == "up" and config.edge_processes > 0:
        return asyncio.run(_supervise(config))
    elif args.command == "ingest" and config.ingest_processes > 1:
        return asyncio.run(_supervise_edges(config))
    elif args.command == "up":
        asyncio.run(_run_services(config, ["up", "ingest", "projector", "monitor", "notify"]))
    elif args.command == "engine":
        asyncio.run(_run_services(config, ["engine", "projector", "monitor", "notify"]))
    elif args.command == "webhooks" and not config.webhooks:
        print("pingstream: set PINGSTREAM_WEBHOOKS=<project id>=<url>[,...]", file=sys.stderr)
        return 2
    elif args.command in ("ingest", "projector", "monitor", "notify", "webhooks"):
        asyncio.run(_run_services(config, [args.command]))
    elif args.command == "channel":
        from . import channels

        return asyncio.run(channels.command(config, args))
    elif args.command == "project":
        problem = project_name_error(args.name)
        if problem is not None:
            print(f"pingstream: {problem}", file=sys.stderr)
            return 2
        asyncio.run(_project_create(config, args.name))
    elif args.command == "sql":
        return _sql(config, args.query, args.format)
    elif args.command == "admin-key":
        return _admin_key(config)
    elif args.command == "transitions":
        asyncio.run(_transitions_tail(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
