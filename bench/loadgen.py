"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, loopback only).

Two shapes:
- ``closed_loop``: C connections each send the next request when the last is
  answered, for a fixed time: the highest throughput the server sustains.
- ``open_loop``: requests leave at a fixed rate whatever the answers do, so a
  slow server shows up as latency instead of hiding as a lower send rate.
Both are bounded in time and count and talk only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


def request_bytes(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pingstream-bench\r\n\r\n".encode()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summary(latencies: list[float], statuses: dict, elapsed_s: float) -> dict:
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed_s if elapsed_s else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": dict(statuses),
    }


async def closed_loop(port: int, path: str, connections: int, duration_s: float, max_requests: int = 2_000_000) -> dict:
    req = request_bytes(path)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                t0 = time.perf_counter()
                status = await _one(reader, writer, req)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return summary(latencies, statuses, time.perf_counter() - start)


def post_bytes(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pingstream-bench\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def open_loop(
    port: int, path: str | Callable[[int], bytes], rate_per_s: float, duration_s: float, connections: int = 64
) -> dict:
    """Send at ``rate_per_s`` over a pool of connections; latency is measured from the
    scheduled send time, so queueing in the client or server counts against the server.

    ``path`` is one path for every request, or a function giving request ``i``'s bytes;
    request ``i`` is scheduled at ``wall_start + i / rate_per_s`` (both returned)."""
    make = path if callable(path) else (lambda _i, req=request_bytes(path): req)
    total = int(rate_per_s * duration_s)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def fire(i: int, scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            status = await _one(reader, writer, make(i))
        finally:
            pool.put_nowait((reader, writer))
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1

    wall_start, start = time.time(), time.perf_counter()
    tasks = []
    for i in range(total):
        scheduled = start + i / rate_per_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return {**summary(latencies, statuses, elapsed), "wall_start": wall_start, "sent": total}
