"""Memory a load left free in the allocators, given back to the system once the load has ended.

A process's allocators keep the pages of what it freed for the next allocations: the C heap keeps free
pages between its live blocks, chdb's jemalloc and Arrow's pool (``runtime.clickhouse``) keep an arena's
freed pages until more allocations come to that arena. Under load that is what makes allocation cheap;
after it, an idle process would go on holding them (``bench/memory.py``: ``pingstream up`` held 13-14%
more a minute after a minute of 5,000 pings/s than before it; the issue's bound is 10%).

``release_when_idle`` watches a count of the process's work (the edge's pings, the engine's bulk
inserts) and, the first time it stays still for ``IDLE_S`` after it moved, collects Python's young garbage
and lets the allocators go (``release``; by default the C heap's trim). Once per load: an idle process, or one
under steady load, is not disturbed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

IDLE_S = 15.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        return None


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """The C heap's free pages back to the system (glibc's ``malloc_trim``: every arena, every whole free
    page in it); elsewhere nothing."""
    if _TRIM is not None:
        _TRIM(0)


MADV_DONTNEED = 4


def _madvise() -> Callable[[int, int, int], int] | None:
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


_MADVISE = _madvise()


def unmap_unread_library_pages(library: str) -> float:
    """Unmap from this process the pages of ``library`` (a part of its file's path) that its code and constants
    hold as the file has them; the MB that were mapped. Linux only (``/proc/self/smaps``), else 0.

    Resident pages of a mapped file are not only those the process ran: the kernel maps the neighbours of
    each page it faults in, and reads ahead. chdb's library is 530 MB; 172 to 275 MB of it were resident right
    after ``import chdb`` and about 187 MB after a workload, against 88 MB when those pages were unmapped
    first and the same workload brought back what it ran. Only mappings that cannot be written and hold no
    page of their own (no relocation written, nothing anonymous) are touched: a page unmapped there is read
    again from the file, the same bytes, the next time it is used (the page cache keeps it as long as the
    system can). A written page (a relocated constant) would lose what was written: such mappings are left."""
    if _MADVISE is None:
        return 0.0
    try:
        with open("/proc/self/smaps") as smaps:
            lines = smaps.read().splitlines()
    except OSError:
        return 0.0
    ranges: list[tuple[int, int, int]] = []  # start, end, resident kB
    area: tuple[int, int] | None = None
    fields: dict[str, int] = {}

    def close_area() -> None:
        if area is not None and not (fields.get("Private_Dirty", 1) or fields.get("Shared_Dirty", 1)
                                     or fields.get("Anonymous", 1)) and fields.get("Rss", 0):
            ranges.append((*area, fields["Rss"]))

    for line in lines:
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):  # a mapping's first line: range perms offset dev inode path
            close_area()
            parts = rest.split()
            area, fields = None, {}
            if len(parts) >= 5 and "w" not in parts[0] and library in parts[-1]:
                start, end = head.split("-")
                area = (int(start, 16), int(end, 16))
        elif area is not None and head.endswith(":"):
            value = rest.split()
            if value and value[0].isdigit():
                fields[head[:-1]] = int(value[0])
    close_area()
    unmapped = 0
    for start, end, resident_kb in ranges:
        if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            unmapped += resident_kb
    return unmapped / 1024


async def _trim() -> None:
    # On the event loop, once per load: a few milliseconds (7.6 ms for a fragmented 74 MB heap). A thread for
    # it (asyncio.to_thread) would stay in the edge, with its stack and its own heap arena (8 threads became 9).
    trim_heap()


async def release_when_idle(
    activity: Callable[[], int],
    stop: asyncio.Event,
    release: Callable[[], Awaitable[None]] = _trim,
    idle_s: float = IDLE_S,
    name: str = "process",
) -> None:
    """Until ``stop``: each time ``activity()`` (a count that grows with the work) stops moving for
    ``idle_s`` after it moved, collect Python's young garbage, then ``release()``."""
    released = activity()
    while not stop.is_set():
        seen = activity()
        try:
            await asyncio.wait_for(stop.wait(), idle_s)
            return
        except TimeoutError:
            pass
        if activity() == seen != released:
            released = seen
            started = time.perf_counter()
            gc.collect(1)  # the load's garbage cycles; not the oldest generation, which holds every check's state
            await release()
            log.debug("%s idle: memory released in %.1f ms", name, (time.perf_counter() - started) * 1e3)
