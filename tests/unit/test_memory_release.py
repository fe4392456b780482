"""runtime.memory: the allocators' free pages go back once per load, when the work stops moving; chdb's
library pages the engine did not run are unmapped."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import memory

ROOT = Path(__file__).resolve().parents[2]


def test_release_once_per_load_when_the_work_stops():
    async def scenario() -> list[int]:
        work = [0]
        released: list[int] = []

        async def release() -> None:
            released.append(work[0])

        stop = asyncio.Event()
        task = asyncio.create_task(memory.release_when_idle(lambda: work[0], stop, release, idle_s=0.05))
        await asyncio.sleep(0.2)  # idle from the start: no load, nothing to give back
        assert released == []
        for _ in range(6):  # a load: the count moves in every window
            work[0] += 10
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)  # it stopped: released once, not again while it stays still
        assert released == [60]
        work[0] += 1  # a second, short load
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 1)
        return released

    assert asyncio.run(scenario()) == [60, 61]


def test_trim_heap_runs():
    memory.trim_heap()  # glibc: malloc_trim; elsewhere nothing. Either way no error.


_LIBRARY_USE = r"""
import json, sys
from runtime import memory

def resident(part):
    kb, area = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            area = part in line
        elif area and head == "Rss:":
            kb += int(line.split()[1])
    return kb / 1024

import chdb
loaded = resident("_chdb")
unmapped = memory.unmap_unread_library_pages("_chdb")
after = resident("_chdb")
session = chdb.connect(sys.argv[1])
session.query("CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
session.query("INSERT INTO t SELECT number, toString(number) FROM numbers(100000)")
answer = session.query("SELECT count(), sum(a), uniqExact(s) FROM t", "CSV").bytes().decode().strip()
print(json.dumps({"loaded": loaded, "unmapped": unmapped, "after": after, "used": resident("_chdb"),
                  "answer": answer, "again": memory.unmap_unread_library_pages("_chdb")}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise: Linux")
def test_chdb_pages_not_run_are_unmapped_and_the_engine_runs_on(tmp_path):
    """In a process of its own: the library's pages as the file has them go, the written ones stay (the
    process would crash without them), and the engine answers right, bringing back what it runs."""
    out = subprocess.run([sys.executable, "-c", _LIBRARY_USE, str(tmp_path / "engine")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["answer"] == "100000,4999950000,100000"
    assert figures["unmapped"] > 10 and figures["after"] < figures["loaded"] - 10, figures
    assert figures["again"] > 0, figures
