"""The SQL endpoint read by ClickHouse's own JDBC driver, the one DBeaver and other JDBC tools load.

The real driver (tests/e2e/jdbc/pom.xml), fetched from Maven Central into the project's cache as the Kafka
broker's jars are, runs tests/e2e/jdbc/Probe.java in a JVM against a `pingstream up`. The driver asks for
answers in ClickHouse's compressed blocks (``compress=1``) unless told otherwise, and reads them with their
checksums, so this is also the check of runtime/chcompress.py against a reader that is not ours.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from runtime import kafkabroker

JDBC = Path(__file__).parent / "jdbc"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    """The classpath of the driver and the compiled probe."""
    version = re.search(r"<clickhouse-jdbc\.version>([^<]+)<", (JDBC / "pom.xml").read_text()).group(1)
    libs = kafkabroker.fetch_jars(JDBC / "pom.xml", kafkabroker.cache_dir() / "clickhouse-jdbc" / version / "libs",
                                  "clickhouse-jdbc-*.jar", f"ClickHouse JDBC driver {version}")
    classes = tmp_path_factory.mktemp("jdbc-probe")
    subprocess.run(["javac", "-d", str(classes), str(JDBC / "Probe.java")], check=True, timeout=120)
    return f"{libs}{os.sep}*{os.pathsep}{classes}"


def test_clickhouse_s_jdbc_driver_reads_the_endpoint(probe, sql_endpoint):
    up, host, port, check_id = sql_endpoint
    out = subprocess.run(["java", "-cp", probe, "Probe", f"jdbc:clickhouse://{host}:{port}/pingstream",
                          up.keys["admin_key"], check_id], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert out.stdout.splitlines() == [
        "product ClickHouse",
        "row 1 x 2026-12-02T10:00:00Z",
        "pings 1",
        f"numbers 500000 {2 * sum(range(500_000))}",
        "table pings",
        "error 60",  # UNKNOWN_TABLE, from the exception's code
    ]
