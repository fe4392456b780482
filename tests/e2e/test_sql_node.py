"""The SQL endpoint read by ClickHouse's Node.js client (@clickhouse/client), pinned by tests/e2e/nodeclient's
package-lock.json and installed with npm: JSON formats, bound parameters, errors, and gzip both ways (the
client's request bodies arrive gzip-compressed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODECLIENT = Path(__file__).parent / "nodeclient"


@pytest.fixture(scope="module")
def nodeclient(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("nodeclient")
    for name in ("package.json", "package-lock.json", "probe.mjs"):
        shutil.copy(NODECLIENT / name, workdir / name)
    subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=workdir, check=True, timeout=600)
    return workdir


def test_clickhouse_s_node_client_reads_the_endpoint(nodeclient, sql_endpoint):
    up, host, port, _ = sql_endpoint
    out = subprocess.run(["node", "probe.mjs", f"http://{host}:{port}", up.keys["admin_key"]], cwd=nodeclient,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    expected = "ok 99990 15 1 true error=60"
    assert out.stdout.splitlines() == [f"{name} {expected}" for name in ("none", "gzip", "gzip both ways")], out.stdout
