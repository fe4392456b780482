"""The memory settings of a supervised `pingstream up` in force: chdb's library (~200 MB resident) mapped
by the engine only, pyarrow's (only the writer encodes Arrow) by no reader, and the embedded engine's
MergeTree defaults read back through its SQL endpoint. The figures themselves are bench/memory.py's,
not a timed test."""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench.memory import descendants, role
from bench.procs import Service, free_port
from runtime.clickhouse import EMBEDDED_CONFIG


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    data = tmp_path_factory.mktemp("memory") / "data"
    env = {"PINGSTREAM_DATA": str(data), "PINGSTREAM_KAFKA": "", "PINGSTREAM_EDGE_PROCESSES": "2",
           "PINGSTREAM_SQL_PORT": str(free_port())}
    service = Service("up", env, free_port())
    try:
        service.start()
        service.wait_output(r"^up: \d+ edge processes")  # every child started
        yield service
    finally:
        service.stop()


def _sql(up, query: str) -> str:
    auth = base64.b64encode(f"pingstream:{up.keys['admin_key']}".encode()).decode()
    request = urllib.request.Request(up.keys["sql_url"] + "/?" + urllib.parse.urlencode({"query": query}),
                                     headers={"Authorization": "Basic " + auth})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read().decode().strip()


def _processes(up) -> dict[str, list[int]]:
    by_role: dict[str, list[int]] = {}
    for pid in descendants(up.proc.pid):
        by_role.setdefault(role(pid), []).append(pid)
    return by_role


def _maps(pid: int, name: str) -> bool:
    return any(name in Path(line.rsplit(None, 1)[-1]).name for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
               if "/" in line)


def test_only_the_engine_maps_chdb_and_no_reader_maps_arrow(up):
    processes = _processes(up)
    assert len(processes["supervisor"]) == 1 and len(processes["engine"]) == 1 and len(processes["edge"]) == 2
    assert _maps(processes["engine"][0], "chdb")
    for pid in processes["supervisor"] + processes["edge"]:
        assert not _maps(pid, "chdb"), f"{role(pid)} {pid} maps chdb's library"
        assert not _maps(pid, "libarrow"), f"{role(pid)} {pid} maps pyarrow's library, which only the writer uses"


def test_the_embedded_engine_removes_outdated_parts_on_one_thread(up):
    threshold = "SELECT value, changed FROM system.merge_tree_settings WHERE name = 'concurrent_part_removal_threshold'"
    assert "<concurrent_part_removal_threshold>1000000000<" in EMBEDDED_CONFIG
    assert _sql(up, threshold) == "1000000000\t1"
