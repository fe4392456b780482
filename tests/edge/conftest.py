"""An edge on a real embedded log, served over real HTTP on loopback (aiohttp's test server)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from ingest.app import create_app
from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import Registry, create_project, save_check
from schemas.events import TOPIC_PINGS, CheckConfig, PingEvent, decode, utcnow, uuid7
from tests.edge.server import EdgeTestServer


@dataclasses.dataclass
class Edge:
    client: object
    log: SqliteEventLog
    registry: Registry
    project: object
    config: Config
    read_model: ClickHouse | None = None  # what the edge's app reads state from (None: PINGSTREAM_CLICKHOUSE=off)

    async def add_check(self, **fields) -> CheckConfig:
        fields.setdefault("id", str(uuid7()))
        check = CheckConfig(project_id=fields.pop("project_id", self.project.id), created=utcnow(), **fields)
        await save_check(self.log, self.registry, check)
        return check

    async def events(self, topic: str = TOPIC_PINGS, types=(PingEvent,), log=None) -> list:
        """The events of ``types`` in ``topic`` of the edge's log (or of another ``log``)."""
        consumer = (log or self.log).consumer([topic], group=None)
        await consumer.start()
        out = []
        try:
            while records := await consumer.getmany(timeout_ms=0):
                out.extend(e for r in records if isinstance(e := decode(r.value), types))
        finally:
            await consumer.close()
        return out


async def _edge(tmp_path, aiohttp_client, clickhouse, env: dict | None = None):
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path), **(env or {})}, ping_body_limit=100)
    log = SqliteEventLog(config.sqlite_path, default_partitions=2)
    await log.start()
    registry = Registry()
    project = await create_project(log, "test", registry)
    app = create_app(config, log, registry, clickhouse=clickhouse)
    client = await aiohttp_client(EdgeTestServer(app))
    return Edge(client, log, registry, project, config, clickhouse)


@pytest.fixture(scope="session")
def empty_read_model(chdb_dsn):
    """A real read model nothing is projected into, shared by the session's edges (each test's checks
    are new uuids, so none of them has state): reads answer as for checks no ping reached yet."""
    ch = ClickHouse(chdb_dsn, f"test_empty_{uuid.uuid4().hex[:12]}")
    asyncio.run(ch.start())
    yield ch

    async def drop_and_close():
        await ch.run(lambda c: c.command(f"DROP DATABASE IF EXISTS {ch.database}"))
        await ch.close()

    asyncio.run(drop_and_close())


@pytest.fixture
async def edge(tmp_path, aiohttp_client, empty_read_model):
    """An edge on a real log, reading a real read model that holds nothing for its checks (the
    projector is not running: tests that need projected state use ``projected``)."""
    edge = await _edge(tmp_path, aiohttp_client, empty_read_model)
    try:
        yield edge
    finally:
        await edge.client.close()
        await edge.log.close()


@pytest.fixture
async def edge_without_read_model(tmp_path, aiohttp_client):
    """An edge run with ``PINGSTREAM_CLICKHOUSE=off``: it takes pings and writes, and reads of state answer 503."""
    edge = await _edge(tmp_path, aiohttp_client, None, {"PINGSTREAM_CLICKHOUSE": "off"})
    try:
        yield edge
    finally:
        await edge.client.close()
        await edge.log.close()


@pytest.fixture
async def projected(tmp_path, aiohttp_client, clickhouse):
    """An edge reading state from ClickHouse, where a test writes the projector's rows itself."""
    config = Config.from_env({"PINGSTREAM_DATA": str(tmp_path)})
    log = SqliteEventLog(config.sqlite_path, default_partitions=2)
    await log.start()
    registry = Registry()
    project = await create_project(log, "test", registry)
    client = await aiohttp_client(EdgeTestServer(create_app(config, log, registry, clickhouse=clickhouse)))
    edge = Edge(client, log, registry, project, config, clickhouse)
    edge.ch = clickhouse
    try:
        yield edge
    finally:
        await client.close()
        await log.close()
