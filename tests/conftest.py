"""Shared fixtures. Nothing here mocks Kafka or ClickHouse: tests get the real thing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pingstream.clickhouse import ClickHouse

pytest_plugins = ["tests.kafka_fixture"]


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    """One chdb data path for the whole test process (chdb allows one process per path),
    or the ClickHouse server named by PINGSTREAM_CLICKHOUSE."""
    server = os.environ.get("PINGSTREAM_CLICKHOUSE")
    if server:
        return server
    return f"chdb:///{tmp_path_factory.mktemp('chdb').resolve()}"


@pytest.fixture
async def clickhouse(chdb_dsn):
    """A ClickHouse client on a fresh, randomly named database (dropped afterwards)."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    ch = ClickHouse(chdb_dsn, database)
    await ch.start()
    try:
        yield ch
    finally:
        await ch.run(lambda c: c.command(f"DROP DATABASE IF EXISTS {database}"))
        await ch.close()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


def pytest_terminal_summary(terminalreporter):
    """Say which ClickHouse the tests ran on: the server path is only exercised when one is given."""
    server = os.environ.get("PINGSTREAM_CLICKHOUSE", "")
    if server.startswith("http"):
        terminalreporter.write_line("ClickHouse: tests ran against the server named by PINGSTREAM_CLICKHOUSE")
    else:
        terminalreporter.write_line(
            "ClickHouse: tests ran on embedded chdb only; the http:// server path was NOT exercised "
            "(set PINGSTREAM_CLICKHOUSE=http://user:password@host:8123 to run them against a server)"
        )
