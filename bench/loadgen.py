"""A small HTTP/1.1 load generator on raw asyncio (keep-alive, loopback only).

Two shapes:
- ``closed_loop``: C connections each send the next request when the last is
  answered, for a fixed time: the highest throughput the server sustains.
- ``open_loop``: requests leave at a fixed rate whatever the answers do (a
  new connection when all are waiting), so a slow server shows up as latency
  instead of hiding as a lower send rate. Callbacks on protocols, no task per
  request: the generator shares the cores with what it measures.
Both are bounded in time and count and talk only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
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


class _Connection(asyncio.Protocol):
    """One keep-alive connection of ``open_loop``: at most one request outstanding, answers parsed
    in place (status line and Content-Length), no task or stream per request."""

    def __init__(self, load: "_OpenLoop") -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.scheduled: float | None = None  # the outstanding request's scheduled send time

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.scheduled is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            status = int(self.buffer[9:12])
            self.buffer = self.buffer[end + 4 + length:]
            scheduled, self.scheduled = self.scheduled, None
            self.load.answered(self, status, scheduled)

    def connection_lost(self, exc) -> None:
        self.load.lost(self)


class _OpenLoop:
    """Requests handed to idle connections as they fall due; none idle: a new connection (a fleet
    is many clients), up to ``max_connections``, beyond which requests wait in order."""

    def __init__(self, port: int, make: Callable[[int], bytes], total: int, max_connections: int) -> None:
        self.port, self.make, self.total, self.max_connections = port, make, total, max_connections
        self.idle: list[_Connection] = []
        self.waiting: collections.deque = collections.deque()  # (i, scheduled) with no connection yet
        self.open = 0  # connections open or opening
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.finished = asyncio.get_running_loop().create_future()

    async def connect(self) -> None:
        """One more connection (counted in ``open`` by the caller from the moment it is asked for)."""
        try:
            _, conn = await asyncio.get_running_loop().create_connection(lambda: _Connection(self), "127.0.0.1",
                                                                         self.port)
        except OSError:
            self.open -= 1
            raise
        self.give(conn)

    def _connect_soon(self) -> None:
        self.open += 1
        task = asyncio.ensure_future(self.connect())
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or self._failed_connect(t.exception()))

    def _failed_connect(self, exc: BaseException) -> None:
        if self.waiting:  # the request that asked for this connection fails
            self._count(0, self.waiting.popleft()[1])

    def fire(self, i: int, scheduled: float) -> None:
        if self.idle:
            self._send(self.idle.pop(), i, scheduled)
            return
        self.waiting.append((i, scheduled))
        if self.open < self.max_connections:
            self._connect_soon()

    def _send(self, conn: _Connection, i: int, scheduled: float) -> None:
        conn.scheduled = scheduled
        conn.transport.write(self.make(i))

    def give(self, conn: _Connection) -> None:
        if self.waiting:
            self._send(conn, *self.waiting.popleft())
        else:
            self.idle.append(conn)

    def answered(self, conn: _Connection, status: int, scheduled: float) -> None:
        self._count(status, scheduled)
        self.give(conn)

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.scheduled is not None:  # its request is answered by nothing: status 0
            self._count(0, conn.scheduled)
            conn.scheduled = None
        if self.waiting and self.open < self.max_connections:
            self._connect_soon()

    def _count(self, status: int, scheduled: float) -> None:
        self.latencies.append(time.perf_counter() - scheduled)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if len(self.latencies) == self.total and not self.finished.done():
            self.finished.set_result(None)


_MIN_SLEEP_S = 0.001


async def open_loop(
    port: int, path: str | Callable[[int], bytes], rate_per_s: float, duration_s: float, connections: int = 64,
    max_connections: int = 4096,
) -> dict:
    """Send at ``rate_per_s`` whatever the answers do; latency is measured from the scheduled send
    time, so queueing in the client or server counts against the server. Requests leave in groups,
    every timer tick (1 ms) at most: one may leave up to a tick after its time, and that counts too
    (the open loop's p99 holds up to ~1 ms of the generator's own).

    ``connections`` are opened first; when every one waits for an answer as a request falls due, a
    new one is opened (up to ``max_connections``): requests leave on schedule however slow the
    answers, as from a fleet of many clients, instead of queueing in the generator behind a fixed pool.
    ``path`` is one path for every request, or a function giving request ``i``'s bytes;
    request ``i`` is scheduled at ``wall_start + i / rate_per_s`` (both returned). Status 0 counts
    requests whose connection closed before the answer."""
    make = path if callable(path) else (lambda _i, req=request_bytes(path): req)
    total = int(rate_per_s * duration_s)
    load = _OpenLoop(port, make, total, max(connections, max_connections))
    load.open = connections
    await asyncio.gather(*(load.connect() for _ in range(connections)))
    wall_start, start = time.time(), time.perf_counter()
    i = 0
    while i < total:
        # Every request due by now leaves now (one timer per turn of the loop, not per request).
        due = min(total, int((time.perf_counter() - start) * rate_per_s) + 1)
        while i < due:
            load.fire(i, start + i / rate_per_s)
            i += 1
        if i < total:
            # At least a timer tick: the event loop's timers count whole milliseconds, and a shorter sleep
            # comes back at once, so the generator spun a whole core of the machine under test at any rate.
            # A request fired up to a tick late is measured from its scheduled time all the same.
            await asyncio.sleep(max(_MIN_SLEEP_S, start + i / rate_per_s - time.perf_counter()))
    if total:
        await load.finished
    elapsed = time.perf_counter() - start
    for conn in load.idle:
        conn.transport.close()
    return {**summary(load.latencies, load.statuses, elapsed), "wall_start": wall_start, "sent": total,
            "connections": load.open}
