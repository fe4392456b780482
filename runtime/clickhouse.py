"""The ClickHouse client factory: embedded chdb or a server, one code path.

clickhouse-connect's client is synchronous (and chdb allows one process per
data path), so async callers go through ``ClickHouse.run`` which executes on a
single dedicated thread, keeping the event loop free.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable

import clickhouse_connect

from schemas import ddl
from schemas.events import as_utc


def connect(dsn: str, database: str):
    """A client bound to ``database`` (created if missing), with the DDL applied."""
    client = clickhouse_connect.get_client(dsn=dsn)
    ddl.migrate(client, database)
    client.database = database
    return client


class ClickHouse:
    """A client plus the one thread that may use it."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn = dsn
        self.database = database
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        self.client = None

    async def start(self) -> None:
        self.client = await self.run_raw(connect, self.dsn, self.database)

    async def run_raw(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(client, *args)`` on the ClickHouse thread."""
        return await self.run_raw(fn, self.client, *args)

    async def rows(self, sql: str, parameters: dict | None = None, column_formats: dict | None = None) -> list[dict]:
        """A parameterised query's rows as dicts by column name; datetimes aware, in UTC."""

        def run(client) -> list[dict]:
            result = client.query(sql, parameters=parameters or {}, column_formats=column_formats or {})
            return [{k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
                    for row in result.named_results()]

        return await self.run(run)

    async def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Rows as tuples, for ad-hoc queries (the CLI, tests, benchmarks)."""
        return await self.run(lambda c: c.query(sql, parameters=parameters or {}).result_rows)

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await self.run_raw(client.close)
        self._executor.shutdown(wait=True)
