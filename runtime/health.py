"""Is this process alive, is it ready: ``/healthz`` and ``/readyz``, one set per process.

- Alive (``/healthz``): every registered loop turned within its bound. A loop
  that stopped turning (a hung await) makes it 503, and the consumer shell's
  watchdog ends the process for its supervisor to restart.
- Ready (``/readyz``): every registered check is satisfied: the event log is
  reachable, the registry is caught up, each consumer is within its lag bound.
  A process that is alive but not ready is waiting on something outside it
  (a broker outage): take it out of the load balancer, do not restart it.

Both answer ``200`` with ``OK`` / ``ready``, or ``503`` naming what is wrong.
"""

from __future__ import annotations

import time
from typing import Callable

from aiohttp import web


class Loop:
    """One loop's heartbeat: ``beat()`` on every turn."""

    __slots__ = ("name", "stall_s", "at")

    def __init__(self, name: str, stall_s: float) -> None:
        self.name = name
        self.stall_s = stall_s
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds beyond its bound since it last turned (0: turning)."""
        late = (now or time.monotonic()) - self.at
        return late if late > self.stall_s else 0.0


_loops: dict[str, Loop] = {}
_checks: dict[str, Callable[[], str | None]] = {}


def loop(name: str, stall_s: float) -> Loop:
    _loops[name] = found = Loop(name, stall_s)
    return found


def check(name: str, reason: Callable[[], str | None]) -> None:
    """``reason()`` says why the process is not ready (None: ready as far as ``name`` goes)."""
    _checks[name] = reason


def forget(*names: str) -> None:
    for name in names:
        _loops.pop(name, None)
        _checks.pop(name, None)


def stalled() -> list[str]:
    now = time.monotonic()
    return [f"{lp.name}: no turn for {now - lp.at:.0f} s" for lp in list(_loops.values()) if lp.stalled_for(now)]


def not_ready() -> list[str]:
    reasons = []
    for name, reason in list(_checks.items()):
        try:
            why = reason()
        except Exception as exc:  # a check that fails says so rather than taking /readyz down
            why = f"check failed: {exc.__class__.__name__}"
        if why:
            reasons.append(f"{name}: {why}")
    return reasons


async def healthz(request: web.Request) -> web.Response:
    problems = stalled()
    return web.Response(status=503 if problems else 200, text="\n".join(problems) or "OK")


async def readyz(request: web.Request) -> web.Response:
    problems = stalled() + not_ready()
    return web.Response(status=503 if problems else 200, text="\n".join(problems) or "ready")
