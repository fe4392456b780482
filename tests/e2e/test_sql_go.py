"""The SQL endpoint read by clickhouse-go over HTTP, the client Grafana's ClickHouse data source is built on.

tests/e2e/goclient (clickhouse-go v2, its modules pinned by go.sum) is built with the Go toolchain and run
against a `pingstream up`, once per compression setting (none, LZ4 and ZSTD blocks, gzip, and gzip, deflate and br
with ``enable_http_compression``, the answers then compressed over HTTP), and a query sent in compressed blocks as
ch-go (its protocol library) makes them, LZ4, ZSTD or none, with ``decompress=1``. The client asks
for Native laid out for its protocol revision (runtime/native.py), sends ``max_execution_time`` with every
query that has a deadline, and ``network_compression_method`` with compressed blocks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

GOCLIENT = Path(__file__).parent / "goclient"


@pytest.fixture(scope="module")
def goclient(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("goclient") / "goclient"
    subprocess.run(["go", "build", "-mod=readonly", "-o", str(binary), "."], cwd=GOCLIENT, check=True, timeout=600)
    return binary


def test_clickhouse_go_reads_the_endpoint_with_every_compression(goclient, sql_endpoint):
    up, host, port, _ = sql_endpoint
    out = subprocess.run([str(goclient), f"{host}:{port}", up.keys["admin_key"], up.keys["sql_native"]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    expected = f"ok 300000 {sum(range(300_000))} 1 200000 error=true"
    names = ("none", "lz4", "zstd", "gzip", "gzip-http", "deflate-http", "br-http")
    bodies = [f'body {method} 200 "42\\n"' for method in ("LZ4", "ZSTD", "NONE")]  # ch-go's blocks, decompress=1
    natives = [f"native-{name} {expected}" for name in ("none", "lz4", "zstd")]
    assert out.stdout.splitlines() == [f"{name} {expected}" for name in names] + natives + bodies, out.stdout


def test_clickhouse_go_reads_the_endpoint_over_tls(goclient, sql_endpoint_with, certificate):
    """Grafana's client over HTTPS and the native protocol over TLS (PINGSTREAM_SQL_TLS_CERT / _KEY), verifying the
    certificate against the test's authority; with the machine's authorities instead, the handshake fails."""
    ca, cert, key = certificate
    up, host, port, _ = sql_endpoint_with(PINGSTREAM_SQL_TLS_CERT=cert, PINGSTREAM_SQL_TLS_KEY=key)
    https = up.keys["sql_https"].removeprefix("https://")
    out = subprocess.run([str(goclient), f"{host}:{port}", up.keys["admin_key"], up.keys["sql_native"], https,
                          up.keys["sql_native_tls"], str(ca)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    lines = out.stdout.splitlines()
    expected = f"ok 300000 {sum(range(300_000))} 1 200000 error=true"
    assert lines[:2] == [f"tls-http {expected}", f"tls-native {expected}"], out.stdout
    assert lines[2].startswith("tls-untrusted ") and "certificate" in lines[2] and "ok" not in lines[2].split()[1:2]
