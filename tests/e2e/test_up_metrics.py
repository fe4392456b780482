"""`/metrics` on the port of `pingstream up` covers every edge process, whichever one answers, and the engine
process (the projector's and the monitor's series, the consumer lag)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

PINGS = 120


def _edges(supervisor: int) -> list[int]:
    """The pids of the supervisor's edge processes."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"ingest" in cmdline:
            found.append(int(entry))
    return found


def _metrics_dir(edge: int) -> Path:
    environ = dict(item.split(b"=", 1) for item in Path(f"/proc/{edge}/environ").read_bytes().split(b"\0") if b"=" in item)
    return Path(environ[b"PINGSTREAM_EDGE_METRICS_DIR"].decode())


def _series(exposition: str, sample: str, **labels: str) -> float:
    """The sum of ``sample``'s values whose labels include ``labels``."""
    return sum(s.value for family in text_string_to_metric_families(exposition) for s in family.samples
               if s.name == sample and labels.items() <= s.labels.items())


def _pings_counted(exposition: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(exposition) if family.name == "pingstream_pings"
               for s in family.samples if s.name == "pingstream_pings_total")


async def _own_count(socket: Path) -> float:
    """What one edge counted itself, asked on its socket."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    families = json.loads(await reader.read())
    writer.close()
    return sum(value for name, _, _, samples in families if name == "pingstream_pings"
               for sample, _, value in samples if sample == "pingstream_pings_total")


@pytest.mark.parametrize("data", ["data", "d" * 120], ids=["sockets-in-the-data-directory", "data-path-too-long"])
async def test_metrics_on_the_port_sum_every_edge(system, tmp_path, data):
    """With a data directory too long for a socket's path, the sockets go to a temporary directory."""
    up = system(PINGSTREAM_EDGE_PROCESSES="2", PINGSTREAM_DATA=str(tmp_path / data))
    deadline = time.monotonic() + 60
    while len(edges := _edges(up.proc.pid)) < 2 or len(list(_metrics_dir(edges[0]).glob("*.sock"))) < 3:
        assert time.monotonic() < deadline, up.tail()
        await asyncio.sleep(0.1)
    sockets = sorted(_metrics_dir(edges[0]) / f"{edge}.sock" for edge in edges)
    assert all(socket.exists() for socket in sockets)  # and the third is the engine's
    url = f"{up.url}/ping/{up.keys['ping_key']}/metrics-sum"
    # A connection of its own for every request: the kernel spreads them over both edges.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.get(f"{url}?create=1") as answer:
            assert answer.status == 201
        for _ in range(PINGS):
            async with http.get(url) as answer:
                assert answer.status == 200
        own = [await _own_count(socket) for socket in sockets]
        assert all(n > 0 for n in own), f"one edge took every connection: {own}"
        assert sum(own) >= PINGS
        for _ in range(10):  # whichever edge answers, it answers for both
            async with http.get(f"{up.url}/metrics") as answer:
                assert answer.status == 200
                assert _pings_counted(await answer.text()) == sum(own)
        # ... and for the engine: the projector's rows of these pings, as it inserts them.
        while _series(exposition := await (await http.get(f"{up.url}/metrics")).text(),
                      "pingstream_clickhouse_rows_total", table="pings") < sum(own):
            assert time.monotonic() < deadline + 30, exposition[-3000:]
            await asyncio.sleep(0.2)
        assert 'pingstream_consumer_lag{group="pingstream-projector"' in exposition
    in_data_directory = sockets[0].parent == tmp_path / data / "edges"
    assert in_data_directory == (data == "data")
    assert up.stop() == 0
    assert not list(sockets[0].parent.glob("*.sock"))  # each edge removed its own
    assert sockets[0].parent.exists() == in_data_directory  # a temporary one is removed
