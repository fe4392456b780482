"""What each process of a supervised `pingstream up` maps: chdb's library (~200 MB resident) in the
engine only, pyarrow's (only the writer encodes Arrow) in no reader. The figures themselves are
bench/memory.py's, not a timed test."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.memory import descendants, role
from bench.procs import Service, free_port


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
